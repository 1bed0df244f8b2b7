"""The fast token draw (``sampler="inverse_cdf"``) samples the official draw's distribution: chi-square
against the exact filtered softmax, with and without top-k/top-p, and through both backbones' samplers."""

import numpy as np
import pytest
import torch
from scipy.stats import chi2_contingency, chisquare

import alignkit
from alignkit.sample.tokens import filter_logits, inverse_cdf_draw, sample_tokens

from var_support import tiny

N = 40_000


def expected_probs(logits_V: torch.Tensor, top_k: int, top_p: float) -> np.ndarray:
    return torch.softmax(filter_logits(logits_V[None].double(), top_k, top_p), -1)[0].numpy()


def chi_square_p(draws: torch.Tensor, probs: np.ndarray) -> float:
    counts = np.bincount(draws.numpy(), minlength=probs.size)
    support = probs > 0
    assert counts[~support].sum() == 0, "a filtered-out token was drawn"
    return chisquare(counts[support], probs[support] * counts.sum()).pvalue


@pytest.mark.parametrize("top_k, top_p", [(0, 0.0), (5, 0.0), (0, 0.8), (6, 0.9)])
def test_inverse_cdf_draws_the_filtered_softmax(top_k, top_p):
    torch.manual_seed(0)
    logits_V = torch.randn(12) * 1.5
    logits_NV = logits_V.expand(N, -1).contiguous()
    generator = torch.Generator().manual_seed(1)
    draws = sample_tokens(logits_NV, top_k=top_k, top_p=top_p, generator=generator, sampler="inverse_cdf")
    probs = expected_probs(logits_V, top_k, top_p)
    assert chi_square_p(draws, probs) > 1e-3
    # The test has power: the official draw passes, a slightly wrong distribution does not.
    official = sample_tokens(logits_NV, top_k=top_k, top_p=top_p, generator=generator)
    assert chi_square_p(official, probs) > 1e-3
    skewed = probs.copy()
    skewed[probs > 0] = np.roll(probs[probs > 0], 1)
    assert chi_square_p(draws, skewed) < 1e-6


def test_inverse_cdf_handles_extreme_weights_and_rejects_nan():
    logits_NV = torch.tensor([[0.0, -200.0, float("-inf"), -1e9]]).expand(1000, -1)
    assert (inverse_cdf_draw(logits_NV, torch.Generator().manual_seed(0)) == 0).all()
    tiny = torch.tensor([[-30.0, 0.0]]).expand(N, -1)  # p(0) ≈ 9e-14: never drawn in 40k
    assert (inverse_cdf_draw(tiny, torch.Generator().manual_seed(0)) == 1).all()
    with pytest.raises(RuntimeError, match="NaN"):
        inverse_cdf_draw(torch.tensor([[float("nan"), 0.0]]))


def test_official_stays_the_default_and_both_samplers_are_reproducible():
    logits_NV = torch.randn(64, 100, generator=torch.Generator().manual_seed(0))
    draw = lambda **kw: sample_tokens(logits_NV, generator=torch.Generator().manual_seed(3), top_k=20, **kw)  # noqa: E731
    torch.testing.assert_close(draw(), draw(sampler="official"))
    torch.testing.assert_close(draw(sampler="inverse_cdf"), draw(sampler="inverse_cdf"))


def test_backbones_sample_the_same_first_token_distribution_with_either_sampler():
    """Both samplers through LlamaGen's and VAR's samplers: the first token's (LlamaGen) or first
    scale's (VAR) marginal over many rows agrees between the draws (two-sample chi-square)."""
    torch.manual_seed(0)
    llamagen = alignkit.load_policy("llamagen", config=dict(dim=32, n_layer=1, n_head=2, multiple_of=32,
                                                            vocab_size=32, block_size=4, num_classes=3))
    torch.nn.init.normal_(llamagen.output.weight, std=0.5)
    var = tiny()  # the official fixture's weights, V = 32
    labels_B = torch.zeros(4000, dtype=torch.long)
    for model in (llamagen, var):
        counts = []
        for sampler in ("official", "inverse_cdf"):
            tokens = model.generate(labels_B, guidance=1.0, top_k=8, generator=torch.Generator().manual_seed(5),
                                    sampler=sampler)
            tokens = tokens[0] if isinstance(tokens, tuple) else tokens
            counts.append(np.bincount(tokens[:, 0].numpy(), minlength=32))
        table = np.array(counts)
        table = table[:, table.sum(0) > 0]
        assert chi2_contingency(table).pvalue > 1e-3


def test_the_draw_is_a_validated_option_of_the_built_in_backbones_only():
    from pydantic import ValidationError

    from alignkit import SamplingOptions
    from alignkit_llamagen.model import LlamaGenSampling
    from alignkit_var.model import VARSampling

    for options in (LlamaGenSampling, VARSampling):
        assert options().sampler == "official"
        assert options(sampler="inverse_cdf").sampler == "inverse_cdf"
        with pytest.raises(ValidationError, match="sampler"):
            options(sampler="gumbel")
    # a third-party backbone's generate() is never handed an option it did not declare
    assert "sampler" not in SamplingOptions.model_fields
