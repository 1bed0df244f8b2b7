"""Seeded k-means (Lloyd) in torch: the fitting behind the bench's toy tokenizers."""

from __future__ import annotations

import torch
from torch import Tensor


def nearest(points_ND: Tensor, centers_KD: Tensor, chunk: int = 16384) -> Tensor:
    """Index of the nearest centre (squared Euclidean) for every point, in chunks to bound memory."""
    norms_K = centers_KD.square().sum(1)
    out = []
    for part in points_ND.split(chunk):
        out.append((norms_K - 2 * part @ centers_KD.T).argmin(dim=1))  # |x|² is the same for every centre
    return torch.cat(out) if out else points_ND.new_zeros(0, dtype=torch.int64)


def lloyd(points_ND: Tensor, centers_KD: Tensor, iterations: int, generator: torch.Generator) -> Tensor:
    """``iterations`` Lloyd steps from ``centers_KD``; an empty cluster is re-seeded on the point
    farthest from its centre, so every code stays in use."""
    centers_KD = centers_KD.clone()
    K = centers_KD.shape[0]
    for _ in range(iterations):
        assign_N = nearest(points_ND, centers_KD)
        counts_K = torch.bincount(assign_N, minlength=K).to(points_ND.dtype)
        sums_KD = torch.zeros_like(centers_KD).index_add_(0, assign_N, points_ND)
        filled_K = counts_K > 0
        centers_KD[filled_K] = sums_KD[filled_K] / counts_K[filled_K, None]
        empty = (~filled_K).nonzero().flatten()
        if empty.numel():
            error_N = (points_ND - centers_KD[assign_N]).square().sum(1)
            far = torch.topk(error_N, min(empty.numel(), error_N.numel())).indices
            centers_KD[empty[: far.numel()]] = points_ND[far]
    return centers_KD


def kmeans(points_ND: Tensor, k: int, iterations: int, seed: int) -> Tensor:
    """``k`` centres fitted to ``points_ND``, initialised on distinct random points."""
    generator = torch.Generator().manual_seed(seed)
    points_ND = points_ND.float()
    if points_ND.shape[0] < k:
        raise ValueError(f"k-means needs at least {k} points, got {points_ND.shape[0]}")
    start = points_ND[torch.randperm(points_ND.shape[0], generator=generator)[:k]]
    return lloyd(points_ND, start, iterations, generator)
