"""VAR (Tian et al. 2024, next-scale prediction) as an alignkit ``PolicyModel`` (``models/var.py``).

The sequence is the token pyramid, scale after scale: L = Σ pn² positions (680 at 256 px). Scale
si+1 is predicted from the area-downsampled reconstruction of scales 0..si (``MultiScaleQuantizer.
var_input``), all its positions at once, under a block-causal mask (full attention within a scale
and to every earlier scale). Position 0 is the class embedding plus ``pos_start``; the class
embedding is also the AdaLN condition of every block and of the head.

The VQVAE quantiser that builds the teacher-forcing input is frozen and not part of the policy's
parameters or state_dict (the official model holds it in a tuple); it follows the policy across
devices and stays fp32.
"""

from __future__ import annotations

import itertools
import math
from collections import OrderedDict
from typing import Any, ClassVar

import torch
from pydantic import Field
from torch import Tensor, nn

from alignkit import AlignkitError, ModelShape, PolicyModel, SamplingOptions, Tokenizer
from alignkit_conditioning import LambdaEmbedder, add_lambda
from alignkit.recompute import run_block
from alignkit.sample.tokens import SAMPLER_HELP, Sampler, Schedule

from alignkit_var.blocks import AdaLNBeforeHead, AdaLNSelfAttn, KVCache, SharedAdaLin
from alignkit_var.config import VARConfig
from alignkit_var.generate import generate as next_scale_generate
from alignkit_var.quant import MultiScaleQuantizer

NO_DECAY_KEYS = ("cls_token", "start_token", "task_token", "cfg_uncond", "pos_embed", "pos_1LC", "pos_start",
                 "start_pos", "lvl_embed", "gamma", "beta", "ada_gss", "moe_bias", "scale_mul")
"""Name fragments the official VAR trainer excludes from weight decay (``utils/lr_control.py``)."""


def scale_levels(patch_nums: tuple[int, ...]) -> Tensor:
    """``lvl_1L``: the scale index of every position, (1, L) int64."""
    return torch.cat([torch.full((pn * pn,), si) for si, pn in enumerate(patch_nums)]).view(1, -1)


def block_causal_bias(patch_nums: tuple[int, ...]) -> Tensor:
    """``attn_bias_for_masking`` (1, 1, L, L): 0 where the key's scale is not after the query's, else −inf."""
    lvl_L = scale_levels(patch_nums)[0]
    return torch.where(lvl_L[:, None] >= lvl_L[None, :], 0.0, -torch.inf).view(1, 1, lvl_L.numel(), lvl_L.numel())


class VARSampling(SamplingOptions):
    """VAR's sampler (``generate.sample_stages``): guidance on VAR's linear ramp, filters off by default."""

    schedule: Schedule = Field("linear", description="guidance over the scales: VAR's linear ramp (CFGv2) or constant")
    more_smooth: bool = Field(False, description="Gumbel-softmax smoothing of the latent (VAR's visual-quality "
                              "setting); the image is then decoded from the latent, not from the tokens")
    sampler: Sampler = Field("official", description=SAMPLER_HELP)


class VAR(PolicyModel):
    """The VAR transformer; ``state_dict()`` holds exactly the official keys, buffers included."""

    sampling_options: ClassVar[type[SamplingOptions]] = VARSampling
    uint8_conversion: ClassVar[str] = "truncate"  # VAR_sample.py: x.mul_(255) after (x + 1) / 2, astype(uint8)

    def __init__(self, config: VARConfig, quantizer: MultiScaleQuantizer):
        super().__init__()
        if (quantizer.vocab_size, quantizer.Cvae, quantizer.patch_nums) != (config.V, config.Cvae, config.patch_nums):
            raise ValueError(f"the quantiser (V={quantizer.vocab_size}, Cvae={quantizer.Cvae}, patch_nums="
                             f"{quantizer.patch_nums}) does not match the VAR config (V={config.V}, "
                             f"Cvae={config.Cvae}, patch_nums={config.patch_nums})")
        self.config = config
        self.num_classes, self.vocab_size = config.num_classes, config.V
        self.patch_nums = config.patch_nums
        self.seq_len = sum(pn * pn for pn in self.patch_nums)
        self.first_l = self.patch_nums[0] ** 2
        self.scale_ends = tuple(itertools.accumulate(pn * pn for pn in self.patch_nums))
        C, self.Cvae = config.width, config.Cvae
        self._quantizer = (quantizer.requires_grad_(False).eval(),)  # a tuple hides it from the module tree

        std = math.sqrt(1 / C / 3)
        self.pos_start = nn.Parameter(nn.init.trunc_normal_(torch.empty(1, self.first_l, C), std=std))
        self.pos_1LC = nn.Parameter(nn.init.trunc_normal_(torch.empty(1, self.seq_len, C), std=std))
        self.register_buffer("lvl_1L", scale_levels(self.patch_nums))
        self.register_buffer("attn_bias_for_masking", block_causal_bias(self.patch_nums))
        self.word_embed = nn.Linear(self.Cvae, C)
        self.class_emb = nn.Embedding(self.num_classes + 1, C)
        self.lvl_embed = nn.Embedding(len(self.patch_nums), C)
        self.shared_ada_lin = (nn.Sequential(nn.SiLU(), SharedAdaLin(C, 6 * C)) if config.shared_aln
                               else nn.Identity())
        # float32 rates as the official list comprehension over torch.linspace; on the CPU even when
        # the model is built on the meta device
        drop_path_rates = torch.linspace(0, config.max_drop_path, config.depth, device="cpu").tolist()
        self.blocks = nn.ModuleList(
            AdaLNSelfAttn(C, C, config.heads, config.mlp_ratio, config.drop_rate, config.attn_drop_rate,
                          rate, config.norm_eps, config.shared_aln, config.attn_l2_norm)
            for rate in drop_path_rates)
        self.head_nm = AdaLNBeforeHead(C, C, config.norm_eps)
        self.head = nn.Linear(C, self.vocab_size)
        self.lambda_embed = LambdaEmbedder(C) if config.lambda_conditioning else None

    @property
    def quantizer(self) -> MultiScaleQuantizer:
        return self._quantizer[0]

    @property
    def supports_lambda(self) -> bool:
        return self.lambda_embed is not None

    def shape(self) -> ModelShape:
        """Per block and position, counted tensor by tensor (and checked against ``saved_tensors_hooks``
        in the tests), all in the compute dtype: each AdaLN saves the LayerNorm input, output and
        modulated copy (2 × 3D); attention the qkv output (3D), normalised and scaled q and k (3D), the
        SDPA output and its copy (2D), the branch before its gate (D); the FFN its output before the
        gate (D) and the fc1 and GELU outputs (2F). A fused SDPA kernel (no L × L matrix) is assumed.
        Selective checkpointing keeps the block's input, the qkv, SDPA, proj, fc1 and fc2 outputs (7D + F)."""
        c, ffn = self.config, round(self.config.width * self.config.mlp_ratio)
        return ModelShape(layers=c.depth, width=c.width, heads=c.heads, ffn_width=ffn, seq_len=self.seq_len,
                          vocab=c.V, block_saved_fp32=0, block_saved_compute=15 * c.width + 2 * ffn,
                          checkpointing=c.activation_checkpointing, block_kept_selective=7 * c.width + ffn)

    def _apply(self, fn: Any, recurse: bool = True) -> VAR:
        # Follow .to()/.cuda()/… with the quantiser too, but only its device: the official VQVAE is
        # always fp32, whatever precision the transformer trains in.
        super()._apply(fn, recurse)
        device = fn(torch.empty(0, device=self.quantizer.device)).device
        self.quantizer.to(device)
        return self

    # ------------------------------------------------------------------ initialisation

    @torch.no_grad()
    def init_weights(self) -> None:
        """``VAR.init_weights`` with ``build_vae_var``'s arguments from the config."""
        cfg, C = self.config, self.config.width
        std = cfg.init_std if cfg.init_std >= 0 else math.sqrt(1 / C / 3)
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.trunc_normal_(module.weight, std=std)
                if getattr(module, "bias", None) is not None:
                    module.bias.zero_()
        if cfg.init_head >= 0:
            self.head.weight.mul_(cfg.init_head)
            self.head.bias.zero_()
        self.head_nm.ada_lin[-1].weight.mul_(cfg.init_adaln)
        self.head_nm.ada_lin[-1].bias.zero_()
        for block in self.blocks:
            block.attn.proj.weight.div_(math.sqrt(2 * cfg.depth))
            block.ffn.fc2.weight.div_(math.sqrt(2 * cfg.depth))
            if block.shared_aln:
                block.ada_gss[:, :, 2:].mul_(cfg.init_adaln)
                block.ada_gss[:, :, :2].mul_(cfg.init_adaln_gamma)
            else:
                block.ada_lin[-1].weight[2 * C:].mul_(cfg.init_adaln)
                block.ada_lin[-1].weight[:2 * C].mul_(cfg.init_adaln_gamma)
                block.ada_lin[-1].bias.zero_()
        if self.lambda_embed is not None:
            self.lambda_embed.reset_parameters()  # zero output: the model starts as the unconditioned one

    # ------------------------------------------------------------------ teacher forcing

    def logits(self, tokens_BL: Tensor, labels_B: Tensor, lambda_B: Tensor | None = None) -> Tensor:
        """``logits_BLV`` (fp32) of every position given the concatenated multi-scale ids."""
        return self.forward_var_input(labels_B, self.teacher_forcing_input(tokens_BL), lambda_B)

    def features(self, tokens_BL: Tensor, labels_B: Tensor, lambda_B: Tensor | None = None) -> Tensor:
        return self.forward_var_input(labels_B, self.teacher_forcing_input(tokens_BL), lambda_B, features=True)

    def output_projection(self) -> nn.Linear:
        return self.head

    def condition(self, labels_B: Tensor, lambda_B: Tensor | None = None) -> Tensor:
        """``cond_BD``: the class embedding (first token and AdaLN condition), plus the λ embedding
        of a λ-conditioned model."""
        return add_lambda(self.class_emb(labels_B), self.lambda_embed, lambda_B, "VAR")

    @torch.no_grad()
    def teacher_forcing_input(self, tokens_BL: Tensor) -> Tensor:
        """``x_BLCv_wo_first_l`` built by the frozen quantiser, once per distinct token row (CCA
        evaluates every image under two conditions)."""
        tokens_BL = tokens_BL.to(self.quantizer.device, torch.int64)
        if tokens_BL.shape[0] > 1:
            unique_BL, inverse_B = torch.unique(tokens_BL, dim=0, return_inverse=True)
            if unique_BL.shape[0] < tokens_BL.shape[0]:
                return self.quantizer.var_input(self.quantizer.split(unique_BL))[inverse_B]
        return self.quantizer.var_input(self.quantizer.split(tokens_BL))

    def forward_var_input(self, labels_B: Tensor, x_BLCv_wo_first_l: Tensor, lambda_B: Tensor | None = None,
                          features: bool = False) -> Tensor:
        """The official ``VAR.forward`` without label dropout: ``(B, ed, V)`` fp32 logits, where ``ed``
        is ``first_l`` plus the length of ``x_BLCv_wo_first_l`` (a prefix of whole scales); with
        ``features``, what ``head`` projects to them."""
        B, ed = labels_B.shape[0], self.first_l + x_BLCv_wo_first_l.shape[1]
        if ed not in self.scale_ends:
            raise ValueError(f"x_BLCv_wo_first_l covers {ed} positions, not a whole number of scales "
                             f"(scale ends: {self.scale_ends})")
        device_type = self.pos_1LC.device.type
        with torch.autocast(device_type, enabled=False):
            cond_BD = self.condition(labels_B, lambda_B)
            x_BLC = cond_BD.unsqueeze(1).expand(B, self.first_l, -1) + self.pos_start.expand(B, self.first_l, -1)
            if ed > self.first_l:
                x_BLC = torch.cat((x_BLC, self.embed_codes(x_BLCv_wo_first_l)), dim=1)
            x_BLC = x_BLC + (self.lvl_embed(self.lvl_1L[:, :ed].expand(B, -1)) + self.pos_1LC[:, :ed])
        # Blocks run in the autocast dtype when mixed precision is on (the official matmul-dtype probe).
        dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else x_BLC.dtype
        cond = self.shared_ada_lin(cond_BD).to(dtype)
        attn_bias = self.attn_bias_for_masking[:, :, :ed, :ed].to(dtype)
        x_BLC = self.run_blocks(x_BLC.to(dtype), cond, attn_bias)
        return self.head_features(x_BLC, cond_BD) if features else self.head_logits(x_BLC, cond_BD)

    def run_blocks(self, x_BLC: Tensor, cond: Tensor, attn_bias: Tensor | None,
                   caches: list[KVCache] | None = None) -> Tensor:
        mode = self.config.activation_checkpointing if self.training else False
        for i, block in enumerate(self.blocks):
            x_BLC = run_block(block, x_BLC, cond, attn_bias, caches[i] if caches is not None else None, mode=mode)
        return x_BLC

    def embed_codes(self, x_BlCv: Tensor) -> Tensor:
        """``word_embed`` of fp32 quantiser features, in the weights' dtype (bf16 under DeepSpeed)."""
        return self.word_embed(x_BlCv.to(self.word_embed.weight.dtype))

    def head_logits(self, x_BLC: Tensor, cond_BD: Tensor) -> Tensor:
        """fp32 logits; the final AdaLN runs in fp32 as officially, the head in the weights' dtype."""
        return self.head(self.head_features(x_BLC, cond_BD)).float()

    def head_features(self, x_BLC: Tensor, cond_BD: Tensor) -> Tensor:
        return self.head_nm(x_BLC.float(), cond_BD).to(self.head.weight.dtype)

    # ------------------------------------------------------------------ generation

    def generate(self, labels_B: Tensor, *, guidance: float = 0.0, generator: torch.Generator | None = None,
                 **options: Any) -> Tensor | tuple[Tensor, Tensor]:
        """Next-scale sampling; see ``alignkit_var.generate.generate`` for the options."""
        return next_scale_generate(self, labels_B, guidance=guidance, generator=generator, **options)

    def generate_images(self, labels_B: Tensor, tokenizer: Tokenizer, *, guidance: float = 0.0,
                        generator: torch.Generator | None = None, **options: Any) -> tuple[Tensor, Tensor]:
        """Sample and decode from the accumulated ``f_hat``, as VAR's official sampler does (the only
        correct decoding with ``more_smooth=True``, whose ``f_hat`` mixes codes softly)."""
        decode_fhat = getattr(tokenizer, "decode_fhat", None)
        if decode_fhat is None:
            raise AlignkitError(f"VAR decodes its sampled latent with a 'var-vqvae' tokenizer, not with "
                                f"{type(tokenizer).__name__}")
        tokens_BL, f_hat_BChw = self.generate(labels_B, guidance=guidance, generator=generator, return_fhat=True,
                                              **options)
        return tokens_BL, decode_fhat(f_hat_BChw.to(tokenizer.device))

    # ------------------------------------------------------------------ official layout

    def official_state_dict(self, state: dict[str, Tensor] | None = None) -> OrderedDict[str, Tensor]:
        """The module's keys are the official ones (buffers included), so this is ``state`` as is."""
        return OrderedDict(self.state_dict() if state is None else state)

    def official_checkpoint(self, state_dict: dict[str, Tensor]) -> OrderedDict[str, Tensor]:
        """A plain state_dict on the CPU, like ``var_d16.pth`` (what ``load_state_dict(strict=True)`` takes)."""
        return OrderedDict((k, v.detach().cpu()) for k, v in state_dict.items())

    def decays(self, name: str, param: nn.Parameter) -> bool:
        """The official VAR rule: no decay for vectors, biases and the embeddings/scales named in
        ``NO_DECAY_KEYS``; ``class_emb`` and every matrix decay."""
        return not (param.ndim == 1 or name.endswith("bias") or any(key in name for key in NO_DECAY_KEYS))
