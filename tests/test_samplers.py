"""Pair samplers: the official roll pairing, derangements, and the null-class rate."""

import pytest
import torch

from alignkit.plugins import get_plugins
from alignkit_samplers import Derangement, RandPerm, Roll

from conftest import FIXTURES


def make(cls, uncond_ratio=0.0, seed=0, null_label=10):
    from alignkit import EmptyConfig

    return cls(EmptyConfig(), null_label=null_label, uncond_ratio=uncond_ratio,
               generator=torch.Generator().manual_seed(seed))


def test_roll_matches_the_official_pairing_and_mask():
    fixture = torch.load(FIXTURES / "llamagen" / "cca_loss.pt", weights_only=True)
    official = fixture["variants"][0]  # CCA, uncond_ratio 0.1: TBM drawn with torch.manual_seed(0); torch.rand(6)
    sampler = make(Roll, uncond_ratio=0.1, seed=fixture["tbm_seed"])
    pairs = sampler(fixture["labels"])
    assert torch.equal(pairs.uncond_B, official["TBM"])
    assert torch.equal(pairs.labels_pos_B, official["c_indices"])
    assert torch.equal(pairs.labels_neg_B, official["shuffled_c_indices"])
    assert torch.equal(pairs.neg_is_pos_B, official["neg_weight"])


def test_roll_without_null_rows_is_torch_roll():
    labels = torch.tensor([4, 1, 1, 9, 0])
    pairs = make(Roll)(labels)
    assert pairs.labels_neg_B.tolist() == [1, 1, 9, 0, 4]
    assert not pairs.uncond_B.any()


@pytest.mark.parametrize("seed", range(20))
def test_derangement_never_keeps_a_label_when_possible(seed):
    g = torch.Generator().manual_seed(seed)
    B = int(torch.randint(2, 40, (1,), generator=g))
    num_classes = int(torch.randint(2, 6, (1,), generator=g))
    labels = torch.randint(num_classes, (B,), generator=g)
    max_count = int(torch.unique(labels, return_counts=True)[1].max())
    neg = make(Derangement, seed=seed)(labels).labels_neg_B
    assert sorted(neg.tolist()) == sorted(labels.tolist())  # a permutation of the batch's labels
    collisions = int((neg == labels).sum())
    assert collisions == max(0, 2 * max_count - B)  # zero whenever possible, else the minimum


def test_derangement_with_a_dominant_label_reaches_the_minimum():
    labels = torch.tensor([3, 3, 3, 3, 3, 1, 2])  # 5 of 7: 2·5 − 7 = 3 collisions are unavoidable
    neg = make(Derangement)(labels).labels_neg_B
    assert int((neg == labels).sum()) == 3
    assert sorted(neg.tolist()) == sorted(labels.tolist())


def test_derangement_is_random_but_seeded():
    labels = torch.arange(16) % 4
    a = make(Derangement, seed=1)(labels).labels_neg_B
    b = make(Derangement, seed=1)(labels).labels_neg_B
    c = make(Derangement, seed=2)(labels).labels_neg_B
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_randperm_is_a_permutation():
    labels = torch.randint(5, (32,))
    neg = make(RandPerm, seed=3)(labels).labels_neg_B
    assert sorted(neg.tolist()) == sorted(labels.tolist())


@pytest.mark.parametrize("cls", [Roll, RandPerm, Derangement])
def test_uncond_ratio_rate(cls):
    sampler = make(cls, uncond_ratio=0.1, seed=7)
    labels = torch.randint(10, (64,))
    masked = [sampler(labels) for _ in range(200)]
    rate = torch.cat([p.uncond_B for p in masked]).float().mean().item()
    assert abs(rate - 0.1) < 0.01  # 12,800 Bernoulli(0.1) draws: σ ≈ 0.0027
    for p in masked:  # null rows have the null class on both sides
        assert (p.labels_pos_B[p.uncond_B] == 10).all() and (p.labels_neg_B[p.uncond_B] == 10).all()
        assert (p.labels_pos_B[~p.uncond_B] == labels[~p.uncond_B]).all()


def test_sampler_state_round_trip_resumes_the_stream():
    sampler = make(Derangement, uncond_ratio=0.3, seed=5)
    labels = torch.randint(4, (12,))
    sampler(labels)
    state = sampler.state_dict()
    expected = [sampler(labels) for _ in range(3)]
    resumed = make(Derangement, uncond_ratio=0.3, seed=99)
    resumed.load_state_dict(state)
    for e, r in zip(expected, [resumed(labels) for _ in range(3)]):
        assert torch.equal(e.labels_neg_B, r.labels_neg_B) and torch.equal(e.uncond_B, r.uncond_B)


def test_builtin_samplers_are_registered():
    assert {"roll", "randperm", "derangement"} <= set(get_plugins().registry("pair_sampler"))
