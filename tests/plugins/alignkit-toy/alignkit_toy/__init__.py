"""A toy class-conditional AR backbone (a GRU), its pixel tokenizer and a pixel feature extractor."""

from __future__ import annotations

import numpy as np
import torch
from pydantic import Field
from torch import Tensor, nn

from alignkit import (BackboneSpec, ComponentConfig, FeatureExtractor, FeatureExtractorSpec, ModelShape, PolicyModel,
                      SamplingOptions, Tokenizer, TokenizerSpec, hookimpl)
from alignkit.checkpoints import load_strict, read_weights_file, unwrap_state_dict
from alignkit.sample.tokens import sample_tokens


class ToyConfig(ComponentConfig):
    num_classes: int = Field(4, ge=1)
    levels: int = Field(8, ge=2, description="vocabulary: grey levels per 2×2 patch")
    grid: int = Field(4, ge=1, description="tokens per side")
    width: int = Field(32, ge=1)


class ToySampling(SamplingOptions):
    """Temperature and top-k only (no nucleus, no schedules worth having)."""


class ToyGRU(PolicyModel):
    sampling_options = ToySampling

    def __init__(self, config: ToyConfig):
        super().__init__()
        self.config = config
        self.num_classes, self.vocab_size, self.seq_len = config.num_classes, config.levels, config.grid ** 2
        self.classes = nn.Embedding(config.num_classes + 1, config.width)
        self.tokens = nn.Embedding(config.levels, config.width)
        self.gru = nn.GRU(config.width, config.width, batch_first=True)
        self.head = nn.Linear(config.width, config.levels)

    def logits(self, tokens_BL: Tensor, labels_B: Tensor, lambda_B: Tensor | None = None) -> Tensor:
        inputs_BLD = torch.cat([self.classes(labels_B)[:, None], self.tokens(tokens_BL[:, :-1])], dim=1)
        return self.head(self.gru(inputs_BLD)[0]).float()

    @torch.no_grad()
    def generate(self, labels_B: Tensor, *, guidance: float = 0.0, generator: torch.Generator | None = None,
                 temperature: float = 1.0, top_k: int = 0, top_p: float = 0.0, schedule: str = "constant",
                 greedy: bool = False, lambda_: float | None = None) -> Tensor:
        B = labels_B.shape[0]
        rows = torch.cat([labels_B, torch.full_like(labels_B, self.null_label)]) if guidance else labels_B
        x_R1D, state, out = self.classes(rows)[:, None], None, []
        for _ in range(self.seq_len):
            h_R1D, state = self.gru(x_R1D, state)
            logits_RV = self.head(h_R1D[:, 0]).float()
            logits_BV = logits_RV[:B] + guidance * (logits_RV[:B] - logits_RV[B:]) if guidance else logits_RV
            token_B = sample_tokens(logits_BV, temperature=temperature, top_k=top_k, top_p=top_p,
                                    generator=generator, greedy=greedy)
            out.append(token_B)
            x_R1D = self.tokens(torch.cat([token_B, token_B]) if guidance else token_B)[:, None]
        return torch.stack(out, dim=1)

    def shape(self) -> ModelShape:
        w = self.config.width
        return ModelShape(layers=1, width=w, heads=1, ffn_width=3 * w, seq_len=self.seq_len, vocab=self.vocab_size,
                          block_saved_fp32=0, block_saved_compute=8 * w)

    def official_state_dict(self, state: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
        return dict(self.state_dict() if state is None else state)


def build_toy(config: ToyConfig, checkpoint=None, tokenizer=None) -> ToyGRU:
    model = ToyGRU(config)
    if checkpoint is not None:
        load_strict(model, unwrap_state_dict(read_weights_file(checkpoint), checkpoint), checkpoint)
    return model


class PixelsConfig(ComponentConfig):
    levels: int = Field(8, ge=2)
    grid: int = Field(4, ge=1)


class PixelTokenizer(Tokenizer):
    """Grey images of 2·grid pixels: one token per 2×2 patch, its mean quantised to ``levels``."""

    channels = 1

    def __init__(self, config: PixelsConfig):
        super().__init__()
        self.vocab_size, self.seq_len, self.image_size = config.levels, config.grid ** 2, 2 * config.grid

    def encode(self, images_B3HW: Tensor) -> Tensor:
        means_Bgg = nn.functional.avg_pool2d(images_B3HW.float().mean(1, keepdim=True), 2)[:, 0]
        levels = ((means_Bgg + 1) / 2 * self.vocab_size).long().clamp(0, self.vocab_size - 1)
        return levels.flatten(1)

    def decode(self, tokens_BL: Tensor) -> Tensor:
        grid = int(self.seq_len ** 0.5)
        grey_Bgg = (tokens_BL.float() + 0.5) / self.vocab_size * 2 - 1
        return grey_Bgg.view(-1, 1, grid, grid).repeat_interleave(2, 2).repeat_interleave(2, 3)


class PixelFeatures(FeatureExtractor):
    """Four features: the mean grey level of each image quadrant."""

    name, feature_dim = "toy-pixels", 4

    def extract(self, images_NHWC: np.ndarray) -> dict[str, np.ndarray]:
        grey = images_NHWC.astype(np.float32).mean(-1)
        h, w = grey.shape[1] // 2, grey.shape[2] // 2
        quadrants = [grey[:, :h, :w], grey[:, :h, w:], grey[:, h:, :w], grey[:, h:, w:]]
        return {"pool": np.stack([q.mean((1, 2)) for q in quadrants], axis=1)}


@hookimpl
def alignkit_register_backbones():
    return [BackboneSpec("gru", build_toy, ToyConfig, "a GRU over pixel tokens (third-party test backbone)")]


@hookimpl
def alignkit_register_tokenizers():
    return [TokenizerSpec("toy-pixels", lambda config, checkpoint=None: PixelTokenizer(config), PixelsConfig,
                          "2×2 grey patches quantised to a few levels", needs_checkpoint=False)]


@hookimpl
def alignkit_register_feature_extractors():
    return [FeatureExtractorSpec("toy-pixels", lambda config: PixelFeatures(), summary="quadrant means")]
