"""VAR (next-scale prediction) backbone and its multi-scale VQVAE, official checkpoints in and out.

    policy = alignkit.load_policy("var-d16", checkpoint="var_d16.pth", tokenizer="vae_ch160v4096z32.pth")
    tokens_BL = policy.generate(labels_B, guidance=0.0)           # guidance-free (CCA)
    images = policy.generate_images(labels_B, vqvae, guidance=1.5, more_smooth=True)
"""

from alignkit import BackboneSpec, TokenizerSpec, hookimpl

from alignkit_var.config import VAR_PRESETS, VQVAE_PRESETS, VARConfig, VQVAEConfig
from alignkit_var.generate import Stage, sample_stages
from alignkit_var.io import build_var, build_vqvae, describe_checkpoint
from alignkit_var.model import VAR
from alignkit_var.quant import MultiScaleQuantizer, phi_index_per_scale
from alignkit_var.vqvae import VQVAE

__all__ = ["VAR", "VARConfig", "VQVAE", "VQVAEConfig", "MultiScaleQuantizer", "Stage", "build_var", "build_vqvae",
           "describe_checkpoint", "phi_index_per_scale", "sample_stages"]


@hookimpl
def alignkit_register_backbones():
    return [BackboneSpec("var", build_var, VARConfig, "VAR next-scale prediction transformer (d16–d30 at 256 px, d36 at 512 px)",
                         presets=VAR_PRESETS, tokenizer="var-vqvae")]


@hookimpl
def alignkit_register_tokenizers():
    return [TokenizerSpec("var-vqvae", build_vqvae, VQVAEConfig, "VAR's multi-scale residual VQVAE (vae_ch160v4096z32)",
                          presets=VQVAE_PRESETS)]
