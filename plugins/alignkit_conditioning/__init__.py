"""Test-time λ (the CCA paper's Appendix E): one model conditioned on λ instead of one model per λ.
The layer both built-in backbones add to their class embedding (GFT's β-input variant reuses it with
λ = 1/β); a built-in plugin package only so that third-party backbones can import it too.

During training every row draws its own λ log-uniformly from a range; the backbone embeds log λ the
way DiT embeds diffusion timesteps (sinusoidal features, then a two-layer MLP) and adds the result
to the class embedding. At sampling time the user picks λ, and so the trade-off between fidelity
and diversity, without retraining.

The MLP's last layer starts at zero, so a λ-conditioned model built from a pretrained checkpoint
computes exactly what the checkpoint computes until training moves it: policy and reference agree
at step 0, as CCA requires.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from alignkit.errors import AlignkitError

LOG_LAMBDA_SCALE = 100.0
"""log λ is multiplied by this before the sinusoids: λ in [1, 10⁴] spans [0, 921], the range of the
diffusion timesteps DiT's embedding was designed for."""


def sinusoidal_features(t_B: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """DiT's timestep features: ``[cos(t·f_k), sin(t·f_k)]`` with ``f_k = max_period^(-k/half)``."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t_B.device) / half)
    angles = t_B.float()[:, None] * freqs[None]
    features = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
    return torch.cat([features, torch.zeros_like(features[:, :1])], dim=-1) if dim % 2 else features


class LambdaEmbedder(nn.Module):
    """log λ → sinusoidal features → Linear → SiLU → Linear (zero-initialised) → a ``dim`` vector."""

    def __init__(self, dim: int, frequency_dim: int = 256):
        super().__init__()
        self.frequency_dim = frequency_dim
        self.mlp = nn.Sequential(nn.Linear(frequency_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.mlp[0].weight, std=0.02)
        nn.init.zeros_(self.mlp[0].bias)
        nn.init.zeros_(self.mlp[2].weight)
        nn.init.zeros_(self.mlp[2].bias)

    def forward(self, lambda_B: Tensor) -> Tensor:
        if (lambda_B <= 0).any():
            raise ValueError("λ must be positive")
        features = sinusoidal_features(torch.log(lambda_B.float()) * LOG_LAMBDA_SCALE, self.frequency_dim)
        return self.mlp(features.to(self.mlp[0].weight.dtype))


def lambda_rows(value: float | Tensor | None, batch: int, device: torch.device) -> Tensor | None:
    """A per-row ``λ_B`` from a number or a tensor (``None`` stays ``None``)."""
    if value is None:
        return None
    lambda_B = torch.as_tensor(value, dtype=torch.float32, device=device).reshape(-1)
    return lambda_B.expand(batch).clone() if lambda_B.numel() == 1 else lambda_B


def log_uniform(batch: int, low: float, high: float, generator: torch.Generator) -> Tensor:
    """``batch`` draws of λ with log λ uniform on [log low, log high]."""
    u_B = torch.rand(batch, generator=generator)
    return torch.exp(math.log(low) + u_B * (math.log(high) - math.log(low)))


def complete_state(state: dict[str, Tensor], dim: int | None, prefix: str = "lambda_embed.") -> dict[str, Tensor]:
    """``state`` plus a fresh λ embedding of width ``dim`` when the model has one (``dim`` is not
    ``None``) and the checkpoint (a pretrained, unconditioned model) does not: fine-tuning with
    test-time λ starts from official weights."""
    if dim is None or any(key.startswith(prefix) for key in state):
        return state
    return {**state, **{prefix + key: value for key, value in LambdaEmbedder(dim).state_dict().items()}}


def add_lambda(cond: Tensor, embedder: LambdaEmbedder | None, lambda_B: Tensor | None, model: str) -> Tensor:
    """``cond`` (``(B, …, D)``, a class embedding) plus the λ embedding of ``lambda_B``, broadcast over
    its middle dimensions; ``cond`` itself without a λ. A model built without an embedder refuses one."""
    if lambda_B is None:
        return cond
    if embedder is None:
        raise AlignkitError(f"this {model} was built without lambda_conditioning: it takes no λ")
    e_BD = embedder(lambda_B.to(cond.device)).to(cond.dtype)
    return cond + e_BD.view(cond.shape[0], *([1] * (cond.ndim - 2)), -1)
