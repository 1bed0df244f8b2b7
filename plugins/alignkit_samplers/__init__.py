"""Built-in pair samplers: how each row's negative condition is drawn from the batch.

``roll`` is the official CCA pairing (the next row's label); ``randperm`` a random permutation;
``derangement`` a random pairing in which no row keeps its own label whenever the batch allows it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from alignkit import PairSampler, PairSamplerSpec, hookimpl


class Roll(PairSampler):
    """``c⁻_i = c_{(i+1) mod B}`` (``torch.roll(c, -1)``), as in the official trainers.

    Deterministic; rows whose neighbour has the same label get a colliding "negative" (the
    objectives' ``same_label`` option decides what happens to them).
    """

    def negatives(self, labels_B: Tensor) -> Tensor:
        return torch.roll(labels_B, shifts=-1, dims=0)


class RandPerm(PairSampler):
    """``c⁻ = c[π]`` for a uniformly random permutation π (collisions possible)."""

    def negatives(self, labels_B: Tensor) -> Tensor:
        return labels_B[torch.randperm(labels_B.shape[0], generator=self.generator)]


class Derangement(PairSampler):
    """A random permutation of the batch's labels with no row keeping its own label.

    A random permutation is repaired by swaps, each of which removes one collision without creating
    another. When one label fills more than half of the batch, 2·max_count − B collisions are
    unavoidable; then a sorted shift by max_count, which reaches that minimum, is used instead.
    """

    def negatives(self, labels_B: Tensor) -> Tensor:
        B = labels_B.shape[0]
        neg_B = labels_B[torch.randperm(B, generator=self.generator)]
        for i in torch.randperm(B, generator=self.generator).tolist():
            if neg_B[i] != labels_B[i]:
                continue
            ok = (neg_B != labels_B[i]) & (labels_B != neg_B[i])
            candidates = ok.nonzero().flatten()
            if candidates.numel() == 0:
                return self._sorted_shift(labels_B)
            j = int(candidates[torch.randint(candidates.numel(), (1,), generator=self.generator)])
            neg_B[i], neg_B[j] = neg_B[j].clone(), neg_B[i].clone()
        return neg_B

    def _sorted_shift(self, labels_B: Tensor) -> Tensor:
        B = labels_B.shape[0]
        shuffled = torch.randperm(B, generator=self.generator)
        order = shuffled[torch.sort(labels_B[shuffled], stable=True).indices]
        max_count = int(torch.unique(labels_B, return_counts=True)[1].max())
        neg_B = torch.empty_like(labels_B)
        neg_B[order] = labels_B[order.roll(-max_count)]
        return neg_B


@hookimpl
def alignkit_register_pair_samplers():
    return [
        PairSamplerSpec("roll", Roll, summary="next row's label, torch.roll(c, -1) (official CCA)"),
        PairSamplerSpec("randperm", RandPerm, summary="labels of a random permutation of the batch"),
        PairSamplerSpec("derangement", Derangement, summary="random pairing that never keeps a row's own label when possible"),
    ]
