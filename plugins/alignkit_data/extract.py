"""``alignkit extract``: tokenize an image folder into the official pre-extracted code layout.

Output (what LlamaGen's ``extract_codes_c2i.py`` writes and the ``codes`` dataset reads)::

    OUT/codes/<k>.npy    int64 (1, A, L)   A = 10 with --ten-crop (5 crops × flip), else 2 (image, flip)
    OUT/labels/<k>.npy   int64 (1,)
    OUT/meta.json        tokenizer, image size, classes, counts

Images are centre-cropped as ADM/LlamaGen do (halve with a box filter while the short side is at
least twice the target, bicubic resize of the short side, centre crop); with ``--ten-crop`` the crop
is ``crop_range × image_size`` and torchvision's ``TenCrop(image_size)`` cuts the variants. Every
file is written atomically, so an interrupted extraction resumes where it stopped.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from alignkit.api import load_tokenizer
from alignkit.errors import AlignkitError
from alignkit.files import atomic_write, write_failure, write_json
from alignkit.interfaces import Tokenizer
from alignkit.values import resolve_device


def center_crop(image: Image.Image, size: int) -> Image.Image:
    """ADM's centre crop: box-filter halvings, bicubic resize of the short side to ``size``, crop."""
    while min(image.size) >= 2 * size:
        image = image.resize(tuple(x // 2 for x in image.size), resample=Image.BOX)
    scale = size / min(image.size)
    image = image.resize(tuple(round(x * scale) for x in image.size), resample=Image.BICUBIC)
    array = np.asarray(image)
    top, left = (array.shape[0] - size) // 2, (array.shape[1] - size) // 2
    return Image.fromarray(array[top: top + size, left: left + size])


def augmentations(image: Image.Image, image_size: int, ten_crop: bool, crop_range: float) -> torch.Tensor:
    """(A, 3, S, S) in [-1, 1]: ten crops, or the image and its mirror."""
    import torchvision.transforms.functional as TF
    from torchvision.transforms import TenCrop

    image = image.convert("RGB")
    if ten_crop:
        crops = TenCrop(image_size)(center_crop(image, int(image_size * crop_range)))
    else:
        base = center_crop(image, image_size)
        crops = (base, TF.hflip(base))
    return torch.stack([TF.to_tensor(c) for c in crops]) * 2 - 1


def extract(tokenizer: Tokenizer, images: Path, out: Path, *, image_size: int | None = None, ten_crop: bool = False,
            crop_range: float = 1.1, batch_size: int = 16, device: str = "cpu", progress: bool = True,
            strict: bool = False) -> dict:
    """Write the code layout for every image of a class-per-subfolder ``images`` folder; returns the meta.

    An unreadable image is skipped (listed in ``meta.json`` under ``skipped``; the readable ones are
    numbered without gaps) or, with ``strict``, stops the extraction."""
    from rich.progress import Progress
    from torchvision.datasets import ImageFolder

    images, out = Path(images), Path(out)
    if not images.is_dir():
        raise AlignkitError(f"--images: {images} is not a folder")
    try:
        folder = ImageFolder(str(images))
    except (FileNotFoundError, RuntimeError) as exc:
        raise AlignkitError(f"--images: {images}: {exc} (expected one subfolder of images per class)") from None
    if out.exists() and not out.is_dir():
        raise AlignkitError(f"--out: {out} is a file; give a folder")
    size = image_size or tokenizer.image_size
    codes_dir, labels_dir = out / "codes", out / "labels"
    meta = {"images": str(images), "num_images": len(folder), "classes": folder.classes, "image_size": size,
            "ten_crop": ten_crop, "crop_range": crop_range if ten_crop else None,
            "augmentations": 10 if ten_crop else 2, "seq_len": tokenizer.seq_len, "vocab_size": tokenizer.vocab_size}
    meta_path = out / "meta.json"
    previous = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    changed = [k for k in ("num_images", "image_size", "ten_crop", "crop_range", "seq_len")
               if previous.get(k, meta[k]) != meta[k]]
    if changed:
        raise AlignkitError(f"--out: {out} holds an extraction with other settings ({', '.join(changed)}); "
                            "use a new folder")
    meta["skipped"] = skipped = list(previous.get("skipped", []))
    skipped_set = set(skipped)
    codes_dir.mkdir(parents=True, exist_ok=True)
    labels_dir.mkdir(parents=True, exist_ok=True)
    write_json(meta_path, meta)
    tokenizer = tokenizer.to(device).eval()
    batch: list[tuple[int, Image.Image, int]] = []

    def flush() -> None:
        crops = [augmentations(img, size, ten_crop, crop_range) for _, img, _ in batch]
        with torch.no_grad():
            tokens = tokenizer.encode(torch.cat(crops).to(device)).cpu().to(torch.int64)
        for (k, _, label), codes in zip(batch, tokens.reshape(len(batch), crops[0].shape[0], -1)):
            _save_npy(codes_dir / f"{k}.npy", codes.numpy()[None])
            _save_npy(labels_dir / f"{k}.npy", np.array([label], dtype=np.int64))
        bar.advance(task, len(batch))
        batch.clear()

    k = 0  # the output index: readable images only, in ImageFolder order
    with Progress(disable=not progress, transient=False) as bar:
        task = bar.add_task(f"extract → {out}", total=len(folder))
        for path, label in folder.samples:
            name = os.path.relpath(path, images)
            if name in skipped_set:
                bar.advance(task)
                continue
            if (codes_dir / f"{k}.npy").exists() and (labels_dir / f"{k}.npy").exists():
                bar.advance(task)
            else:
                try:
                    batch.append((k, folder.loader(path), label))
                except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
                    if strict:
                        raise AlignkitError(f"--images: {path} is unreadable ({exc}); without --strict unreadable "
                                            "images are skipped and listed") from None
                    skipped.append(name)  # recorded before any later image is written under index k
                    skipped_set.add(name)
                    write_json(meta_path, meta)
                    bar.advance(task)
                    continue
                if len(batch) == batch_size:
                    flush()
            k += 1
        if batch:
            flush()
    meta["num_codes"] = k
    write_json(meta_path, meta)
    return meta


def _save_npy(path: Path, array: np.ndarray) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.save(f, array)

    atomic_write(path, write, durable=False)  # millions of small files: rename-atomic is enough


def extract_main(tokenizer_name: str, checkpoint: Path | None, images: Path, out: Path, *, config: dict | None,
                 random_init: bool = False, **kwargs) -> dict:
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise AlignkitError(f"--checkpoint: {checkpoint}: file not found")
    tokenizer = load_tokenizer(tokenizer_name, checkpoint=checkpoint, config=config, random_init=random_init)
    kwargs["device"] = resolve_device(kwargs.get("device") or "auto")
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    try:
        return extract(tokenizer, images, out, **kwargs)
    except OSError as exc:
        raise write_failure(exc, out) or exc from None
