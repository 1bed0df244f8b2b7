"""Theorem B.1 of the CCA paper, checked numerically with the shipped CCA objective.

For a joint p(x, c), minimising the λ-weighted NCE loss
    E_{p(x,c)}[−log σ(r(x,c))] + λ E_{p(x)p(c)}[−log σ(−r(x,c))]
over a free table r gives r*(x, c) = log p(x|c)/p(x) − log λ.

The expectations are made exact with a batch: p(x, c) = n(x, c)/N with small integers, and the
batch enumerates every (x, c, c⁻) with multiplicity n(x, c)·n(c⁻), so the objective's batch means
are the expectations (positives: p(x, c); negatives (x, c⁻): p(x)·p(c⁻)).
"""

import torch

from alignkit import PairLogps, Pairs
from alignkit_objectives import CCA, CCAConfig

COUNTS_XC = torch.tensor([  # n(x, c): 4 "images", 3 classes, N = 24
    [4, 1, 1],
    [1, 3, 1],
    [2, 2, 3],
    [1, 1, 4],
])


def test_cca_optimum_is_log_density_ratio_minus_log_lambda():
    lam = 2.5
    N = int(COUNTS_XC.sum())
    n_c = COUNTS_XC.sum(0)
    rows = [(x, c, c_neg, int(COUNTS_XC[x, c] * n_c[c_neg]))
            for x in range(4) for c in range(3) for c_neg in range(3) if COUNTS_XC[x, c] * n_c[c_neg] > 0]
    x_B = torch.tensor([r[0] for r in rows]).repeat_interleave(torch.tensor([r[3] for r in rows]))
    c_B = torch.tensor([r[1] for r in rows]).repeat_interleave(torch.tensor([r[3] for r in rows]))
    c_neg_B = torch.tensor([r[2] for r in rows]).repeat_interleave(torch.tensor([r[3] for r in rows]))
    assert x_B.numel() == N * N
    # The theorem's loss has no special case for c⁻ = c: collisions are negatives (same_label="negative").
    objective = CCA(CCAConfig(beta=1.0, lambda_=lam, normalize=False, same_label="negative"))
    pairs = Pairs(c_B, c_neg_B, torch.zeros_like(c_B, dtype=torch.bool))
    r_XC = torch.zeros(4, 3, dtype=torch.float64, requires_grad=True)
    zeros_B = torch.zeros(x_B.numel(), dtype=torch.float64)
    optimizer = torch.optim.SGD([r_XC], lr=10.0)  # plain full-batch gradient descent (curvature < 0.12)
    for _ in range(3000):
        optimizer.zero_grad()
        loss = objective(PairLogps(pairs, r_XC[x_B, c_B], r_XC[x_B, c_neg_B], zeros_B, zeros_B)).loss
        loss.backward()
        optimizer.step()
    p_xc = COUNTS_XC.double() / N
    p_x_given_c = p_xc / p_xc.sum(0, keepdim=True)
    r_star = torch.log(p_x_given_c / p_xc.sum(1, keepdim=True)) - torch.log(torch.tensor(lam, dtype=torch.float64))
    assert r_XC.grad.abs().max() < 1e-9
    torch.testing.assert_close(r_XC.detach(), r_star, rtol=0, atol=1e-3)
