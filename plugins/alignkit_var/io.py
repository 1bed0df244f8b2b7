"""Building VAR and its VQVAE from official checkpoints, with errors that say what a file really is.

Accepted VAR files: the released plain state_dicts (``var_d16.pth`` …, ``VAR_d16_CCA.pth``), the VAR
trainer's ``ar-ckpt-*.pth`` (``['trainer']['var_wo_ddp']``), CCA's (``['trainer']`` is the
state_dict), ``_orig_mod.``/``module.`` prefixes, and our own safetensors. Everything is read with
``weights_only=True``; models with a checkpoint are built on the meta device and take the loaded
tensors (cast to the model's fp32), so large models are never initialised only to be overwritten.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Callable

import torch
from torch import Tensor, nn

from alignkit import Tokenizer
from alignkit.checkpoints import load_strict, read_weights_file, strip_prefixes, unwrap_state_dict
from alignkit_conditioning import complete_state
from alignkit.errors import AlignkitError, CheckpointError

from alignkit_var.config import VAR_PRESETS, VARConfig, VQVAEConfig
from alignkit_var.model import VAR, block_causal_bias, scale_levels
from alignkit_var.quant import MultiScaleQuantizer
from alignkit_var.vqvae import VQVAE

Path = str | os.PathLike
VAR_WRAPPERS = (("trainer", "var_wo_ddp"), ("trainer",))
VQVAE_WRAPPERS = (("trainer", "vae_local"),)


def read_state(path: Path, nested: tuple[tuple[str, ...], ...]) -> dict[str, Tensor]:
    """The state_dict inside a checkpoint file (``load_strict`` casts it to the model's dtypes)."""
    return strip_prefixes(unwrap_state_dict(read_weights_file(path), path, nested=nested))


def describe_checkpoint(state: dict[str, Tensor]) -> str | None:
    """What a state_dict holds, for error messages: the VAR size and options that would load it."""
    if "class_emb.weight" in state and "pos_1LC" in state:
        depth = 1 + max((int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k))), default=-1)
        classes, width = state["class_emb.weight"].shape
        L, S = state["pos_1LC"].shape[1], state["lvl_embed.weight"].shape[0] if "lvl_embed.weight" in state else "?"
        shared = "shared_ada_lin.1.weight" in state
        l2 = any(k.endswith("scale_mul_1H11") for k in state)
        preset = f"d{depth}" if width == 64 * depth else None
        options = [f"depth={depth}"] + ([] if preset else [f"embed_dim={width}"])
        options += [f"num_classes={classes - 1}", f"shared_aln={shared}", f"attn_l2_norm={l2}"]
        where = f" (backbone 'var-{preset}')" if preset in VAR_PRESETS else ""
        return (f"a VAR-d{depth} checkpoint (width {width}, {S} scales, L={L}): build it with "
                f"{', '.join(options)} and its patch_nums{where}")
    if any(k.startswith("encoder.") for k in state) and any(k.startswith("quantize.") for k in state):
        return "a VQVAE checkpoint: pass it as the tokenizer, not as the VAR checkpoint"
    if "tok_embeddings.weight" in state or "cls_embedding.embedding_table.weight" in state:
        return "a LlamaGen checkpoint: use the 'llamagen' backbone"
    return None


def load_into_meta(build: Callable[[], nn.Module], state: dict[str, Tensor], path: Path,
                   guess: Callable[[dict[str, Tensor]], str | None]) -> nn.Module:
    """Build the module's skeleton on the meta device and adopt the checkpoint's tensors."""
    with torch.device("meta"):
        module = build()
    load_strict(module, state, path, guess=guess, assign=True)
    return module


def build_quantizer(config: VARConfig, tokenizer: Tokenizer | Path | None, checkpoint: Path | None
                    ) -> MultiScaleQuantizer:
    """The policy's own frozen copy of the VQVAE quantiser (it moves with the policy, the tokenizer
    stays where it is)."""
    if tokenizer is None:
        if checkpoint is not None:
            raise AlignkitError("VAR builds its teacher-forcing input with its VQVAE: pass tokenizer= (a "
                                "'var-vqvae' tokenizer or the path of vae_ch160v4096z32.pth) with a checkpoint")
        tok_cfg = config.tokenizer_config()
        return MultiScaleQuantizer(tok_cfg.vocab_size, tok_cfg.z_channels, tok_cfg.v_patch_nums,
                                   tok_cfg.quant_resi, tok_cfg.share_quant_resi)
    if not isinstance(tokenizer, Tokenizer):
        return build_vqvae(config.tokenizer_config(), checkpoint=tokenizer).quantize
    quantize = getattr(tokenizer, "quantize", None)
    if not isinstance(quantize, MultiScaleQuantizer):
        raise AlignkitError(f"VAR needs a 'var-vqvae' tokenizer, got {type(tokenizer).__name__}")
    found = (quantize.vocab_size, quantize.Cvae, quantize.patch_nums)
    if found != (config.V, config.Cvae, config.patch_nums):
        raise AlignkitError(f"the tokenizer (vocab_size={found[0]}, z_channels={found[1]}, v_patch_nums={found[2]}) "
                            f"does not match the VAR config (V={config.V}, Cvae={config.Cvae}, "
                            f"patch_nums={config.patch_nums})")
    return copy.deepcopy(quantize)


def vqvae_sizes(tokenizer: Tokenizer | Path) -> dict[str, int]:
    """``V``, ``Cvae``, ``ch``, ``share_quant_resi`` of a VQVAE, or of its checkpoint from the tensor shapes."""
    if isinstance(tokenizer, Tokenizer):
        c = getattr(tokenizer, "config", None)
        return ({"V": c.vocab_size, "Cvae": c.z_channels, "ch": c.ch, "share_quant_resi": c.share_quant_resi}
                if isinstance(c, VQVAEConfig) else {})
    state = read_state(tokenizer, VQVAE_WRAPPERS)
    if "quantize.embedding.weight" not in state or "encoder.conv_in.weight" not in state:
        return {}  # not a VQVAE: building it says so
    phis = {k.split(".")[3] for k in state if k.startswith("quantize.quant_resi.qresi_ls.")}
    shared = 1 if any(k.startswith("quantize.quant_resi.qresi.") for k in state) else len(phis)
    V, Cvae = state["quantize.embedding.weight"].shape
    return {"V": V, "Cvae": Cvae, "ch": state["encoder.conv_in.weight"].shape[0], "share_quant_resi": shared}


def build_var(config: VARConfig, checkpoint: Path | None = None, tokenizer: Tokenizer | Path | None = None) -> VAR:
    """The ``var`` backbone factory: random init as ``build_vae_var`` without a checkpoint. The VQVAE
    sizes the config does not give come from ``tokenizer``."""
    unset = {"V", "Cvae", "ch", "share_quant_resi"} - config.model_fields_set
    if unset and tokenizer is not None:
        config = config.model_copy(update={k: v for k, v in vqvae_sizes(tokenizer).items() if k in unset})
    quantizer = build_quantizer(config, tokenizer, checkpoint)
    if checkpoint is None:
        model = VAR(config, quantizer)
        model.init_weights()
        return model
    state = read_state(checkpoint, VAR_WRAPPERS)
    _check_layout_buffers(config, state, checkpoint)
    state = complete_state(state, config.width if config.lambda_conditioning else None)
    return load_into_meta(lambda: VAR(config, quantizer), state, checkpoint, describe_checkpoint)


def _check_layout_buffers(config: VARConfig, state: dict[str, Tensor], path: Path) -> None:
    """The saved scale map and mask must be the ones our patch_nums imply (equal L is not enough)."""
    expected = {"lvl_1L": scale_levels(config.patch_nums), "attn_bias_for_masking": block_causal_bias(config.patch_nums)}
    for key, value in expected.items():
        if key in state and state[key].shape == value.shape and not torch.equal(state[key].to(value.dtype), value):
            raise CheckpointError(f"{path}: '{key}' does not match patch_nums={config.patch_nums}; the checkpoint "
                                  "was trained with other patch_nums")


def build_vqvae(config: VQVAEConfig, checkpoint: Path | None = None) -> VQVAE:
    """The ``var-vqvae`` tokenizer factory (``vae_ch160v4096z32.pth`` with the defaults)."""
    if checkpoint is None:
        return VQVAE(config)
    state = read_state(checkpoint, VQVAE_WRAPPERS)
    hits_SV = state.get("quantize.ema_vocab_hit_SV")
    num_scales = len(config.v_patch_nums)
    if hits_SV is not None and hits_SV.ndim == 2 and hits_SV.shape[0] != num_scales:
        # Official load_state_dict: usage statistics of another scale count are replaced, not an error.
        state["quantize.ema_vocab_hit_SV"] = torch.zeros(num_scales, hits_SV.shape[1])
    return load_into_meta(lambda: VQVAE(config), state, checkpoint, _describe_vqvae).eval()


def _describe_vqvae(state: dict[str, Tensor]) -> str | None:
    if "quantize.embedding.weight" in state and "encoder.conv_in.weight" in state:
        V, Cv = state["quantize.embedding.weight"].shape
        ch = state["encoder.conv_in.weight"].shape[0]
        return f"a VQVAE with vocab_size={V}, z_channels={Cv}, ch={ch}"
    return describe_checkpoint(state)
