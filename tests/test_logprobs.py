"""sequence_logps against a direct per-token computation."""

import math

import pytest
import torch

from alignkit import sequence_logps
from alignkit.logprobs import linear_token_logps, token_logps


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


# ----------------------------------------------------------------- the fused projection + log-softmax


class Projection(torch.nn.Module):
    """A head whose weights gradcheck can vary (an ``nn.Linear`` interface without its own tensors)."""

    def __init__(self, weight, bias):
        super().__init__()
        self.weight, self.bias, self.out_features = weight, bias, weight.shape[0]


@pytest.mark.parametrize("keep", [0, 10**9], ids=["recompute", "keep"])
@pytest.mark.parametrize("bias", [False, True])
def test_fused_log_probs_and_gradients_equal_the_logits_path(bias, keep):
    torch.manual_seed(3)
    hidden = torch.randn(3, 7, 16, requires_grad=True)
    head = torch.nn.Linear(16, 50, bias=bias)
    tokens, weights = torch.randint(50, (3, 7)), torch.randn(3, 7)

    def run(fused):
        hidden.grad = None
        head.zero_grad()
        logp = (linear_token_logps(hidden, head, tokens, chunk_elements=4 * 50, keep_elements=keep) if fused
                else token_logps(head(hidden).float(), tokens))
        (logp * weights).sum().backward()
        return [logp.detach(), hidden.grad, *(p.grad for p in head.parameters())]

    for fused, plain in zip(run(True), run(False)):
        torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("keep", [0, 10**9], ids=["recompute", "keep"])
def test_fused_log_probs_equal_the_log_softmax_of_the_same_logits_bit_for_bit(keep):
    """Each chunk runs torch's log-softmax: the log-probs are ``token_logps``'s of the chunk's logits."""
    torch.manual_seed(6)
    hidden, head, tokens = torch.randn(3, 7, 16) * 4, torch.nn.Linear(16, 50), torch.randint(50, (3, 7))
    chunk = 4  # positions: 21 = 4 · 5 + 1, so the last chunk is short
    with torch.no_grad():
        logits = torch.cat([head(part) for part in hidden.reshape(21, 16).split(chunk)])
    hidden.requires_grad_()  # so that ``keep`` decides whether the forward keeps the softmax
    fused = linear_token_logps(hidden, head, tokens, chunk_elements=chunk * 50, keep_elements=keep)
    assert torch.equal(fused.detach().reshape(-1), token_logps(logits[None], tokens.reshape(1, -1))[0])


@pytest.mark.parametrize("keep", [0, 10**9], ids=["recompute", "keep"])
def test_fused_log_probs_pass_a_gradient_check(keep):
    torch.manual_seed(4)
    hidden = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(6, dtype=torch.float64, requires_grad=True)
    tokens = torch.randint(6, (2, 3))
    assert torch.autograd.gradcheck(lambda h, w, b: linear_token_logps(h, Projection(w, b), tokens, chunk_elements=12,
                                                                                keep_elements=keep),
                                    (hidden, weight, bias))


@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16"])
def test_kept_and_recomputed_probabilities_give_the_same_gradients_bit_for_bit(autocast):
    """Small enough, the forward keeps the softmax for the backward; larger, the backward recomputes it.
    Which one ran must not change a bit of the result, or a run's numbers would depend on its size."""
    torch.manual_seed(7)
    hidden = torch.randn(2, 11, 24, requires_grad=True)
    head, tokens, weights = torch.nn.Linear(24, 70), torch.randint(70, (2, 11)), torch.randn(2, 11)

    def run(keep_elements):
        hidden.grad = None
        head.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            logp = linear_token_logps(hidden, head, tokens, chunk_elements=3 * 70, keep_elements=keep_elements)
        (logp * weights).sum().backward()
        return [logp.detach(), hidden.grad, head.weight.grad, head.bias.grad]

    kept, recomputed = run(2 * 11 * 70), run(2 * 11 * 70 - 1)
    for a, b in zip(kept, recomputed):
        assert torch.equal(a, b)
    assert kept[2].abs().sum() > 0


def test_fused_log_probs_under_bf16_autocast_follow_the_bf16_projection():
    torch.manual_seed(5)
    hidden, head, tokens = torch.randn(2, 9, 32), torch.nn.Linear(32, 300), torch.randint(300, (2, 9))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fused = linear_token_logps(hidden, head, tokens, chunk_elements=5 * 300)
        plain = token_logps(head(hidden).float(), tokens)
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-5)  # same bf16 logits, fp32 softmax


@pytest.mark.parametrize("backbone", ["llamagen", "var"])
def test_backbones_give_fused_token_log_probs(backbone):
    """``model(tokens, labels, token_logps=True)`` is the log-softmax of the model's own logits."""
    torch.manual_seed(6)
    if backbone == "llamagen":
        from alignkit_llamagen.model import GPTConfig, LlamaGenGPT

        model = LlamaGenGPT(GPTConfig(dim=32, n_layer=2, n_head=4, vocab_size=64, block_size=16, num_classes=5))
        tokens = torch.randint(64, (3, 16))
        torch.nn.init.normal_(model.output.weight, std=0.5)  # LlamaGen zero-initialises its head
    else:
        from var_support import tiny

        model = tiny()  # the official fixture's weights (its head is not zero)
        tokens = torch.randint(model.vocab_size, (3, model.seq_len))
    labels = torch.tensor([0, 4, 2])
    model.eval()
    logp = model(tokens, labels, token_logps=True)
    logp.sum().backward()
    fused_grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    model.zero_grad()
    plain = token_logps(model(tokens, labels), tokens)
    plain.sum().backward()
    torch.testing.assert_close(logp, plain, rtol=1e-5, atol=1e-5)
    for fused, reference in zip(fused_grads, [p.grad for p in model.parameters() if p.grad is not None]):
        assert (fused - reference).abs().max() <= 1e-5 * reference.abs().max() + 1e-7  # rounding only
