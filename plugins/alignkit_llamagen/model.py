"""The LlamaGen class-conditional GPT as an alignkit ``PolicyModel``."""

from __future__ import annotations

import os
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from alignkit import ModelShape, PolicyModel, SamplingOptions
from alignkit.checkpoints import save_safetensors
from alignkit.recompute import run_block
from alignkit_conditioning import LambdaEmbedder, add_lambda
from alignkit.sample.tokens import SAMPLER_HELP, Sampler, Schedule
from alignkit_llamagen.config import GPTConfig
from alignkit_llamagen.generate import generate_tokens
from alignkit_llamagen.io import official_checkpoint, save_gpt_official
from alignkit_llamagen.layers import ClassEmbedding, KVCache, RMSNorm, TransformerBlock
from alignkit_llamagen.rope import precompute_freqs_cis_2d, rotation_tables


class LlamaGenSampling(SamplingOptions):
    """LlamaGen's sampler (``generate.generate_tokens``): constant guidance, filters off by default."""

    top_p: float = Field(1.0, ge=0, le=1, description="nucleus filter in (0, 1); 0 and 1 are off")
    cfg_interval: int = Field(-1, description="guide only tokens up to this index (-1 = all), as the official sampler")
    sampler: Sampler = Field("official", description=SAMPLER_HELP)


class LlamaGenGPT(PolicyModel):
    """LlamaGen's c2i GPT: ``[class token, image tokens]`` through pre-norm Llama blocks with 2D RoPE.

    Sequence position 0 is the class token and predicts image token 0; position ``1 + p`` holds
    image token ``p`` (RoPE row ``1 + p``, its own grid cell) and predicts token ``p + 1``. Module
    names follow the official code, so ``state_dict()`` has exactly the official keys.
    """

    sampling_options: ClassVar[type[SamplingOptions]] = LlamaGenSampling

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.num_classes, self.vocab_size, self.seq_len = config.num_classes, config.vocab_size, config.block_size
        self.cls_embedding = ClassEmbedding(config.num_classes, config.dim)
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.dim)
        self.tok_dropout = nn.Dropout(config.token_dropout_p)
        rates = torch.linspace(0, config.drop_path_rate, config.n_layer, device="cpu").tolist()
        self.layers = nn.ModuleList(TransformerBlock(config, rate) for rate in rates)
        self.norm = RMSNorm(config.dim, eps=config.norm_eps)
        self.output = nn.Linear(config.dim, config.vocab_size, bias=False)
        self.lambda_embed = LambdaEmbedder(config.dim) if config.lambda_conditioning else None
        # Plain attributes, as in the official code: not in the state_dict and never cast to bf16.
        self.freqs_cis = precompute_freqs_cis_2d(config.grid_size, config.head_dim, config.rope_base,
                                                 config.cls_token_num)
        self.rope_cos, self.rope_sin = rotation_tables(self.freqs_cis)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The official init: N(0, initializer_range) for every matrix and table, a zero output head,
        unit RMSNorm weights."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)
            elif isinstance(module, RMSNorm):
                nn.init.ones_(module.weight)
        nn.init.zeros_(self.output.weight)
        if self.lambda_embed is not None:
            self.lambda_embed.reset_parameters()  # zero output: the model starts as the unconditioned one

    @property
    def supports_lambda(self) -> bool:
        return self.lambda_embed is not None

    def shape(self) -> ModelShape:
        """Per block and position, counted tensor by tensor (and checked against ``saved_tensors_hooks``
        in the tests): each RMSNorm saves its fp32 input (2 × D in fp32) and, in the compute dtype, the
        normalised and the weighted activations (4D); attention saves the fused qkv output (3D), rotated
        q and k (2D), the SDPA output and its transposed copy (2D); a dropout mask (D, in the compute
        dtype on the CPU; a bool on GPUs); SwiGLU saves the w1 and w3 outputs, the SiLU output and their
        product (4F). Norm statistics and SDPA's log-sum-exp are left out; a fused SDPA kernel (no S × S
        matrix) is assumed. Selective checkpointing keeps the block's input, the wqkv, SDPA, wo, w1, w3
        and w2 outputs (7D + 2F)."""
        c = self.config
        return ModelShape(layers=c.n_layer, width=c.dim, heads=c.n_head, ffn_width=c.ffn_hidden_dim,
                          seq_len=c.block_size, vocab=c.vocab_size, block_saved_fp32=2 * c.dim,
                          block_saved_compute=12 * c.dim + 4 * c.ffn_hidden_dim,
                          checkpointing=c.activation_checkpointing,
                          block_kept_selective=7 * c.dim + 2 * c.ffn_hidden_dim)

    def _rope(self, start: int, stop: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """The rotation tables of positions ``start .. stop - 1`` on ``device``."""
        if self.rope_cos.device != device:
            self.rope_cos, self.rope_sin = self.rope_cos.to(device), self.rope_sin.to(device)
        return self.rope_cos[start:stop], self.rope_sin[start:stop]

    # ------------------------------------------------------------------ forward passes

    def class_tokens(self, labels_B: Tensor, lambda_B: Tensor | None = None) -> Tensor:
        """The class embeddings ``(B, 1, D)``, plus the λ embedding for a λ-conditioned model."""
        return add_lambda(self.cls_embedding(labels_B), self.lambda_embed, lambda_B, "LlamaGen")

    def full_logits(self, tokens_BS: Tensor, labels_B: Tensor, lambda_B: Tensor | None = None) -> Tensor:
        """Logits ``(B, 1 + S, V)`` float32 at every position of ``[class token, tokens_BS]``.

        This is the official training-mode forward (dropout and drop-path active only in ``train()``);
        with ``S = block_size`` it also equals the official full-length eval forward. (``forward`` is
        ``logits``, as for every ``PolicyModel``.)
        """
        return self.output(self.full_features(tokens_BS, labels_B, lambda_B)).float()

    def full_features(self, tokens_BS: Tensor, labels_B: Tensor, lambda_B: Tensor | None = None) -> Tensor:
        """The normed hidden states ``(B, 1 + S, D)`` that ``output`` projects to ``full_logits``."""
        S = tokens_BS.shape[1] + self.config.cls_token_num
        if S > self.freqs_cis.shape[0]:
            raise ValueError(f"{tokens_BS.shape[1]} input tokens exceed block_size {self.config.block_size}")
        h_BSD = self.tok_dropout(torch.cat([self.class_tokens(labels_B, lambda_B), self.tok_embeddings(tokens_BS)],
                                           dim=1))
        rope = self._rope(0, S, h_BSD.device)
        mode = self.config.activation_checkpointing if self.training else False
        for layer in self.layers:
            h_BSD = run_block(layer, h_BSD, rope, mode=mode)
        return self.norm(h_BSD)

    def logits(self, tokens_BL: Tensor, labels_B: Tensor, lambda_B: Tensor | None = None) -> Tensor:
        """Teacher forcing on ``[cls, z_0 .. z_{L-2}]``: ``logits_BLV[:, i]`` predicts ``tokens_BL[:, i]``."""
        return self.full_logits(tokens_BL[:, :-1], labels_B, lambda_B)

    def features(self, tokens_BL: Tensor, labels_B: Tensor, lambda_B: Tensor | None = None) -> Tensor:
        return self.full_features(tokens_BL[:, :-1], labels_B, lambda_B)

    def output_projection(self) -> nn.Linear:
        return self.output

    def decode_step(self, h_B1D: Tensor, cache: KVCache) -> Tensor:
        """Run the embeddings of the next position (class token or previous image token) through the
        cached layers; its float32 logits ``(B, V)``."""
        if h_B1D.shape[1] != 1:
            raise ValueError(f"decode_step feeds one position at a time, got {h_B1D.shape[1]}")
        rope = self._rope(cache.length, cache.length + 1, h_B1D.device)
        h_B1D = self.tok_dropout(h_B1D)
        for i, layer in enumerate(self.layers):
            h_B1D = layer(h_B1D, rope, cache, i)
        cache.advance(1)
        return self.output(self.norm(h_B1D[:, 0])).float()

    # ------------------------------------------------------------------ sampling

    def generate(self, labels_B: Tensor, *, guidance: float = 0.0, top_k: int = 0, top_p: float = 1.0,
                 temperature: float = 1.0, cfg_interval: int = -1, generator: torch.Generator | None = None,
                 schedule: Schedule = "constant", greedy: bool = False, lambda_: float | None = None,
                 sampler: Sampler = "official") -> Tensor:
        """Sample ``tokens_BL`` (int64, raster order) with a KV cache; see ``generate.generate_tokens``."""
        return generate_tokens(self, labels_B, guidance=guidance, top_k=top_k, top_p=top_p,
                               temperature=temperature, cfg_interval=cfg_interval, generator=generator,
                               schedule=schedule, greedy=greedy, lambda_=lambda_, sampler=sampler)

    # ------------------------------------------------------------------ checkpoints

    def official_state_dict(self, state: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
        """The module's keys are the official ones, so this is ``state`` (default: ``state_dict()``) as is."""
        return dict(self.state_dict() if state is None else state)

    def official_checkpoint(self, state_dict: dict[str, Tensor]) -> dict[str, Any]:
        """``{"model": sd}`` for B/L/XL-like sizes, the raw state_dict for the FSDP-trained sizes
        (XXL, XXXL, 1B, 3B, 7B): what the official samplers expect (``io.official_layout``)."""
        return official_checkpoint(self.config, state_dict)

    def save_official(self, path: str | os.PathLike, layout: Literal["auto", "wrapped", "raw"] = "auto") -> None:
        """Write the official checkpoint, atomically; ``layout`` overrides the size's official one."""
        save_gpt_official(self, path, layout)

    def save_safetensors(self, path: str | os.PathLike) -> None:
        """The official keys as a safetensors file (with the config in its metadata)."""
        save_safetensors(self.official_state_dict(), path,
                         metadata={"format": "pt", "alignkit_config": self.config.model_dump_json()})
