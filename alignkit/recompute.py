"""Activation checkpointing of one transformer block, as a backbone's ``activation_checkpointing``.

- ``False``: the block saves what autograd saves.
- ``True`` (full): only the block's input is kept; the whole block runs again in the backward.
- ``"selective"``: the outputs of the block's matrix products and attention are kept as well, and only
  the element-wise ops between them (norms, rotary, SiLU/GELU, modulation, dropout) run again. Those
  are cheap to redo but hold most of a block's saved bytes (LlamaGen: 7D + 2F of 12D + 4F + 2D fp32).
  Even the block's last product (its output projection) is kept: the backward's recomputation
  would otherwise run it again before it stops (measured, tests/test_recompute.py).

Recomputation replays the same kernels on the same inputs, with the RNG state restored for dropout, so
gradients are bit-identical to the plain backward.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Annotated, Any, Literal

import torch
from pydantic import BeforeValidator
from torch import Tensor
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts


def _checkpointing(value: Any) -> Any:
    """One message for a bad value rather than one per member of the union."""
    if isinstance(value, bool) or value == "selective":
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ValueError('expected true, false or "selective"')


Checkpointing = Annotated[bool | Literal["selective"], BeforeValidator(_checkpointing)]
CHECKPOINTING_HELP = ("recompute in the backward: true = each whole block, \"selective\" = only the element-wise "
                      "ops between its matrix products and attention, false = nothing")

_aten = torch.ops.aten
_KEPT_OPS = frozenset((
    _aten.mm.default, _aten.addmm.default, _aten.bmm.default, _aten.baddbmm.default,
    _aten._scaled_dot_product_flash_attention_for_cpu.default,
    _aten._scaled_dot_product_flash_attention.default,
    _aten._scaled_dot_product_efficient_attention.default,
    _aten._scaled_dot_product_cudnn_attention.default,
))


def _policy(ctx: Any, op: Any, *args: Any, **kwargs: Any) -> CheckpointPolicy:
    return CheckpointPolicy.MUST_SAVE if op in _KEPT_OPS else CheckpointPolicy.PREFER_RECOMPUTE


_SELECTIVE = functools.partial(create_selective_checkpoint_contexts, _policy)


def run_block(block: Callable[..., Tensor], *args: Any, mode: Checkpointing) -> Tensor:
    """``block(*args)``, checkpointed as ``mode`` says; plainly when ``mode`` is false or no gradient is
    being recorded (there is no backward to recompute for)."""
    if not mode or not torch.is_grad_enabled():
        return block(*args)
    if mode == "selective":
        return checkpoint(block, *args, use_reentrant=False, context_fn=_SELECTIVE)
    return checkpoint(block, *args, use_reentrant=False)
