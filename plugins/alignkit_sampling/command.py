"""``alignkit sample``: class-balanced samples of a model as an ADM-format ``.npz`` and a PNG grid; a
recipe's ``[sample]`` section gives the defaults (the model's official evaluation settings), the
options override them. Interrupted? Run the same command again: finished shards are kept. Several
processes (``--nproc-per-node``, or torchrun) share the shards and write the same file as one.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from alignkit.api import load_policy, load_tokenizer
from alignkit.cli.common import console
from alignkit.engine.build import build_policy, build_tokenizer
from alignkit.errors import AlignkitError
from alignkit.files import file_sha256, write_failure
from alignkit.interfaces import PolicyModel, Tokenizer
from alignkit.plugins import get_plugins
from alignkit.recipe import Recipe, load_recipe
from alignkit.sample.options import recipe_sampling
from alignkit.values import parse_pairs
from alignkit_sampling.balanced import sample_class_balanced
from alignkit_sampling.numerics import PRECISIONS, check_precision
from alignkit_sampling.processes import Ranks, launch


def sample_command(
    ctx: typer.Context,
    source: Annotated[Path | None, typer.Argument(help="training run folder (runs/NAME: recipe.toml + final/model.pt) "
                                                  "or recipe TOML; omit to name the model with --backbone")] = None,
    checkpoint: Annotated[Path | None, typer.Option(help="policy weights (default: the run's final/model.pt, else "
                                                    "the recipe's model.checkpoint)")] = None,
    backbone: Annotated[str | None, typer.Option(help="without a recipe: backbone plugin, e.g. llamagen-L, var-d16")]
    = None,
    config: Annotated[list[str] | None, typer.Option("--config", help="without a recipe: backbone config key=value "
                                                     "(repeatable)")] = None,
    tokenizer: Annotated[str | None, typer.Option(help="tokenizer plugin, e.g. llamagen-vq-16, var-vqvae "
                                                  "(default: the recipe's)")] = None,
    tokenizer_checkpoint: Annotated[Path | None, typer.Option(help="tokenizer weights")] = None,
    tokenizer_config: Annotated[list[str] | None, typer.Option("--tokenizer-config", help="tokenizer config "
                                                               "key=value (repeatable)")] = None,
    num_per_class: Annotated[int, typer.Option(help="images per class (the ImageNet protocol: 50)")] = 50,
    classes: Annotated[str | None, typer.Option(help="classes to sample: '0,1,2', '0-99' or a mix (default: all)")]
    = None,
    guidance: Annotated[float | None, typer.Option(help="s of the CCA paper's Eq. 2; 0 = guidance-free (LlamaGen's "
                                                   "cfg_scale is 1 + s, VAR's cfg is s); default: [sample], else 0")]
    = None,
    schedule: Annotated[str | None, typer.Option(help="guidance schedule: constant or linear "
                                                 "(default: the backbone's; LlamaGen constant, VAR linear)")] = None,
    top_k: Annotated[int | None, typer.Option(help="keep the k most likely tokens (0 = off)")] = None,
    top_p: Annotated[float | None, typer.Option(help="nucleus filter in (0, 1); 0 and 1 are off")] = None,
    temperature: Annotated[float | None, typer.Option(help="divides the logits after guidance")] = None,
    cfg_interval: Annotated[int | None, typer.Option(help="LlamaGen: guide only tokens up to this index "
                                                     "(-1 = all)")] = None,
    more_smooth: Annotated[bool | None, typer.Option("--more-smooth", help="VAR: Gumbel-softmax smoothing of the "
                                                     "latent (VAR's visual-quality setting)")] = None,
    option: Annotated[list[str] | None, typer.Option("--option", help="any sampling option of the backbone, "
                                                     "key=value (repeatable)")] = None,
    lambda_: Annotated[float | None, typer.Option("--lambda", help="test-time λ of a model trained with "
                                                  "objective.lambda_range (larger: more fidelity, less diversity, like stronger guidance)")] = None,
    image_size: Annotated[int | None, typer.Option(help="resize to this size (bicubic) before saving, as LlamaGen's "
                                                   "--image-size-eval (384 -> 256); default: [sample]")] = None,
    batch_size: Annotated[int, typer.Option(help="images per forward pass; part of what the seed means")] = 25,
    seed: Annotated[int, typer.Option(help="global seed; each (class, batch) gets its own generator from it")] = 0,
    out: Annotated[Path | None, typer.Option(help="output folder (default: RUN/samples for a run folder, else "
                                             "./samples)")] = None,
    device: Annotated[str, typer.Option(help="'auto' (CUDA when available), 'cpu', 'cuda', 'cuda:1' …; several "
                                        "processes use cuda:LOCAL_RANK each")] = "auto",
    precision: Annotated[str, typer.Option(help=f"{', '.join(PRECISIONS)}: fp32 as always; bf16 runs the model and "
                                           "decoder under torch.autocast; tf32 allows TensorFloat-32 on GPUs (on the "
                                           "CPU it changes nothing). Part of the settings")] = "fp32",
    nproc_per_node: Annotated[int, typer.Option(min=1, help="processes on this machine, one per GPU; each samples "
                                                "its share of the shards, the .npz is the same as one process's")] = 1,
    nnodes: Annotated[int, typer.Option(min=1, help="machines; run the same command on each")] = 1,
    rdzv_endpoint: Annotated[str | None, typer.Option(help="with --nnodes > 1: HOST:PORT where the machines meet "
                                                      "(the same on every machine)")] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="progress bar on stderr (rank 0's, "
                                           "counting every process)")] = True,
) -> None:
    """Sample N images per class (deterministic per-class seeds, resumable) into samples.npz and grid.png;
    a recipe's [sample] section (the model's official settings) gives the defaults."""
    check_precision(precision)
    out = out or (source / "samples" if source is not None and source.is_dir() else Path("samples"))
    if out.exists() and not out.is_dir():
        raise AlignkitError(f"--out: {out} is a file; give a folder")
    if nproc_per_node > 1 or nnodes > 1:
        if "WORLD_SIZE" in os.environ:
            raise AlignkitError("--nproc-per-node and --nnodes start processes; under torchrun (WORLD_SIZE is set) "
                                "leave them out")
        raise typer.Exit(launch(ctx, nproc_per_node, nnodes, rdzv_endpoint))
    ranks = Ranks.from_env(device)
    models = load_models(source, checkpoint, backbone, config or [], tokenizer, tokenizer_checkpoint,
                         tokenizer_config or [])
    where = ranks.device
    try:
        models.policy.to(where)
        models.tokenizer.to(where)
    except (RuntimeError, AssertionError) as exc:
        raise AlignkitError(f"cannot use device '{where}': {exc}") from None
    flags = {"schedule": schedule, "top_k": top_k, "top_p": top_p, "temperature": temperature,
             "cfg_interval": cfg_interval, "more_smooth": more_smooth, "lambda_": lambda_}
    defaults = {"guidance": 0.0, **models.provenance["recipe_sample_defaults"]}
    guidance = defaults["guidance"] if guidance is None else guidance
    image_size = defaults.get("image_size") if image_size is None else image_size
    options = {**{k: v for k, v in defaults.items() if k not in ("guidance", "image_size")},
               **parse_pairs(option, "--option"), **{k: v for k, v in flags.items() if v is not None}}
    if "lambda_" in options and not models.policy.supports_lambda:
        raise AlignkitError("--lambda needs a model trained with test-time λ (model.lambda_conditioning = true)")
    if "lambda_" not in options and models.policy.supports_lambda:
        raise AlignkitError("this model was trained with test-time λ (model.lambda_conditioning = true): "
                            "choose the trade-off with --lambda")
    try:
        samples = sample_class_balanced(
            models.policy, models.tokenizer, parse_classes(classes, models.policy.num_classes), num_per_class,
            out_dir=out, batch_size=batch_size, seed=seed, guidance=guidance, options=options, image_size=image_size,
            identity=models.identity, provenance=models.provenance, precision=precision, ranks=ranks,
            progress=progress)
    except AlignkitError as exc:
        raise ranks.report(exc) from None
    except (OSError, RuntimeError) as exc:
        failure = write_failure(exc, out)
        if failure is None:
            raise
        raise ranks.report(failure) from None
    finally:
        ranks.stop()
    if not ranks.is_main:
        return
    summary = json.loads((out / "sampling.json").read_text())
    speed = summary["images_per_second"]
    rate = f"{speed:.1f} images/s" if speed is not None else "every shard was already there"
    console.print(f"{summary['num_images']} images ({summary['num_classes']} classes × {summary['num_per_class']}) "
                  f"in {samples}; grid {summary['grid']}; {rate}")


# ------------------------------------------------------------------------------ the model


@dataclass(frozen=True)
class Models:
    """A policy and its tokenizer, with what identifies their weights (checksums, compared on resume)
    and where they came from, the recipe's ``[sample]`` defaults included (recorded only)."""

    policy: PolicyModel
    tokenizer: Tokenizer
    identity: dict[str, Any]
    provenance: dict[str, Any]


def load_models(source: Path | None, checkpoint: Path | None, backbone: str | None, config: list[str],
                tokenizer: str | None, tokenizer_checkpoint: Path | None, tokenizer_config: list[str]) -> Models:
    """The policy and tokenizer from a run folder, a recipe, or the explicit options (in that order)."""
    recipe: Recipe | None = None
    if source is None:
        if backbone is None:
            raise AlignkitError("nothing to sample: give a training run folder, a recipe, or --backbone NAME "
                                "--checkpoint PATH --tokenizer NAME --tokenizer-checkpoint PATH")
        get_plugins().resolve_preset("backbone", backbone)  # an unknown name fails before any loading
    else:
        if backbone is not None or config:
            raise AlignkitError(f"--backbone and --config are for sampling without a recipe; {source} names the "
                                "model already")
        recipe_path, checkpoint = _recipe_and_checkpoint(source, checkpoint)
        recipe = load_recipe(recipe_path, check_paths=False)  # sampling reads no training data
        checkpoint, backbone = checkpoint or recipe.model.checkpoint, recipe.model.backbone
    if checkpoint is None:
        raise AlignkitError(f"{source or '--backbone ' + backbone}: no weights to sample from (model.checkpoint is "
                            "not set); give them with --checkpoint PATH")
    _require_file(checkpoint, "checkpoint")
    tok, tokenizer, tokenizer_checkpoint = _load_tokenizer(tokenizer, tokenizer_checkpoint, tokenizer_config, recipe,
                                                           source)
    if recipe is not None:
        policy = build_policy(recipe, checkpoint=checkpoint, tokenizer=tok)
    else:
        policy = load_policy(backbone, checkpoint, parse_pairs(config, "--config"), tokenizer=tok)
    identity = {"checkpoint_sha256": file_sha256(checkpoint),
                "tokenizer_sha256": file_sha256(tokenizer_checkpoint) if tokenizer_checkpoint else None}
    defaults = recipe_sampling(recipe, policy) if recipe is not None else {}
    provenance = {"source": str(source) if source else None, "backbone": backbone, "checkpoint": str(checkpoint),
                  "tokenizer": tokenizer, "tokenizer_checkpoint": str(tokenizer_checkpoint or ""),
                  "recipe_sample_defaults": defaults}
    return Models(policy, tok, identity, provenance)


def _load_tokenizer(name: str | None, checkpoint: Path | None, config: list[str], recipe: Recipe | None,
                    source: Path | None) -> tuple[Tokenizer, str, Path | None]:
    """The tokenizer the options name, else the recipe's: (tokenizer, its name, its weights file, which a
    tokenizer without weights, ``TokenizerSpec.needs_checkpoint = False``, does not have)."""
    if name is None and (checkpoint is not None or config):
        raise AlignkitError("--tokenizer-checkpoint and --tokenizer-config need --tokenizer NAME")
    if name is not None:
        checkpoint = _require_file(checkpoint, "tokenizer checkpoint")
        return load_tokenizer(name, checkpoint, parse_pairs(config, "--tokenizer-config")), name, checkpoint
    if recipe is None or recipe.tokenizer is None:
        missing = f"{source} has no [tokenizer] section; " if recipe is not None else ""
        raise AlignkitError(f"{missing}sampling decodes tokens into images: give --tokenizer NAME "
                            "--tokenizer-checkpoint PATH")
    if recipe.tokenizer.checkpoint is None and not recipe.tokenizer.component.spec.needs_checkpoint:
        return build_tokenizer(recipe), recipe.tokenizer.name, None
    if recipe.tokenizer.checkpoint is None:
        hint = f"; give the tokenizer's weights with --tokenizer {recipe.tokenizer.name} --tokenizer-checkpoint PATH"
    elif source.is_dir():
        hint = (" (relative paths in a run folder's recipe.toml are read from the run folder: sample the original "
                "recipe with --checkpoint, or give --tokenizer and --tokenizer-checkpoint)")
    else:
        hint = ""
    checkpoint = _require_file(recipe.tokenizer.checkpoint, f"{recipe.path}: tokenizer.checkpoint", hint)
    return build_tokenizer(recipe), recipe.tokenizer.name, checkpoint


def _recipe_and_checkpoint(source: Path, checkpoint: Path | None) -> tuple[Path, Path | None]:
    """A run folder's ``recipe.toml`` and ``final/model.pt`` (unless ``checkpoint`` is given), or a recipe file."""
    if source.is_dir():
        recipe = source / "recipe.toml"
        if not recipe.is_file():
            raise AlignkitError(f"{source} is a folder without recipe.toml, not a training run folder")
        final = source / "final" / "model.pt"
        if checkpoint is None and not final.is_file():
            raise AlignkitError(f"run folder {source} has no final/model.pt (training not finished?); give the "
                                "weights with --checkpoint PATH")
        return recipe, checkpoint or final
    if not source.is_file():
        raise AlignkitError(f"{source}: no such run folder or recipe file")
    return source, checkpoint


def _require_file(path: Path | None, what: str, hint: str = "") -> Path:
    if path is None:
        raise AlignkitError(f"{what} is not set{hint}")
    if not Path(path).is_file():
        raise AlignkitError(f"{what} {path} not found{hint}")
    return Path(path)


# ------------------------------------------------------------------------------ parsing


def parse_classes(text: str | None, num_classes: int) -> list[int]:
    """``None`` -> every class; ``'0,3,5'``, ``'0-99'`` (inclusive) or a mix -> those classes, sorted."""
    if text is None:
        return list(range(num_classes))
    chosen: set[int] = set()
    for part in text.split(","):
        low, dash, high = part.strip().partition("-")
        try:
            first, last = int(low), int(high) if dash else int(low)
        except ValueError:
            raise AlignkitError(f"--classes '{text}': expected numbers and ranges like '0,3,10-19'") from None
        if first > last:
            raise AlignkitError(f"--classes '{text}': the range {part.strip()} is empty")
        chosen.update(range(first, last + 1))
    outside = sorted(c for c in chosen if not 0 <= c < num_classes)
    if outside:
        raise AlignkitError(f"--classes '{text}': the model has classes 0…{num_classes - 1}, not {outside[0]}")
    return sorted(chosen)
