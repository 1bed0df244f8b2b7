"""Sequence log-probabilities: the one place where logits become the numbers every objective uses.

``linear_token_logps`` fuses the output projection with the log-softmax and the gather, chunk by
chunk: the ``B×L×V`` logits never exist at once (for LlamaGen at 576 tokens and V = 16,384 they are
38 MB per row in fp32, before autograd's copies). The backward needs the softmax of every position;
it keeps the forward's when they are small (``KEEP_ELEMENTS``) and otherwise recomputes them one chunk
at a time, which costs one more pass of the projection. Both give the same gradients bit for bit.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

CHUNK_ELEMENTS = 1 << 23
"""Logits held at once by the fused path: 8M elements (32 MB in fp32), so 512 tokens at V = 16,384."""
KEEP_ELEMENTS = 1 << 26
"""Up to this many probabilities in all (positions × V; 256 MiB in fp32) the forward keeps them for the
backward instead of recomputing the projection there. Above it the memory stays that of one chunk: a
LlamaGen-B micro-batch of 8 pairs at 576 tokens (151M) recomputes, the same at 256 tokens (67M) keeps."""


def token_logps(logits_BLV: Tensor, tokens_BL: Tensor) -> Tensor:
    """``logp_BL = log softmax(logits_BLV)[tokens_BL]`` in float32."""
    if logits_BLV.shape[:2] != tokens_BL.shape:
        raise ValueError(f"logits {tuple(logits_BLV.shape)} do not match tokens {tuple(tokens_BL.shape)}")
    logp_BLV = torch.log_softmax(logits_BLV.float(), dim=-1)
    return torch.gather(logp_BLV, dim=2, index=tokens_BL.long().unsqueeze(2)).squeeze(2)


def reduce_logps(logp_BL: Tensor, mask_BL: Tensor | None = None,
                 reduction: Literal["sum", "mean"] = "sum") -> Tensor:
    """``logp_B``: token log-probs summed over the sequence (``mean``: divided by the counted tokens).

    As in the official CCA code, every image token counts (``mask_BL`` may drop some) and the sum is
    not length-normalised unless an objective asks for ``mean``.
    """
    if mask_BL is not None:
        logp_BL = logp_BL * mask_BL.to(logp_BL.dtype)
    logp_B = logp_BL.sum(-1)
    if reduction == "mean":
        count_B = mask_BL.sum(-1).clamp_min(1) if mask_BL is not None else logp_BL.shape[1]
        return logp_B / count_B
    if reduction != "sum":
        raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
    return logp_B


def sequence_logps(logits_BLV: Tensor, tokens_BL: Tensor, mask_BL: Tensor | None = None,
                   reduction: Literal["sum", "mean"] = "sum") -> Tensor:
    """``logp_B = Σ_i log softmax(logits_BLV[:, i])[tokens_BL[:, i]]`` in float32."""
    return reduce_logps(token_logps(logits_BLV, tokens_BL), mask_BL, reduction)


def linear_token_logps(hidden_BLD: Tensor, head: nn.Linear, tokens_BL: Tensor,
                       chunk_elements: int = CHUNK_ELEMENTS, keep_elements: int = KEEP_ELEMENTS) -> Tensor:
    """``token_logps(head(hidden_BLD).float(), tokens_BL)`` without the full logits: fp32 ``logp_BL``.

    The projection runs in the ambient autocast dtype, as ``head(hidden)`` would; the log-softmax in
    float32. When a gradient is needed and the ``B·L·V`` probabilities number at most
    ``keep_elements``, the forward keeps them (fp32); otherwise backward recomputes one chunk's logits
    at a time.
    """
    B, L, D = hidden_BLD.shape
    if tokens_BL.shape != (B, L):
        raise ValueError(f"hidden states {tuple(hidden_BLD.shape)} do not match tokens {tuple(tokens_BL.shape)}")
    chunk = max(1, chunk_elements // head.out_features)
    keep = B * L * head.out_features <= keep_elements
    logp_N = _LinearLogSoftmaxGather.apply(hidden_BLD.reshape(B * L, D), head.weight, head.bias,
                                           tokens_BL.reshape(-1).long(), chunk, keep)
    return logp_N.view(B, L)


def _accumulation_dtype(weight: Tensor) -> torch.dtype:
    """float32, as ``.float()`` gives, except for float64 weights (gradient checks)."""
    return torch.float64 if weight.dtype == torch.float64 else torch.float32


def _log_softmax(logits_CV: Tensor, out_CV: Tensor | None = None) -> Tensor:
    """``torch.log_softmax(logits_CV, dim=1)``, written into ``out_CV`` when given (the kept
    probabilities' rows), so that keeping them costs no extra chunk-sized tensor."""
    if out_CV is None:
        return torch.log_softmax(logits_CV, dim=1)
    return torch._log_softmax(logits_CV, 1, False, out=out_CV)


class _LinearLogSoftmaxGather(torch.autograd.Function):
    """``logp_N = log softmax(h_N W^T + b)[y_N]``, chunked; d logp / d logits = onehot(y) − softmax.

    Each chunk goes through torch's own log-softmax kernel, so the log-probs are those of
    ``token_logps`` on the same logits, bit for bit. The softmax the backward needs is ``exp`` of that
    log-softmax whether it was kept or is recomputed, so both give the same bits."""

    @staticmethod
    def forward(ctx, hidden_ND: Tensor, weight_VD: Tensor, bias_V: Tensor | None, targets_N: Tensor,
                chunk: int, keep: bool) -> Tensor:
        device_type = hidden_ND.device.type
        ctx.autocast = (device_type, torch.is_autocast_enabled(device_type), torch.get_autocast_dtype(device_type))
        ctx.chunk = chunk
        N, V, acc = hidden_ND.shape[0], weight_VD.shape[0], _accumulation_dtype(weight_VD)
        keep = keep and any(ctx.needs_input_grad[:3])  # (forward itself runs without grad mode)
        probs_NV = torch.empty(N, V, dtype=acc, device=hidden_ND.device) if keep else None
        logp_N = torch.empty(N, dtype=acc, device=hidden_ND.device)
        ctx.dtype = acc
        for start in range(0, N, chunk):
            end = min(start + chunk, N)
            projected_CV = F.linear(hidden_ND[start:end], weight_VD, bias_V)
            ctx.dtype = projected_CV.dtype  # what the backward of .to(acc) returns to
            log_softmax_CV = _log_softmax(projected_CV.to(acc), probs_NV[start:end] if keep else None)
            logp_N[start:end] = log_softmax_CV.gather(1, targets_N[start:end, None]).squeeze(1)
            if keep:
                log_softmax_CV.exp_()
        ctx.save_for_backward(hidden_ND, weight_VD, bias_V, targets_N)
        # an attribute, not a saved tensor: the backward turns it into the gradient in place
        ctx.probs_NV = probs_NV
        return logp_N

    @staticmethod
    def backward(ctx, grad_N: Tensor):
        hidden_ND, weight_VD, bias_V, targets_N = ctx.saved_tensors
        # used up here; a retained graph's second backward (gradcheck) recomputes them, to the same bits
        probs_NV, ctx.probs_NV = ctx.probs_NV, None
        device_type, autocast, autocast_dtype = ctx.autocast
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        need_b = bias_V is not None and ctx.needs_input_grad[2]
        grad_h = torch.empty_like(hidden_ND) if need_h else None
        acc = _accumulation_dtype(weight_VD)
        grad_w = torch.zeros(weight_VD.shape, dtype=acc, device=weight_VD.device) if need_w else None
        grad_b = torch.zeros(bias_V.shape, dtype=acc, device=bias_V.device) if need_b else None
        grad_N = grad_N.to(acc)
        dtype = ctx.dtype
        for start in range(0, hidden_ND.shape[0], ctx.chunk):
            end = min(start + ctx.chunk, hidden_ND.shape[0])
            h_CD, g_C = hidden_ND[start:end], grad_N[start:end]
            if probs_NV is not None:
                grad_CV = probs_NV[start:end].mul_(-g_C[:, None])
            else:
                with torch.autocast(device_type, dtype=autocast_dtype, enabled=autocast):
                    logits_CV = F.linear(h_CD, weight_VD, bias_V)
                grad_CV = _log_softmax(logits_CV.to(acc)).exp_().mul_(-g_C[:, None])
            # d logp / d logits = onehot(y) − softmax, times the incoming gradient of each token
            grad_CV.scatter_add_(1, targets_N[start:end, None], g_C[:, None])
            grad_CV = grad_CV.to(dtype)  # the backward of .float(): back to the projection's dtype
            if need_h:
                grad_h[start:end] = (grad_CV @ weight_VD.to(dtype)).to(hidden_ND.dtype)
            if need_w:
                grad_w += (grad_CV.t() @ h_CD.to(dtype)).to(acc)
            if need_b:
                grad_b += grad_CV.to(acc).sum(0)
        return (grad_h, grad_w.to(weight_VD.dtype) if need_w else None,
                grad_b.to(bias_V.dtype) if need_b else None, None, None, None)
