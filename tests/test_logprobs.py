"""sequence_logps against a direct per-token computation."""

import math

import pytest
import torch

from alignkit import sequence_logps


def naive(logits_BLV, tokens_BL):
    B, L, _ = logits_BLV.shape
    out = torch.zeros(B, dtype=torch.float64)
    for b in range(B):
        for i in range(L):
            row = logits_BLV[b, i].double()
            out[b] += row[tokens_BL[b, i]] - torch.logsumexp(row, 0)
    return out


def test_sum_of_token_log_probs_in_float32():
    torch.manual_seed(0)
    logits = torch.randn(3, 7, 11) * 4
    tokens = torch.randint(11, (3, 7))
    logp = sequence_logps(logits, tokens)
    assert logp.dtype == torch.float32 and logp.shape == (3,)
    torch.testing.assert_close(logp.double(), naive(logits, tokens), rtol=1e-6, atol=1e-5)


def test_bf16_logits_are_upcast_before_the_softmax():
    torch.manual_seed(1)
    logits = (torch.randn(2, 50, 300) * 3).bfloat16()
    tokens = torch.randint(300, (2, 50))
    torch.testing.assert_close(sequence_logps(logits, tokens).double(), naive(logits.float(), tokens),
                               rtol=1e-6, atol=1e-4)


def test_uniform_logits_give_minus_L_log_V():
    logp = sequence_logps(torch.zeros(2, 5, 8), torch.randint(8, (2, 5)))
    torch.testing.assert_close(logp, torch.full((2,), -5 * math.log(8)))


def test_mask_and_mean():
    torch.manual_seed(2)
    logits, tokens = torch.randn(2, 6, 5), torch.randint(5, (2, 6))
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1]])
    per_token = torch.log_softmax(logits, -1).gather(2, tokens[..., None]).squeeze(2)
    torch.testing.assert_close(sequence_logps(logits, tokens, mask), (per_token * mask).sum(-1))
    torch.testing.assert_close(sequence_logps(logits, tokens, mask, reduction="mean"),
                               (per_token * mask).sum(-1) / mask.sum(-1))
    with pytest.raises(ValueError):
        sequence_logps(logits, tokens[:, :5])


def test_gradient_is_softmax_minus_onehot():
    logits = torch.randn(1, 1, 4, requires_grad=True)
    tokens = torch.tensor([[2]])
    sequence_logps(logits, tokens).sum().backward()
    expected = torch.nn.functional.one_hot(tokens, 4).float() - torch.softmax(logits.detach(), -1)
    torch.testing.assert_close(logits.grad, expected)
