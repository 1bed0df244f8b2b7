"""Reading ADM-format ``.npz`` sample batches (``alignkit.sample.npz`` writes them) with one clear
error each. Uncompressed members (what ``np.savez`` writes) are memory-mapped, so a 50k × 256² batch
is not read into memory at once."""

from __future__ import annotations

import os
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from alignkit.errors import AlignkitError
from alignkit.sample.npz import EXPECTED, check_images, check_vector


@dataclass(frozen=True)
class SampleBatch:
    """Images ``(N, H, W, C)`` uint8 (possibly a read-only memory map), optional labels and tokens."""

    images: np.ndarray
    labels: np.ndarray | None = None
    tokens: np.ndarray | None = None
    path: Path | None = None

    def __len__(self) -> int:
        return self.images.shape[0]


def open_npz(path: str | os.PathLike, what: str) -> tuple[Path, list[str]]:
    """The path and the array names inside, or an ``AlignkitError`` saying why the file is unusable."""
    path = Path(path)
    if not path.exists():
        raise AlignkitError(f"{what} {path}: file not found")
    if not path.is_file():
        raise AlignkitError(f"{what} {path}: not a file")
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as f:
            is_npy = f.read(6) == b"\x93NUMPY"
        hint = " (this is a single .npy array; save it with np.savez(path, arr_0=images))" if is_npy else ""
        raise AlignkitError(f"{what} {path}: not an .npz file{hint}")
    try:
        with zipfile.ZipFile(path) as zf:
            keys = [n[:-4] for n in zf.namelist() if n.endswith(".npy")]
    except (zipfile.BadZipFile, OSError) as exc:
        raise AlignkitError(f"{what} {path}: unreadable .npz file ({exc})") from None
    return path, keys


def load_array(path: Path, key: str, what: str, mmap: bool = False) -> np.ndarray:
    """One array of the archive; memory-mapped when ``mmap`` and the member is stored uncompressed."""
    try:
        with zipfile.ZipFile(path) as zf:
            info = zf.getinfo(f"{key}.npy")
            with zf.open(info) as f:
                version = np.lib.format.read_magic(f)
                if mmap and info.compress_type == zipfile.ZIP_STORED and version in ((1, 0), (2, 0)):
                    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                                   else np.lib.format.read_array_header_2_0)
                    shape, fortran, dtype = read_header(f)
                    if not fortran and not dtype.hasobject and 0 not in shape:
                        with open(path, "rb") as raw:  # the member's data follows its local header
                            raw.seek(info.header_offset + 26)
                            name_len, extra_len = struct.unpack("<HH", raw.read(4))
                        offset = info.header_offset + 30 + name_len + extra_len + f.tell()
                        return np.memmap(path, dtype=dtype, mode="r", shape=shape, offset=offset)
        with np.load(path, allow_pickle=False) as data:
            return data[key]
    except ValueError as exc:  # object arrays (pickles) are refused
        raise AlignkitError(f"{what} {path}: cannot read '{key}': {exc}") from None
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise AlignkitError(f"{what} {path}: '{key}' is unreadable (truncated file?): {exc}") from None


def read_samples(path: str | os.PathLike) -> SampleBatch:
    """Read and check a sample batch (``arr_0`` required; ``labels``, ``tokens`` optional)."""
    path, keys = open_npz(path, "samples")
    where = f"samples {path}"
    if "arr_0" not in keys:
        raise AlignkitError(f"{where}: no 'arr_0' array (keys: {', '.join(keys) or 'none'}); a sample batch is an "
                            f".npz with arr_0 = {EXPECTED}")
    images = check_images(load_array(path, "arr_0", "samples", mmap=True), where)
    labels = tokens = None
    if "labels" in keys:
        labels = check_vector(load_array(path, "labels", "samples"), len(images), "labels", where, 1)
    if "tokens" in keys:
        tokens = check_vector(load_array(path, "tokens", "samples"), len(images), "tokens", where, 2)
    return SampleBatch(images, labels, tokens, path)
