"""The default reference model: a frozen copy of the policy."""

from __future__ import annotations

import copy

import torch
from torch import Tensor

from alignkit.interfaces import PolicyModel, ReferenceModel
from alignkit.logprobs import reduce_logps


class FrozenReference(ReferenceModel):
    """A frozen ``PolicyModel`` queried without gradients.

    ``train_mode=True`` keeps dropout and drop-path active, as the official CCA trainers do
    (``ref_model.train()``); ``False`` evaluates deterministically, as TRL does.
    """

    def __init__(self, model: PolicyModel, train_mode: bool = True):
        self.model = model.requires_grad_(False)
        self.train_mode = train_mode

    @classmethod
    def copy_of(cls, policy: PolicyModel, train_mode: bool = True) -> FrozenReference:
        return cls(copy.deepcopy(policy), train_mode)

    def sequence_logps(self, tokens_BL: Tensor, labels_B: Tensor, reduction: str = "sum") -> Tensor:
        self.model.train(self.train_mode)
        with torch.no_grad():
            return reduce_logps(self.model(tokens_BL, labels_B, token_logps=True), reduction=reduction)
