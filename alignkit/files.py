"""Writing files so that nothing half-written is ever seen: every output goes to a temporary file
beside its target and is renamed over it when complete."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from alignkit.errors import AlignkitError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None], durable: bool = True) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it over ``path``, so that
    ``path`` is always either the old file or the complete new one. The file gets the usual
    permissions (the temporary one was private). ``durable`` also fsyncs the file and its folder
    (survives power loss, not only a killed process)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        if durable:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
        if durable:
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str, durable: bool = True) -> None:
    """``text`` into ``path`` through ``atomic_write``."""
    atomic_write(path, lambda tmp: tmp.write_text(text), durable)


def write_json(path: str | os.PathLike, data: Any) -> None:
    """``data`` as indented JSON (and a final newline) through ``atomic_write``."""
    write_text(path, json.dumps(data, indent=2) + "\n")


def write_npz(path: str | os.PathLike, **arrays: Any) -> None:
    """Uncompressed ``np.savez`` through ``atomic_write`` (a file object: ``np.savez`` would append
    ``.npz`` to a temporary name)."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    atomic_write(path, write)
def file_sha256(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM, errno.EISDIR}


def size_text(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def write_failure(exc: BaseException, path: str | os.PathLike) -> AlignkitError | None:
    """An output-side ``OSError`` (full disk, quota, permissions, a file where a folder should be) or
    torch's writer error on a full disk, as one ``AlignkitError`` naming the path; else ``None``."""
    path = Path(getattr(exc, "filename", None) or path)
    existing = next(p for p in (path, *path.parents) if p.exists())
    if isinstance(exc, OSError) and exc.errno in (errno.EEXIST, errno.ENOTDIR):
        return AlignkitError(f"{path}: cannot write: {existing} is a file, not a folder")
    if isinstance(exc, OSError) and exc.errno in _WRITE_ERRNOS:
        reason = exc.strerror
    elif isinstance(exc, RuntimeError) and any(s in str(exc) for s in ("unexpected pos", "file write failed")):
        reason = f"the write failed ({str(exc).splitlines()[0].split('] ')[-1].strip(' .')}: a full disk?)"
    else:
        return None
    return AlignkitError(f"{path}: cannot write: {reason}; {size_text(shutil.disk_usage(existing).free)} free there")
