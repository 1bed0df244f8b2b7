"""Where alignkit keeps what it fits or trains for reuse (toy tokenizers, bench base models), keyed
by content hashes so that a changed input never reuses a stale result."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np


def cache_dir(*parts: str) -> Path:
    """``$ALIGNKIT_CACHE`` (default ``~/.cache/alignkit``) / parts, created on demand."""
    root = Path(os.environ.get("ALIGNKIT_CACHE") or Path.home() / ".cache" / "alignkit")
    folder = root.joinpath(*parts)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def fingerprint(*items: Any) -> str:
    """A SHA-256 over JSON-able values and numpy/torch arrays (dtype, shape and bytes)."""
    digest = hashlib.sha256()
    for item in items:
        if hasattr(item, "detach"):  # a torch tensor
            item = item.detach().cpu().numpy()
        if isinstance(item, np.ndarray):
            digest.update(f"{item.dtype}{item.shape}".encode())
            digest.update(np.ascontiguousarray(item).tobytes())
        else:
            digest.update(json.dumps(item, sort_keys=True, default=str).encode())
    return digest.hexdigest()
