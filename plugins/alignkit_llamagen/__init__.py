"""LlamaGen (class-conditional GPT) backbone and its VQ tokenizer, official checkpoints in and out.

Registered as backbone ``llamagen`` (presets ``llamagen-B`` … ``llamagen-7B``, 384 px) and tokenizer
``llamagen-vq`` (presets ``llamagen-vq-16``, ``llamagen-vq-8``)::

    policy = alignkit.load_policy("llamagen-L", checkpoint="c2i_L_384.pt")
    tokens_BL = policy.generate(labels_B, guidance=3.0)          # official cfg_scale 4.0
    vq = alignkit.load_tokenizer("llamagen-vq-16", checkpoint="vq_ds16_c2i.pt")
    images = vq.decode(tokens_BL)
"""

from __future__ import annotations

import os

import torch

from alignkit import BackboneSpec, Tokenizer, TokenizerSpec, hookimpl
from alignkit_llamagen.config import GPT_PRESETS, VQ_PRESETS, GPTConfig, VQConfig
from alignkit_llamagen.io import load_gpt_weights, load_vq_weights
from alignkit_llamagen.model import LlamaGenGPT
from alignkit_llamagen.vq import LlamaGenVQ

__all__ = ["GPTConfig", "LlamaGenGPT", "LlamaGenVQ", "VQConfig", "build_policy", "build_tokenizer"]


def build_policy(config: GPTConfig, checkpoint: str | os.PathLike | None = None,
                 tokenizer: Tokenizer | str | os.PathLike | None = None) -> LlamaGenGPT:
    """A LlamaGen GPT, randomly initialised (official init) or with an official checkpoint's weights.

    ``tokenizer`` is accepted for the backbone interface and unused: LlamaGen embeds token ids itself.
    With a checkpoint the model is built on the meta device and takes the file's tensors, so a 3B model
    needs neither a random init nor a second copy of its weights.
    """
    if checkpoint is None:
        return LlamaGenGPT(config)
    with torch.device("meta"):
        model = LlamaGenGPT(config)
    load_gpt_weights(model, checkpoint)
    return model


def build_tokenizer(config: VQConfig, checkpoint: str | os.PathLike | None = None) -> LlamaGenVQ:
    """A frozen VQ tokenizer in eval mode, with an official checkpoint's weights when given."""
    if checkpoint is None:
        model = LlamaGenVQ(config)
    else:
        with torch.device("meta"):
            model = LlamaGenVQ(config)
        load_vq_weights(model, checkpoint)
    return model.eval().requires_grad_(False)


@hookimpl
def alignkit_register_backbones():
    return [BackboneSpec("llamagen", build_policy, GPTConfig,
                         "LlamaGen class-conditional GPT (Sun et al. 2024): 2D RoPE, KV-cached CFG sampling",
                         presets=GPT_PRESETS)]


@hookimpl
def alignkit_register_tokenizers():
    return [TokenizerSpec("llamagen-vq", build_tokenizer, VQConfig,
                          "LlamaGen VQ image tokenizer (VQ-16 / VQ-8, 16384 x 8 L2-normalised codebook)",
                          presets=VQ_PRESETS)]
