"""Official LlamaGen checkpoint files in and out.

Reading: ``{"model": sd}`` (DDP training, released B/L/XL and VQ files), ``{"module": sd}``
(DeepSpeed), ``{"state_dict": sd}`` or a raw state_dict (FSDP: released XXL/3B), ``.safetensors``;
stray ``freqs_cis`` and ``*.kv_cache.*`` keys (written by some official code paths) are dropped, then
the weights are loaded strictly. A file that does not fit raises one ``CheckpointError`` naming the
missing/unexpected keys and the size the file probably is.
"""

from __future__ import annotations

import os
import re
import warnings
from typing import Any, Literal

import torch
from torch import Tensor, nn

from alignkit.checkpoints import load_strict, read_weights_file, save_torch, strip_prefixes, unwrap_state_dict
from alignkit_conditioning import complete_state
from alignkit_llamagen.config import FSDP_SIZES, GPT_PRESETS, VQ_PRESETS, GPTConfig, preset_of

CODEBOOK_USED = "quantize.codebook_used"


def read_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """The state_dict of an official checkpoint, unwrapped and without DDP/compile prefixes."""
    return strip_prefixes(unwrap_state_dict(read_weights_file(path), path))


def _is_stray(key: str) -> bool:
    return key == "freqs_cis" or ".kv_cache." in key


def load_gpt_weights(model: nn.Module, path: str | os.PathLike) -> None:
    """Load an official GPT checkpoint into ``model`` strictly (``model`` may live on the meta device,
    then the file's tensors become its parameters without a copy)."""
    state = {k: v for k, v in read_state_dict(path).items() if not _is_stray(k)}
    state = complete_state(state, model.config.dim if model.config.lambda_conditioning else None)
    load_strict(model, state, path, guess=describe_gpt, assign=_on_meta(model))


def load_vq_weights(model: nn.Module, path: str | os.PathLike) -> None:
    """Load an official VQ checkpoint strictly; ``quantize.codebook_used`` (a training statistic that
    released files carry) is accepted whether or not the model keeps it."""
    state = read_state_dict(path)
    expected = model.state_dict(keep_vars=True)
    if CODEBOOK_USED in expected and CODEBOOK_USED not in state:
        state[CODEBOOK_USED] = torch.zeros(expected[CODEBOOK_USED].shape)
    elif CODEBOOK_USED not in expected:
        state.pop(CODEBOOK_USED, None)
    load_strict(model, state, path, guess=describe_vq, assign=_on_meta(model))


def _on_meta(model: nn.Module) -> bool:
    return any(t.is_meta for t in model.state_dict(keep_vars=True).values())


def official_layout(config: GPTConfig) -> Literal["wrapped", "raw"]:
    """The layout the official samplers and CCA fine-tuning scripts expect for this size:
    ``{"model": sd}`` for the DDP-trained sizes (B, L, XL and any non-standard size; LlamaGen's
    ``sample_c2i.py`` and CCA's ``LlamaGen_finetune.py`` read ``["model"]``), the raw state_dict for
    the FSDP-trained sizes (XXL, XXXL, 1B, 3B, 7B; ``sample_c2i.py --from-fsdp``,
    ``LlamaGen_finetune_fsdp.py``). CCA's sampler reads both."""
    return "raw" if preset_of(config) in FSDP_SIZES else "wrapped"


def official_checkpoint(config: GPTConfig, state: dict[str, Tensor],
                        layout: Literal["auto", "wrapped", "raw"] = "auto") -> dict[str, Any]:
    """The content of an official file for ``state``: ``{"model": state}`` or ``state`` itself;
    ``auto`` is ``official_layout``."""
    if layout == "auto":
        layout = official_layout(config)
    if layout not in ("wrapped", "raw"):
        raise ValueError(f"layout must be 'auto', 'wrapped' or 'raw', got {layout!r}")
    return dict(state) if layout == "raw" else {"model": dict(state)}


def save_gpt_official(model: nn.Module, path: str | os.PathLike,
                      layout: Literal["auto", "wrapped", "raw"] = "auto") -> None:
    """Write ``model``'s official state_dict (CPU tensors) through ``official_checkpoint``.

    CCA's fine-tuning scripts pick the layout from the file name (raw iff it contains "XXL" or
    "3B"), so a name that contradicts the layout is warned about.
    """
    state = {k: v.detach().cpu() for k, v in model.official_state_dict().items()}
    content = official_checkpoint(model.config, state, layout)
    is_raw = "model" not in content
    if ("XXL" in str(path) or "3B" in str(path)) != is_raw:
        warnings.warn(f"{path}: CCA's fine-tuning scripts read files whose name contains 'XXL' or '3B' as raw "
                      f"state_dicts and all others through ['model']; this {'raw' if is_raw else 'wrapped'} "
                      "file will need renaming for them", stacklevel=3)
    save_torch(content, path)


def save_vq_official(model: nn.Module, path: str | os.PathLike) -> None:
    """``{"model": sd}``, the layout of ``vq_ds16_c2i.pt`` (every official VQ loader reads ``["model"]``)."""
    save_torch({"model": {k: v.detach().cpu() for k, v in model.state_dict().items()}}, path)


# ---------------------------------------------------------------------------- size guesses


def _layer_count(state: dict[str, Tensor], pattern: str) -> int:
    found = {int(m.group(1)) for k in state if (m := re.match(pattern, k))}
    return max(found) + 1 if found else 0


def describe_gpt(state: dict[str, Tensor]) -> str | None:
    """What an ill-fitting GPT state_dict probably is, for error messages."""
    if "cls_embedding.cap_proj.fc1.weight" in state:
        return "a text-to-image (t2i) LlamaGen GPT; alignkit supports class-conditional (c2i) models only"
    if "quantize.embedding.weight" in state:
        return f"a VQ tokenizer checkpoint, not a GPT ({describe_vq(state)})"
    emb = state.get("tok_embeddings.weight")
    if emb is None or emb.ndim != 2:
        return None
    vocab, dim = emb.shape
    n_layer = _layer_count(state, r"layers\.(\d+)\.attention\.wqkv\.weight$")
    table = state.get("cls_embedding.embedding_table.weight")
    classes = f", {table.shape[0] - 1} classes + null" if table is not None and table.ndim == 2 else ""
    shape = f"dim {dim}, {n_layer} layers, vocab {vocab}{classes}"
    for name, preset in GPT_PRESETS.items():
        if (preset["dim"], preset["n_layer"]) == (dim, n_layer):
            return f"a GPT-{name} checkpoint ({shape}): load it as 'llamagen-{name}'"
    return f"a non-standard GPT ({shape})"


def describe_vq(state: dict[str, Tensor]) -> str | None:
    """What an ill-fitting VQ state_dict probably is, for error messages."""
    if "tok_embeddings.weight" in state:
        return f"a LlamaGen GPT checkpoint, not a VQ tokenizer ({describe_gpt(state)})"
    codebook, conv_in = state.get("quantize.embedding.weight"), state.get("encoder.conv_in.weight")
    if codebook is None or conv_in is None:
        return None
    levels = _layer_count(state, r"encoder\.conv_blocks\.(\d+)\.")
    downsample = 2 ** max(levels - 1, 0)
    shape = (f"ch {conv_in.shape[0]}, {levels} levels = downsample {downsample}, "
             f"codebook {codebook.shape[0]} x {codebook.shape[1]}")
    for name, preset in VQ_PRESETS.items():
        if len(preset["encoder_ch_mult"]) == levels and conv_in.shape[0] == 128:
            return f"a VQ-{name} tokenizer ({shape}): load it as 'llamagen-vq-{name}'"
    return f"a non-standard VQ tokenizer ({shape})"
