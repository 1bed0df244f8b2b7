"""GFT and DDO: their losses against hand computations, GFT at β = 1 against MLE, DDO's self-play rounds
(refreshed at each boundary and not before), reproducible negatives, exact resume mid-round, ZeRO."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import alignkit
from alignkit import PairLogps, Pairs
from alignkit.engine.trainer import Trainer, train
from alignkit.errors import AlignkitError
from alignkit.interfaces import TokenLogits
from alignkit.recipe import load_recipe
from alignkit_objectives import DDO, GFT, DDOConfig, GFTConfig

from test_engine import KILL_PLUGIN, make_run, metrics

TINY = dict(dim=32, n_layer=2, n_head=2, multiple_of=32, vocab_size=64, block_size=16, num_classes=10,
            token_dropout_p=0.0, resid_dropout_p=0.0, ffn_dropout_p=0.0)


def with_objective(path: Path, objective: str, *extra_sections: str) -> Path:
    """``make_run``'s recipe with another [objective] section (and more sections appended)."""
    text = re.sub(r"\[objective\]\n(?:[^\[]*\n)", f"[objective]\n{objective}\n\n", path.read_text(), count=1)
    path.write_text(text + "".join(extra_sections))
    return path


# ------------------------------------------------------------------------------ GFT


def test_gft_loss_is_the_cross_entropy_of_the_mixed_logits_by_hand():
    torch.manual_seed(0)
    policy = alignkit.load_policy("llamagen", config=TINY)
    tokens_BL, labels_B = torch.randint(0, 64, (3, 16)), torch.tensor([1, 4, 10])  # the last row is a null row
    cond_BLV = policy(tokens_BL, labels_B)
    uncond_BLV = policy(tokens_BL, torch.full_like(labels_B, 10)).detach().requires_grad_(True)
    pairs = Pairs(labels_B, labels_B.roll(-1), labels_B == 10)
    beta = 0.3
    out = GFT(GFTConfig(beta=beta))(TokenLogits(pairs, tokens_BL, {"cond": cond_BLV, "uncond": uncond_BLV}))
    expected = 0.0
    for i in range(3):
        for t in range(16):
            z = beta * cond_BLV[i, t].double() + (1 - beta) * uncond_BLV[i, t].double()
            expected += (torch.logsumexp(z, 0) - z[tokens_BL[i, t]]).item()
    assert out.loss.item() == pytest.approx(expected / 48, rel=1e-6)
    out.loss.backward()
    assert uncond_BLV.grad is None  # the unconditional branch is a stop-gradient target
    assert next(policy.parameters()).grad is not None


def test_gft_beta_input_draws_beta_and_conditions_null_rows_on_beta_one():
    labels_B = torch.tensor([0, 3, 10, 7])
    pairs = Pairs(labels_B, labels_B.roll(-1), labels_B == 10)
    drawn = GFT(GFTConfig(beta_range=(0.2, 0.9))).sample_conditions(pairs, torch.Generator().manual_seed(0))
    beta_B = drawn["beta_B"]
    assert ((0.2 <= beta_B) & (beta_B <= 0.9)).all() and beta_B.unique().numel() == 4
    torch.testing.assert_close(drawn["lambda_B"], torch.where(pairs.uncond_B, 1.0, 1 / beta_B))
    with pytest.raises(ValueError, match="0 < low < high <= 1"):
        GFTConfig(beta_range=(0.0, 1.0))


def test_gft_at_beta_one_trains_exactly_as_mle(tmp_path):
    """β = 1 leaves only the conditional logits: the same loss, the same steps as the MLE objective."""
    runs = {}
    for name, objective in (("gft", 'name = "gft"\nbeta = 1.0'), ("mle", 'name = "mle"')):
        path = with_objective(make_run(tmp_path / name, steps=3, save_every=10, dropout=0.1), objective)
        runs[name] = train(load_recipe(path), show_progress=False)
    losses = {name: [m["loss"] for m in metrics(tmp_path / name / "run")] for name in runs}
    np.testing.assert_allclose(losses["gft"], losses["mle"], rtol=1e-6)
    gft, mle = (alignkit.load_policy("llamagen", tmp_path / n / "run" / "final" / "model.safetensors",
                                     {**TINY, "token_dropout_p": 0.1}) for n in ("gft", "mle"))
    # MLE reads its log-probs through the fused projection + log-softmax, GFT through full logits: the
    # gradients agree to rounding, which Adam's normalised step can amplify where a gradient is near zero.
    # A step moves a weight by about lr (3e-3), so 1% of it still tells a different objective apart.
    for (key, a), b in zip(gft.state_dict().items(), mle.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=3e-5, msg=key)


def test_gft_beta_input_needs_a_lambda_conditioned_model(tmp_path):
    path = with_objective(make_run(tmp_path, steps=1), 'name = "gft"\nbeta_range = [0.1, 1.0]')
    with pytest.raises(AlignkitError, match="conditions the policy on a per-row λ"):
        train(load_recipe(path), show_progress=False)
    conditioned = load_recipe(path, ["model.lambda_conditioning=true"])
    assert train(conditioned, show_progress=False).steps == 1


# ------------------------------------------------------------------------------ DDO


def test_ddo_loss_by_hand():
    torch.manual_seed(0)
    B = 6
    pol_real, ref_real, pol_fake, ref_fake = (torch.randn(B, dtype=torch.float64) * 20 for _ in range(4))
    labels = torch.arange(B)
    logps = PairLogps(Pairs(labels, labels, torch.zeros(B, dtype=torch.bool)), pol_real, pol_fake, ref_real, ref_fake)
    beta, alpha = 0.05, 30.0
    out = DDO(DDOConfig(beta=beta, alpha=alpha))(logps)
    d_real = 1 / (1 + np.exp(-beta * (pol_real - ref_real).numpy()))
    d_fake = 1 / (1 + np.exp(-beta * (pol_fake - ref_fake).numpy()))
    expected = -np.log(d_real).mean() - alpha * np.log(1 - d_fake).mean()
    assert out.loss.item() == pytest.approx(expected, rel=1e-9)
    assert out.metrics["rewards/neg"].item() == pytest.approx(beta * (pol_fake - ref_fake).mean().item())


DISTANCE_PLUGIN = """
import json, os
from alignkit import hookimpl

@hookimpl
def alignkit_after_step(run, step):
    with open(os.environ["ALIGNKIT_TEST_DISTANCES"], "a") as f:
        f.write(json.dumps({"step": step, "distance": run.backend.parameter_distance()}) + "\\n")
"""

DDO_OBJECTIVE = 'name = "ddo"\nbeta = 0.1\nalpha = 2.0\nround_steps = {rounds}\nsampling = {{ top_k = 16 }}'


def test_the_reference_is_the_policy_from_each_round_boundary_and_not_before(tmp_path, monkeypatch):
    log = tmp_path / "distances.jsonl"
    monkeypatch.setenv("ALIGNKIT_TEST_DISTANCES", str(log))
    path = with_objective(make_run(tmp_path, steps=5, save_every=10, dropout=0.0, plugin=DISTANCE_PLUGIN),
                          DDO_OBJECTIVE.format(rounds=2))
    train(load_recipe(path), show_progress=False)
    distances = [eval(line)["distance"] for line in log.read_text().splitlines()]  # noqa: S307 (our own JSON)
    assert distances[1] == 0.0 and distances[3] == 0.0  # refreshed after steps 2 and 4
    assert min(distances[0], distances[2], distances[4]) > 0  # moved within each round
    logged = metrics(tmp_path / "run")
    assert [m["round"] for m in logged] == [0, 0, 1, 1, 2]  # the round each step trained in
    assert all(0 < m["time/generation_share"] < 1 and m["time/generation_s"] > 0 for m in logged)


def test_negatives_come_from_the_reference_and_are_reproducible(tmp_path):
    path = with_objective(make_run(tmp_path, steps=1, dropout=0.0), DDO_OBJECTIVE.format(rounds=2))
    trainer = Trainer(load_recipe(path), show_progress=False)
    trainer._build()
    labels_B = torch.tensor([0, 1, 2, 10])
    first = trainer.micro_step.generate(labels_B, step=3, micro=1)
    assert torch.equal(first, trainer.micro_step.generate(labels_B, step=3, micro=1))
    assert not torch.equal(first, trainer.micro_step.generate(labels_B, step=4, micro=1))
    generator = torch.Generator().manual_seed(0)  # the reference's own sampler with the recipe's options
    sampled = trainer.reference.model.generate(labels_B, generator=generator, top_k=16)
    assert sampled.shape == first.shape and first.max() < 64 and sampled.dtype == first.dtype


def test_ddo_killed_mid_round_resumes_to_the_same_losses(tmp_path):
    def run(folder: Path, kill_at: str):
        path = with_objective(make_run(folder, steps=8, save_every=2, dropout=0.1, plugin=KILL_PLUGIN),
                              DDO_OBJECTIVE.format(rounds=3))
        env = {**os.environ, "ALIGNKIT_TEST_KILL_AT": kill_at}
        command = [sys.executable, "-m", "alignkit.cli", "train", str(path)]
        return path, subprocess.run(command, capture_output=True, text=True, env=env), command, env

    _, whole, _, _ = run(tmp_path / "whole", "0")
    assert whole.returncode == 0, whole.stderr
    path, killed, command, env = run(tmp_path / "killed", "5")  # round 1 (steps 4-6), its reference saved at step 4
    assert killed.returncode != 0
    assert (tmp_path / "killed" / "run" / "checkpoints" / "step-00000004" / "reference.safetensors").is_file()
    resumed = subprocess.run([*command, "--resume"], capture_output=True, text=True,
                             env={**env, "ALIGNKIT_TEST_KILL_AT": "0"})
    assert resumed.returncode == 0, resumed.stderr
    assert [m["loss"] for m in metrics(tmp_path / "killed" / "run")] == [m["loss"] for m in
                                                                          metrics(tmp_path / "whole" / "run")]
