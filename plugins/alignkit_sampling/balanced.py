"""Class-balanced, deterministic, resumable sampling to an ADM-format sample batch:
``sample_class_balanced(policy, tokenizer, range(1000), 50, out_dir="samples/cca")``.

**Seeds.** Shard (c, j), images ``j·B … j·B + B − 1`` of class c (B = ``batch_size``), is one batch with
its own ``torch.Generator`` seeded from ``numpy.random.SeedSequence((seed, c, j))``: an image depends on
the model, the settings, its class and position only, not on the other shards (resuming is exact). The
batch size and the device type are part of the determinism (kernels sum in a shape-dependent order).

**Resuming.** Shards are written atomically to ``out_dir/shards/``; a rerun skips those present. The
settings that decide the images (batch size, images per class, seed, guidance, options, output size,
precision, device type, the model's identity) are kept in ``shards/settings.json``, and a rerun with
other settings is refused rather than mixing two distributions. The classes requested and the number
of processes are not among them.

**Processes.** Several processes (``processes.Ranks``) share the missing shards round-robin; since a
shard's images depend on its own seed only, the ``.npz`` is the same bit for bit on one process or
many (on one device type). Rank 0 assembles the output once every shard is written.

**Output.** ``samples.npz`` (``arr_0`` uint8 ``(N, H, W, 3)`` in class order, by the backbone's
conversion; ``labels``, ``tokens``), ``grid.png`` (a row per class), ``sampling.json`` (every setting,
the counts, images/s).
"""

from __future__ import annotations

import json
import math
import os
import time
import zipfile
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from alignkit.errors import AlignkitError
from alignkit.files import write_json, write_npz
from alignkit.interfaces import PolicyModel, SamplingOptions, Tokenizer
from alignkit_sampling.images import UINT8, grid_classes, to_uint8_nhwc, write_grid
from alignkit_sampling.numerics import check_precision, numerics
from alignkit_sampling.processes import Ranks
from alignkit.sample.npz import write_samples
from alignkit.sample.options import sampling_options
from alignkit.sample.tokens import seeded_generator

SHARD_DIR = "shards"
SETTINGS_FILE = "settings.json"
SHARD_FORMAT = 1
"""Bumped when the same settings would give other shard contents, so that old shards are not reused."""


@dataclass(frozen=True)
class Shard:
    """Images ``chunk · batch_size …`` (``count`` of them) of class ``label``."""

    label: int
    chunk: int
    count: int

    @property
    def file(self) -> str:
        return f"class{self.label:06d}_chunk{self.chunk:05d}.npz"


def plan_shards(classes: Iterable[int], num_per_class: int, batch_size: int) -> list[Shard]:
    """Every shard of ``classes`` in class order, then chunk order."""
    return [Shard(label, chunk, min(batch_size, num_per_class - chunk * batch_size))
            for label in classes for chunk in range(math.ceil(num_per_class / batch_size))]


def _sample_shard(policy: PolicyModel, tokenizer: Tokenizer, shard: Shard, seed: int, guidance: float,
                  options: SamplingOptions, image_size: int | None,
                  precision: str) -> tuple[np.ndarray, np.ndarray]:
    """One shard's uint8 ``images_NHWC`` and int64 ``tokens_NL``, from its own generator."""
    device = next(policy.parameters()).device
    generator = seeded_generator(seed, shard.label, shard.chunk, device=device)
    labels_B = torch.full((shard.count,), shard.label, dtype=torch.int64, device=device)
    with torch.no_grad():
        with numerics(precision, device):
            tokens_BL, images_B3HW = policy.generate_images(labels_B, tokenizer, guidance=guidance,
                                                            generator=generator, **options.model_dump())
        return (to_uint8_nhwc(images_B3HW, image_size, policy.uint8_conversion),
                tokens_BL.to("cpu", torch.int64).numpy())


def _check_settings(shard_dir: Path, settings: dict[str, Any]) -> bool:
    """Whether ``shard_dir`` already records ``settings``; an ``AlignkitError`` when it holds other ones."""
    path = shard_dir / SETTINGS_FILE
    if not path.exists():
        if shard_dir.is_dir() and any(shard_dir.glob("*.npz")):
            raise AlignkitError(f"{shard_dir} holds shards but no {SETTINGS_FILE}, so their settings are unknown; "
                                "delete the folder or use another output folder")
        return False
    try:
        stored = {"precision": "fp32", **json.loads(path.read_text())}  # folders from before --precision: fp32
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AlignkitError(f"{path}: unreadable ({exc}); delete {shard_dir} or use another output folder") from None
    changed = [f"{key} {stored.get(key)!r} -> {settings.get(key)!r}" for key in sorted(set(stored) | set(settings))
               if stored.get(key) != settings.get(key)]
    if changed:
        raise AlignkitError(f"{shard_dir} holds shards sampled with other settings ({'; '.join(changed)}); resume "
                            "with the same settings, or use another output folder (or delete that one)")
    return True


def format_classes(classes: list[int]) -> str:
    """Sorted classes as ranges, ``[0, 1, 2, 5]`` -> ``'0-2,5'`` (the ``--classes`` syntax)."""
    runs: list[list[int]] = []
    for c in classes:
        if runs and c == runs[-1][1] + 1:
            runs[-1][1] = c
        else:
            runs.append([c, c])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def _progress(enabled: bool) -> Progress:
    return Progress(TextColumn("sampling"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("images, {task.fields[speed]} images/s"), TimeElapsedColumn(), TimeRemainingColumn(),
                    console=Console(stderr=True), disable=not enabled)


def _check_request(policy: PolicyModel, tokenizer: Tokenizer, classes: list[int], num_per_class: int,
                   batch_size: int, seed: int, guidance: float, image_size: int | None, precision: str) -> None:
    """An ``AlignkitError`` for the first argument that cannot work."""
    check_precision(precision)
    if not classes:
        raise AlignkitError("no classes to sample")
    if classes[0] < 0 or classes[-1] >= policy.num_classes:
        raise AlignkitError(f"classes must lie in [0, {policy.num_classes}) for this model, got "
                            f"{classes[0]}…{classes[-1]}")
    for name, value in (("num_per_class", num_per_class), ("batch_size", batch_size)):
        if value < 1:
            raise AlignkitError(f"{name} must be positive, got {value}")
    if seed < 0:
        raise AlignkitError(f"seed must be 0 or positive, got {seed}")
    if not math.isfinite(guidance):
        raise AlignkitError(f"guidance must be a finite number, got {guidance}")
    if image_size is not None and image_size < 1:
        raise AlignkitError(f"image_size must be positive, got {image_size}")
    if tokenizer.seq_len != policy.seq_len:
        raise AlignkitError(f"the backbone samples {policy.seq_len} tokens per image but the tokenizer decodes "
                            f"{tokenizer.seq_len}: they do not belong together")


def sample_class_balanced(policy: PolicyModel, tokenizer: Tokenizer, classes: Iterable[int], num_per_class: int, *,
                          out_dir: str | os.PathLike, batch_size: int = 25, seed: int = 0, guidance: float = 0.0,
                          options: Mapping[str, Any] | SamplingOptions | None = None, image_size: int | None = None,
                          identity: dict[str, Any] | None = None, provenance: dict[str, Any] | None = None,
                          precision: str = "fp32", ranks: Ranks | None = None, progress: bool = True) -> Path:
    """Sample ``num_per_class`` images of each class into ``out_dir`` (see the module docstring);
    returns the path of ``samples.npz`` (which rank 0 writes).

    - ``guidance``: s of the paper's Eq. 2 (0 = guidance-free); ``options``: the backbone's sampling
      options (``PolicyModel.sampling_options``: ``top_k``, ``cfg_interval``, ``more_smooth`` …); what
      is not set keeps the backbone's default, and only what is set is recorded.
    - ``image_size``: resize the decoded images (bicubic) before the uint8 conversion.
    - ``identity``: what the weights are (e.g. checkpoint checksums); part of the resume check.
      ``provenance`` (e.g. file paths) is only recorded in ``sampling.json``.
    - ``precision``: ``fp32``, ``bf16`` or ``tf32`` (``numerics``).
    - ``ranks``: this process among several that sample together (started here after the checks,
      stopped by the caller); default: one process. Only rank 0 shows progress, counting every
      process's images.

    The policy samples on its own device; generators live there too.
    """
    ranks = ranks or Ranks()
    classes = sorted(set(int(c) for c in classes))
    _check_request(policy, tokenizer, classes, num_per_class, batch_size, seed, guidance, image_size, precision)
    chosen = sampling_options(policy, options)
    settings = json.loads(json.dumps({
        "format": SHARD_FORMAT, "num_per_class": num_per_class, "batch_size": batch_size, "seed": seed,
        "guidance": guidance, "options": chosen.model_dump(exclude_unset=True), "image_size": image_size,
        "precision": precision, "device_type": next(policy.parameters()).device.type,
        "model": {"policy": type(policy).__name__, **(identity or {})}}, default=str))
    if policy.uint8_conversion != "round":  # recorded only when not the first one, so older shards stay usable
        settings["uint8"] = policy.uint8_conversion

    out_dir = Path(out_dir)
    shard_dir = out_dir / SHARD_DIR
    recorded = _check_settings(shard_dir, settings)
    shards = plan_shards(classes, num_per_class, batch_size)
    pending = [s for s in shards if not (shard_dir / s.file).is_file()]
    total = sum(s.count for s in shards)
    done_before = total - sum(s.count for s in pending)
    ranks.start()
    mine = pending[ranks.rank::ranks.world_size]
    generated, seconds, began = 0, 0.0, time.perf_counter()
    with _progress(progress and ranks.is_main) as bar:
        task = bar.add_task("sampling", total=total, completed=done_before, speed="…")
        for round_ in range(math.ceil(len(pending) / ranks.world_size)):
            count = 0
            if round_ < len(mine):
                shard = mine[round_]
                images_NHWC, tokens_NL = _sample_shard(policy, tokenizer, shard, seed, guidance, chosen, image_size,
                                                       precision)
                if not recorded:  # only once a batch went through, so a rejected option leaves no trace
                    write_json(shard_dir / SETTINGS_FILE, settings)
                    recorded = True
                write_npz(shard_dir / shard.file, images=images_NHWC, tokens=tokens_NL,
                          labels=np.full(shard.count, shard.label, np.int64))
                count = shard.count
            # Every process closes every round here, after writing its shard: the last round is the
            # barrier before rank 0 assembles.
            done = ranks.sum(count)
            generated, seconds = generated + done, time.perf_counter() - began
            bar.update(task, advance=done, speed=f"{generated / seconds:.1f}")
    if not ranks.is_main:
        return out_dir / "samples.npz"

    rows = grid_classes(classes)
    samples = _assemble(out_dir, shard_dir, shards, rows)
    summary = {"samples": str(samples), "grid": str(out_dir / "grid.png"), "num_images": total,
               "num_classes": len(classes), "classes": format_classes(classes), "grid_classes": rows, **settings,
               "provenance": provenance or {},
               "seeding": "one torch.Generator per (class, chunk of batch_size images), seeded from "
                          "numpy SeedSequence((seed, class, chunk))",
               "uint8": UINT8[policy.uint8_conversion],
               "world_size": ranks.world_size,
               "generated_images": generated, "resumed_images": done_before, "seconds": round(seconds, 3),
               "images_per_second": round(generated / seconds, 3) if generated else None}
    write_json(out_dir / "sampling.json", summary)
    return samples


def _read_shard(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    try:
        with np.load(path) as data:
            return data["images"], data["tokens"], data["labels"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise AlignkitError(f"{path}: unreadable shard ({exc or type(exc).__name__}); delete it and run again") from None


def _assemble(out_dir: Path, shard_dir: Path, shards: list[Shard], grid_rows: list[int]) -> Path:
    """``samples.npz`` and ``grid.png`` from the shards, in class order. The images go through a
    memory-mapped scratch file, so 50,000 × 256² images do not need 10 GB of memory."""
    n = sum(s.count for s in shards)
    first_images, first_tokens, _ = _read_shard(shard_dir / shards[0].file)
    image_shape, seq_len = first_images.shape[1:], first_tokens.shape[1]
    scratch = out_dir / ".samples-arr_0.npy"
    images_NHWC = np.lib.format.open_memmap(scratch, mode="w+", dtype=np.uint8, shape=(n, *image_shape))
    try:
        tokens_NL, labels_N = np.empty((n, seq_len), np.int64), np.empty(n, np.int64)
        position = 0
        for shard in shards:
            path = shard_dir / shard.file
            images, tokens, labels = _read_shard(path)
            if images.shape != (shard.count, *image_shape) or tokens.shape != (shard.count, seq_len):
                raise AlignkitError(f"{path}: holds {images.shape[0]} images of shape {images.shape[1:]}, expected "
                                    f"{shard.count} of {image_shape}; delete it and run again")
            end = position + shard.count
            images_NHWC[position:end], tokens_NL[position:end], labels_N[position:end] = images, tokens, labels
            position = end
        samples = write_samples(out_dir / "samples.npz", images_NHWC, labels_N, tokens_NL)
        write_grid(images_NHWC, labels_N, grid_rows, out_dir / "grid.png")
    finally:
        del images_NHWC
        scratch.unlink(missing_ok=True)
    return samples
