"""Reading and checking ADM-format .npz files: one clear message per kind of bad input."""

import numpy as np
import pytest

from alignkit import AlignkitError
from alignkit.sample.npz import write_samples
from alignkit_metrics.samples import read_samples
from alignkit_metrics.reference import check_compatible, read_reference


def images(n=5, size=8, channels=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, channels), dtype=np.uint8)


def test_write_then_read_roundtrip_is_memory_mapped(tmp_path):
    x, labels = images(), np.arange(5)
    tokens = np.arange(5 * 4).reshape(5, 4)
    path = write_samples(tmp_path / "s.npz", x, labels, tokens)
    batch = read_samples(path)
    assert isinstance(batch.images, np.memmap)  # np.savez stores members uncompressed
    np.testing.assert_array_equal(batch.images, x)
    np.testing.assert_array_equal(batch.labels, labels)
    np.testing.assert_array_equal(batch.tokens, tokens)
    assert len(batch) == 5 and not list(tmp_path.glob("*.tmp"))


def test_compressed_and_grey_files(tmp_path):
    grey = images(channels=1)[..., 0]  # (N, H, W)
    np.savez_compressed(tmp_path / "g.npz", arr_0=grey)
    batch = read_samples(tmp_path / "g.npz")
    assert batch.images.shape == (5, 8, 8, 1)
    np.testing.assert_array_equal(batch.images[..., 0], grey)


@pytest.mark.parametrize("arrays, message", [
    ({"images": images()}, r"no 'arr_0' array \(keys: images\)"),
    ({"arr_0": images().astype(np.float32) / 255}, r"dtype float32; expected uint8 images in \[0, 255\], NHWC"),
    ({"arr_0": images().astype(np.int64)}, r"dtype int64; expected uint8 .*astype\(np.uint8\)"),
    ({"arr_0": images().transpose(0, 3, 1, 2)}, r"with 8 channels.*looks like NCHW: use images.transpose\(0, 2, 3, 1\)"),
    ({"arr_0": images()[0]}, r"shape \(8, 8, 3\).*single image"),
    ({"arr_0": images()[:0]}, "holds no images"),
    ({"arr_0": images(), "labels": np.arange(4)}, r"'labels' has shape \(4,\).*N = 5"),
    ({"arr_0": images(), "labels": np.zeros(5, np.float32)}, "'labels'.*integers"),
])
def test_bad_sample_files(tmp_path, arrays, message):
    np.savez(tmp_path / "s.npz", **arrays)
    with pytest.raises(AlignkitError, match=message):
        read_samples(tmp_path / "s.npz")


def test_missing_and_non_npz_files(tmp_path):
    with pytest.raises(AlignkitError, match="file not found"):
        read_samples(tmp_path / "nope.npz")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(AlignkitError, match=r"not an \.npz file$"):
        read_samples(tmp_path / "text.npz")
    np.save(tmp_path / "single.npy", images())
    with pytest.raises(AlignkitError, match=r"single \.npy array; save it with np.savez"):
        read_samples(tmp_path / "single.npy")
    np.savez(tmp_path / "obj.npz", arr_0=np.array([{"a": 1}], dtype=object))
    with pytest.raises(AlignkitError, match="cannot read 'arr_0'"):
        read_samples(tmp_path / "obj.npz")


def test_reference_with_statistics_only(tmp_path):
    rng = np.random.default_rng(1)
    mu, sigma = rng.standard_normal(4), np.eye(4)
    np.savez(tmp_path / "r.npz", mu=mu, sigma=sigma, mu_s=mu[:2], sigma_s=np.eye(2))
    ref = read_reference(tmp_path / "r.npz")
    assert ref.images is None
    np.testing.assert_array_equal(ref.mu, mu)
    assert ref.sigma_s.shape == (2, 2) and ref.mu.dtype == np.float64


@pytest.mark.parametrize("arrays, message", [
    ({"labels": np.arange(3)}, r"no 'arr_0' images and no 'mu'/'sigma' statistics \(keys: labels\)"),
    ({"mu": np.zeros(3)}, "has 'mu' but no 'sigma'"),
    ({"arr_0": images(), "mu_s": np.zeros(3)}, "has 'mu_s' but no 'sigma_s'"),
    ({"mu": np.zeros(3), "sigma": np.eye(4)}, r"'mu' \(3,\) and 'sigma' \(4, 4\) do not fit"),
    ({"mu": np.zeros(2), "sigma": np.full((2, 2), np.nan)}, "contain NaN or inf"),
    ({"arr_0": images().astype(np.float64)}, "dtype float64"),
])
def test_bad_reference_files(tmp_path, arrays, message):
    np.savez(tmp_path / "r.npz", **arrays)
    with pytest.raises(AlignkitError, match=message):
        read_reference(tmp_path / "r.npz")


def test_reference_of_another_resolution(tmp_path):
    write_samples(tmp_path / "s.npz", images(size=8))
    np.savez(tmp_path / "r.npz", arr_0=images(size=16))
    with pytest.raises(AlignkitError, match=r"has 16×16 images but the samples .* are 8×8; resize the samples to 16×16"):
        check_compatible(read_samples(tmp_path / "s.npz"), read_reference(tmp_path / "r.npz"))
    np.savez(tmp_path / "g.npz", arr_0=images(size=8, channels=1))
    with pytest.raises(AlignkitError, match="1-channel images but the samples .* have 3 channel"):
        check_compatible(read_samples(tmp_path / "s.npz"), read_reference(tmp_path / "g.npz"))


def test_write_samples_checks_its_input(tmp_path):
    with pytest.raises(AlignkitError, match="dtype float64"):
        write_samples(tmp_path / "s.npz", images().astype(np.float64))
    assert not (tmp_path / "s.npz").exists()
