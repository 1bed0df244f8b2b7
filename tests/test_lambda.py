"""Test-time λ (CCA paper, Appendix E): one model conditioned on λ."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

import alignkit
from alignkit import PairLogps, Pairs
from alignkit_conditioning import LambdaEmbedder, log_uniform, sinusoidal_features
from alignkit.engine.trainer import train
from alignkit.errors import AlignkitError
from alignkit.recipe import load_recipe
from alignkit_objectives import CCA, CCAConfig

FIXTURES = Path(__file__).parent / "fixtures"
GPT_TINY = dict(dim=64, n_layer=2, n_head=4, multiple_of=32, vocab_size=64, block_size=16, num_classes=10,
                token_dropout_p=0.0, resid_dropout_p=0.0, ffn_dropout_p=0.0)


def test_sinusoidal_features_are_dits():
    t = torch.tensor([0.0, 3.0])
    features = sinusoidal_features(t, 8)
    freqs = torch.exp(-math.log(10_000) * torch.arange(4) / 4)
    torch.testing.assert_close(features[1], torch.cat([torch.cos(3 * freqs), torch.sin(3 * freqs)]))
    assert features.shape == (2, 8) and sinusoidal_features(t, 7).shape == (2, 7)


def test_a_lambda_conditioned_model_starts_as_the_pretrained_one():
    """Official weights load into a λ-conditioned model; its zero-initialised embedding changes nothing
    until training moves it, so policy and reference agree at step 0."""
    plain = alignkit.load_policy("llamagen", checkpoint=FIXTURES / "llamagen" / "gpt_tiny.pt", config=GPT_TINY)
    conditioned = alignkit.load_policy("llamagen", checkpoint=FIXTURES / "llamagen" / "gpt_tiny.pt",
                                       config={**GPT_TINY, "lambda_conditioning": True})
    assert conditioned.supports_lambda and not plain.supports_lambda
    tokens, labels = torch.randint(64, (3, 16)), torch.tensor([1, 4, 10])
    expected = plain.logits(tokens, labels)
    for lam in (0.1, 1.0, 1e4):
        got = conditioned(tokens, labels, lambda_B=torch.full((3,), lam))
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
    with torch.no_grad():  # once trained, λ matters
        conditioned.lambda_embed.mlp[2].weight.normal_()
    assert not torch.allclose(conditioned(tokens, labels, lambda_B=torch.full((3,), 0.1)),
                              conditioned(tokens, labels, lambda_B=torch.full((3,), 100.0)))
    with pytest.raises(AlignkitError, match="without lambda_conditioning"):
        plain(tokens, labels, lambda_B=torch.ones(3))


def test_var_lambda_conditioning_loads_official_weights():
    from var_support import TINY, VAE_TINY, VAR_TINY

    plain = alignkit.load_policy("var", checkpoint=VAR_TINY, config=TINY, tokenizer=VAE_TINY)
    conditioned = alignkit.load_policy("var", checkpoint=VAR_TINY, config={**TINY, "lambda_conditioning": True},
                                       tokenizer=VAE_TINY)
    tokens, labels = torch.randint(32, (2, 30)), torch.tensor([3, 1000])
    torch.testing.assert_close(conditioned(tokens, labels, lambda_B=torch.tensor([0.5, 50.0])),
                               plain.logits(tokens, labels), rtol=0, atol=0)
    assert conditioned.generate(labels, guidance=1.0, lambda_=3.0).shape == (2, 30)


def test_per_row_lambda_is_the_same_loss_row_by_row():
    torch.manual_seed(0)
    B = 6
    logps = dict(policy_pos_B=torch.randn(B), policy_neg_B=torch.randn(B), ref_pos_B=torch.randn(B),
                 ref_neg_B=torch.randn(B))
    labels = torch.arange(B)
    pairs = Pairs(labels, labels.roll(-1), torch.tensor([True, False, False, False, False, False]))
    objective = CCA(CCAConfig(beta=0.5, lambda_range=(0.1, 10.0)))
    lambda_B = torch.tensor([0.2, 0.5, 2.0, 3.0, 7.0, 0.1])
    loss = objective(PairLogps(pairs, **logps, conditions={"lambda_B": lambda_B})).loss
    rows = []
    for i, lam in enumerate(lambda_B.tolist()):  # every row under its own scalar λ
        one = {k: v[i:i + 1] for k, v in logps.items()}
        pair = Pairs(pairs.labels_pos_B[i:i + 1], pairs.labels_neg_B[i:i + 1], pairs.uncond_B[i:i + 1])
        rows.append(CCA(CCAConfig(beta=0.5, lambda_=lam))(PairLogps(pair, **one)).loss)
    torch.testing.assert_close(loss, torch.stack(rows).mean())


def test_lambda_is_drawn_log_uniformly():
    draws = log_uniform(20_000, 1.0, 1e4, torch.Generator().manual_seed(0))
    logs = torch.log10(draws)
    assert draws.min() >= 1 and draws.max() <= 1e4
    assert abs(logs.mean().item() - 2.0) < 0.05 and abs(logs.std().item() - 4 / math.sqrt(12)) < 0.03
    embedder = LambdaEmbedder(16)
    with pytest.raises(ValueError, match="positive"):
        embedder(torch.tensor([0.0]))


RECIPE = """
[model]
backbone = "llamagen"
dim = 48
n_layer = 2
n_head = 4
multiple_of = 32
vocab_size = 64
block_size = 16
num_classes = 4
token_dropout_p = 0.0
resid_dropout_p = 0.0
ffn_dropout_p = 0.0
{model}

[data]
name = "codes-npz"
path = "codes.npz"

[objective]
{objective}

[optim]
lr = {lr}
batch_size = 32
max_steps = {steps}
weight_decay = 0.0

[reference]
train_mode = false

[distributed]
precision = "fp32"

[output]
dir = "{out}"
save_every = 1000
log_every = 50
export = ["safetensors"]
"""


def window_rate(tokens: np.ndarray, label: int) -> float:
    """Share of tokens inside class ``label``'s window [16·label, 16·label + 8)."""
    return float(((tokens >= 16 * label) & (tokens < 16 * label + 8)).mean())


def test_inference_time_lambda_moves_samples_monotonically(tmp_path):
    """Class c's data puts 15% of its tokens in [16c, 16c + 8), the rest anywhere, so many sequences
    are ambiguous. Like guidance, CCA moves samples towards class-typical ones, the more the larger
    λ (the bench's λ sweep shows the same). One model trained over λ ∈ [0.03, 30] does it at
    sampling time: its share of class-window tokens rises with the λ it is given."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 1024)
    typical = rng.random((1024, 16)) < 0.15
    tokens = np.where(typical, 16 * labels[:, None] + rng.integers(0, 8, (1024, 16)), rng.integers(0, 64, (1024, 16)))
    np.savez(tmp_path / "codes.npz", tokens=tokens, labels=labels)
    (tmp_path / "base.toml").write_text(RECIPE.format(model="", objective='name = "mle"', lr=3e-3, steps=200,
                                                      out=tmp_path / "base"))
    train(load_recipe(tmp_path / "base.toml"), show_progress=False)
    (tmp_path / "cca.toml").write_text(RECIPE.format(
        model=f'lambda_conditioning = true\ncheckpoint = "{tmp_path / "base" / "final" / "model.safetensors"}"',
        objective='name = "cca"\nbeta = 0.2\nlambda_range = [0.03, 30.0]', lr=2e-3, steps=300, out=tmp_path / "cca"))
    train(load_recipe(tmp_path / "cca.toml"), show_progress=False)
    policy = alignkit.load_policy("llamagen", checkpoint=tmp_path / "cca" / "final" / "model.safetensors",
                                  config={**GPT_TINY, "dim": 48, "num_classes": 4, "lambda_conditioning": True})
    rates = []
    for lam in (0.03, 0.3, 3.0, 30.0):
        per_class = [window_rate(policy.generate(torch.full((128,), label), lambda_=lam,
                                                 generator=torch.Generator().manual_seed(label)).numpy(), label)
                     for label in range(4)]
        rates.append(float(np.mean(per_class)))
    assert rates[-1] > rates[0] + 0.1, rates  # a clear effect end to end
    assert sum(b >= a for a, b in zip(rates, rates[1:])) == 3, rates  # and a monotone trend
    assert len(set(rates)) > 1


def test_lambda_range_needs_a_lambda_conditioned_model(tmp_path):
    np.savez(tmp_path / "codes.npz", tokens=np.zeros((64, 16), dtype=np.int64), labels=np.zeros(64, dtype=np.int64))
    (tmp_path / "r.toml").write_text(RECIPE.format(model="", objective='name = "cca"\nlambda_range = [1.0, 100.0]',
                                                   lr=1e-3, steps=1, out=tmp_path / "run"))
    with pytest.raises(AlignkitError, match="conditions the policy on a per-row λ .*model.lambda_conditioning = true"):
        train(load_recipe(tmp_path / "r.toml"), show_progress=False)
    bad = tmp_path / "bad.toml"
    bad.write_text(RECIPE.format(model="", objective='name = "cca"\nlambda_range = [100.0, 1.0]', lr=1e-3, steps=1,
                                 out=tmp_path / "run"))
    with pytest.raises(alignkit.RecipeError, match="lambda_range must be"):
        load_recipe(bad)
