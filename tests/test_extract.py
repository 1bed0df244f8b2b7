"""`alignkit extract`: image folder -> the official code layout, for LlamaGen's VQ and VAR's VQVAE."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import alignkit
from alignkit.cli.main import app
from alignkit_data.extract import augmentations, center_crop
from alignkit_data import CodeFolder, CodeFolderConfig

FIXTURES = Path(__file__).parent / "fixtures"
VQ = FIXTURES / "llamagen" / "vq_tiny.pt.xz"
runner = CliRunner()


def vq_settings() -> list[str]:
    from test_llamagen_vq import CONFIG

    return [f"{k}={json.dumps(v)}" for k, v in CONFIG.items()]


@pytest.fixture
def images(tmp_path) -> Path:
    """Two classes of small RGB images of different sizes (class folders sorted: cat=0, dog=1)."""
    rng = np.random.default_rng(0)
    for label, name in enumerate(("cat", "dog")):
        (tmp_path / "images" / name).mkdir(parents=True)
        for i in range(3):
            size = (20 + 3 * i, 18 + 5 * label)
            pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "images" / name / f"{i}.png")
    return tmp_path / "images"


def extract(images: Path, out: Path, *extra: str, tokenizer="llamagen-vq", checkpoint=VQ, settings=None):
    settings = vq_settings() if settings is None else settings
    args = ["extract", "--tokenizer", tokenizer, "--checkpoint", str(checkpoint), "--images", str(images),
            "--out", str(out), "--batch-size", "2", "--device", "cpu", *extra]
    for item in settings:
        args += ["--set", item]
    return runner.invoke(app, args)


def test_center_crop_is_adm_style():
    image = Image.fromarray(np.arange(64 * 40 * 3, dtype=np.uint8).reshape(40, 64, 3) % 251)
    crop = center_crop(image, 16)
    assert crop.size == (16, 16)
    # the short side 40 is >= 2·16 once: one box halving to 32x20, bicubic to a short side of 16, crop
    halved = image.resize((32, 20), resample=Image.BOX)
    resized = halved.resize((round(32 * 16 / 20), 16), resample=Image.BICUBIC)
    expected = np.asarray(resized)[:, (resized.size[0] - 16) // 2:][:, :16]
    assert np.array_equal(np.asarray(crop), expected)


def test_extract_writes_the_official_layout(images, tmp_path):
    out = tmp_path / "codes"
    result = extract(images, out)
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "meta.json").read_text())
    assert meta["classes"] == ["cat", "dog"] and meta["num_images"] == 6 and meta["augmentations"] == 2
    vq = alignkit.load_tokenizer("llamagen-vq", checkpoint=VQ, config=dict(
        (item.split("=", 1)[0], json.loads(item.split("=", 1)[1])) for item in vq_settings()))
    from torchvision.datasets import ImageFolder

    folder = ImageFolder(str(images))
    for k in range(6):
        codes = np.load(out / "codes" / f"{k}.npy")
        label = np.load(out / "labels" / f"{k}.npy")
        assert codes.shape == (1, 2, vq.seq_len) and codes.dtype == np.int64
        assert label.tolist() == [folder[k][1]]
        with torch.no_grad():
            expected = vq.encode(augmentations(folder[k][0], vq.image_size, False, 1.1))
        assert np.array_equal(codes[0], expected.numpy())
    dataset = CodeFolder(CodeFolderConfig(codes=[out / "codes"], labels=out / "labels"))
    assert len(dataset) == 6 and dataset.num_augmentations == 2 and dataset.seq_len == vq.seq_len
    tokens, label = dataset.get(4, 1)
    assert torch.equal(tokens, torch.from_numpy(np.load(out / "codes" / "4.npy")[0, 1])) and label == 1


def test_an_interrupted_extraction_resumes(images, tmp_path):
    out = tmp_path / "codes"
    assert extract(images, out, "--ten-crop").exit_code == 0
    before = {p.name: p.read_bytes() for p in (out / "codes").iterdir()}
    assert np.load(out / "codes" / "0.npy").shape[1] == 10
    for k in (1, 4):  # as if the run had stopped before these
        (out / "codes" / f"{k}.npy").unlink()
    stamp = os.stat(out / "codes" / "0.npy").st_mtime_ns
    assert extract(images, out, "--ten-crop").exit_code == 0
    assert {p.name: p.read_bytes() for p in (out / "codes").iterdir()} == before
    assert os.stat(out / "codes" / "0.npy").st_mtime_ns == stamp  # finished files are not redone
    changed = extract(images, out)  # other settings into the same folder
    assert changed.exit_code == 2
    assert "holds an extraction with other settings (ten_crop, crop_range)" in changed.stderr


def test_extract_var_multiscale_ids(images, tmp_path):
    vae = FIXTURES / "var" / "vae_tiny.pth.xz"
    settings = ["vocab_size=32", "z_channels=8", "ch=32", "v_patch_nums=[1, 2, 3, 4]"]
    out = tmp_path / "var_codes"
    result = extract(images, out, tokenizer="var-vqvae", checkpoint=vae, settings=settings)
    assert result.exit_code == 0, result.output
    assert np.load(out / "codes" / "0.npy").shape == (1, 2, 30)


def test_extract_errors(tmp_path, images):
    result = extract(tmp_path / "nowhere", tmp_path / "out")
    assert result.exit_code == 2 and "is not a folder" in result.stderr
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.new("RGB", (8, 8)).save(flat / "a.png")
    result = extract(flat, tmp_path / "out")
    assert result.exit_code == 2 and "expected one subfolder of images per class" in result.stderr
    result = extract(images, tmp_path / "out", checkpoint=tmp_path / "missing.pt")
    assert result.exit_code == 2 and "missing.pt: file not found" in result.stderr


def test_unreadable_images_are_skipped_and_listed_or_stop_with_strict(images, tmp_path):
    broken = images / "cat" / "1.png"
    broken.write_bytes(broken.read_bytes()[:60])  # truncated
    strict = extract(images, tmp_path / "strict", "--strict")
    assert strict.exit_code == 2 and "Traceback" not in strict.output
    assert strict.stderr.startswith(f"error: --images: {broken} is unreadable (") and len(strict.stderr.splitlines()) == 1
    out = tmp_path / "codes"
    result = extract(images, out)
    assert result.exit_code == 0, result.output
    assert f"warning: skipped 1 unreadable images (all listed in {out / 'meta.json'}): cat/1.png" in result.stderr
    meta = json.loads((out / "meta.json").read_text())
    assert meta["skipped"] == ["cat/1.png"] and meta["num_codes"] == 5 and meta["num_images"] == 6
    dataset = CodeFolder(CodeFolderConfig(codes=[out / "codes"], labels=out / "labels"))  # numbered without gaps
    assert len(dataset) == 5 and [dataset.get(k, 0)[1] for k in range(5)] == [0, 0, 1, 1, 1]
    again = extract(images, out)  # a rerun keeps the numbering
    assert again.exit_code == 0 and json.loads((out / "meta.json").read_text())["skipped"] == ["cat/1.png"]


def test_extract_refuses_a_tokenizer_without_weights(images, tmp_path):
    args = ["extract", "--tokenizer", "llamagen-vq", "--images", str(images), "--out", str(tmp_path / "out")]
    result = runner.invoke(app, args + [a for item in vq_settings() for a in ("--set", item)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "tokenizer 'llamagen-vq' needs its weights (checkpoint=PATH; --checkpoint on the command line)" in result.stderr
