"""Reading and writing weight files safely: tensors only, atomic writes, errors that say what is wrong."""

from __future__ import annotations

import argparse
import io
import lzma
import os
import pickle
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from alignkit.errors import CheckpointError
from alignkit.files import atomic_write

_WRAPPER_KEYS = ("model", "module", "state_dict")
_TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
_MAGIC = {".xz": (b"\xfd7zXZ\x00",), ".npz": (b"PK\x03\x04",), ".npy": (b"\x93NUMPY",),
          **{s: (b"PK\x03\x04", b"\x80") for s in _TORCH_SUFFIXES}}
_FORMATS = {".xz": "an xz file", ".npz": "an .npz file", ".npy": "a .npy file", ".safetensors": "a safetensors file"}


def header_problem(path: Path, suffix: str | None = None) -> str | None:
    """What the first bytes say is wrong with a file of this suffix (empty, a web page, another
    format), or ``None``; reads 512 bytes."""
    suffix = suffix or path.suffix
    with open(path, "rb") as f:
        head = f.read(512)
    if not head:
        return "the file is empty"
    if head.lstrip()[:1] == b"<":
        return ("this is an HTML/XML page, not a checkpoint (a failed download? hub links need '?download=true' "
                "or the 'resolve' URL)")
    if suffix == ".safetensors":
        ok = len(head) > 8 and head[8:9] == b"{"
    else:
        ok = suffix not in _MAGIC or head.startswith(_MAGIC[suffix])
    return None if ok else f"not {_FORMATS.get(suffix, 'a torch checkpoint')} (its first bytes are {head[:8]!r})"


def read_weights_file(path: str | os.PathLike) -> Any:
    """Load a ``.pt``/``.pth`` (optionally ``.xz``-compressed) or ``.safetensors`` file on the CPU.

    Pickles are read with ``weights_only=True``: tensors and plain containers only, never code.
    ``argparse.Namespace`` is allowed because official training checkpoints store their ``args``.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    problem = header_problem(path, path.suffix if path.suffix in (".safetensors", ".xz") else ".pt")
    if problem:
        raise CheckpointError(f"{path}: {problem}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(path, device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{path}: not a readable safetensors file (truncated or corrupt?): {exc}") from None
    source: Any = path
    if path.suffix == ".xz":
        try:
            source = io.BytesIO(lzma.decompress(path.read_bytes()))
        except lzma.LZMAError as exc:
            raise CheckpointError(f"{path}: not a valid xz file: {exc}") from None
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(source, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"{path}: the file holds Python objects other than tensors and alignkit never "
                              f"unpickles code (weights_only=True). Re-save only the state_dict. Detail: "
                              f"{str(exc).splitlines()[0]}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (truncated or corrupt?): "
                              f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None


def unwrap_state_dict(obj: Any, path: str | os.PathLike, nested: tuple[tuple[str, ...], ...] = ()) -> dict[str, Tensor]:
    """The state_dict inside a checkpoint: tries each path in ``nested`` (e.g. ``("trainer",
    "var_wo_ddp")``), then ``model``, ``module``, ``state_dict``, then the object itself."""
    for keys in (*nested, *((k,) for k in _WRAPPER_KEYS)):
        node = obj
        for key in keys:
            node = node.get(key) if isinstance(node, Mapping) else None
        if isinstance(node, Mapping) and node and all(isinstance(v, Tensor) for v in node.values()):
            return dict(node)
    if isinstance(obj, Mapping) and obj and all(isinstance(v, Tensor) for v in obj.values()):
        return dict(obj)
    found = ", ".join(list(obj)[:8]) if isinstance(obj, Mapping) else type(obj).__name__
    raise CheckpointError(f"{path}: no state_dict found (top-level keys: {found})")


def strip_prefixes(state: dict[str, Tensor], prefixes: tuple[str, ...] = ("module.", "_orig_mod.")) -> dict[str, Tensor]:
    """Remove DDP / torch.compile prefixes that some training scripts leave on every key."""
    out = {}
    for key, value in state.items():
        changed = True
        while changed:
            changed = False
            for prefix in prefixes:
                if key.startswith(prefix):
                    key, changed = key[len(prefix):], True
        out[key] = value
    return out


def load_strict(module: torch.nn.Module, state: dict[str, Tensor], path: str | os.PathLike,
                guess: Callable[[dict[str, Tensor]], str | None] | None = None, assign: bool = False) -> None:
    """``load_state_dict(strict=True)`` with one readable error for missing, unexpected or misshapen keys.

    ``assign=True`` makes the file's tensors the module's parameters and buffers instead of copying
    them (for a module built on the meta device: no init and no second copy of the weights); they
    are first cast to the dtype of the entry they replace, as a copy would.
    """
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    misshapen = [f"{k} {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
                 for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or misshapen:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", misshapen)):
            if keys:
                shown = ", ".join(keys[:6]) + (f", … ({len(keys)} in all)" if len(keys) > 6 else "")
                parts.append(f"{label}: {shown}")
        hint = guess(state) if guess else None
        message = f"{path}: checkpoint does not fit the model ({'; '.join(parts)})"
        if hint:
            message += f". It looks like {hint}"
        raise CheckpointError(message)
    if assign:
        state = {k: v.to(expected[k].dtype) if v.dtype != expected[k].dtype else v for k, v in state.items()}
    module.load_state_dict(state, strict=True, assign=assign)


def save_torch(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` through ``atomic_write``."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def save_safetensors(state: Mapping[str, Tensor], path: str | os.PathLike, metadata: dict[str, str] | None = None) -> None:
    """A state_dict as safetensors (contiguous CPU copies), through ``atomic_write``."""
    from safetensors.torch import save_file

    tensors, storages = {}, set()
    for key, value in state.items():
        tensor = value.detach().to("cpu").contiguous()
        if tensor.untyped_storage().data_ptr() in storages:  # safetensors refuses shared storage
            tensor = tensor.clone()
        storages.add(tensor.untyped_storage().data_ptr())
        tensors[key] = tensor
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
