"""DeepSpeed ZeRO 1–3 with two CPU processes (gloo): sharding, loss parity with one process, resume.

Each test launches ``alignkit train`` with ``distributed.num_processes = 2``, which starts the two
workers itself. The first DeepSpeed start on a fresh machine JIT-builds a small op (~40 s).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from alignkit.checkpoints import read_weights_file

from test_engine import make_run, metrics
from test_gft_ddo import DDO_OBJECTIVE, with_objective

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

SHARD_PLUGIN = """
import json, os
from alignkit import hookimpl

@hookimpl
def alignkit_before_train(run):
    module = run.backend.unwrapped_policy()
    local = sum(getattr(p, "ds_tensor", p).numel() for p in module.parameters())
    full = sum(getattr(p, "ds_numel", p.numel()) for p in module.parameters())
    path = os.environ.get("ALIGNKIT_TEST_SHARDS")
    if path:
        with open(f"{path}.{run.backend.rank}", "w") as f:
            json.dump({"local": local, "full": full, "world": run.backend.world_size}, f)

@hookimpl
def alignkit_after_step(run, step):
    if step == int(os.environ.get("ALIGNKIT_TEST_KILL_AT", "0")) and run.backend.rank == 1:
        os.kill(os.getpid(), 9)
"""


def zero_run(folder: Path, stage: int, steps: int = 4, extra: tuple[str, ...] = (), env: dict | None = None):
    path = make_run(folder, steps=steps, save_every=2, dropout=0.0, plugin=SHARD_PLUGIN)
    overrides = ["sampler.uncond_ratio=0.0", "distributed.backend=deepspeed", "distributed.num_processes=2",
                 f"distributed.zero_stage={stage}", *extra]
    result = subprocess.run([sys.executable, "-m", "alignkit.cli", "train", str(path), *overrides],
                            capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=600)
    return path, result


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """The one-process run every ZeRO run is compared with (same global batches: 2 micro-batches of 4)."""
    folder = tmp_path_factory.mktemp("single")
    path = make_run(folder, steps=4, save_every=2, dropout=0.0)
    result = subprocess.run([sys.executable, "-m", "alignkit.cli", "train", str(path), "sampler.uncond_ratio=0.0"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return folder / "run"


def assert_same_curve(run: Path, reference: Path, rtol: float = 1e-4) -> None:
    a, b = metrics(run), metrics(reference)
    assert [m["step"] for m in a] == [m["step"] for m in b]
    for key in ("loss", "rewards/margins", "logps/pos"):
        torch.testing.assert_close(torch.tensor([m[key] for m in a], dtype=torch.float64),
                                   torch.tensor([m[key] for m in b], dtype=torch.float64), rtol=rtol, atol=1e-6)


def test_zero3_shards_parameters_and_matches_one_process(tmp_path, single):
    shards = tmp_path / "shards"
    path, result = zero_run(tmp_path / "z3", 3, env={"ALIGNKIT_TEST_SHARDS": str(shards)})
    assert result.returncode == 0, result.stderr[-3000:]
    counts = [json.loads(Path(f"{shards}.{rank}").read_text()) for rank in (0, 1)]
    full = counts[0]["full"]
    for count in counts:  # each rank holds about half of the parameters
        assert abs(count["local"] - full / 2) <= 0.02 * full, count
    assert_same_curve(tmp_path / "z3" / "run", single)
    exported = read_weights_file(tmp_path / "z3" / "run" / "final" / "model.safetensors")
    expected = read_weights_file(single / "final" / "model.safetensors")
    assert exported.keys() == expected.keys()
    for key in expected:
        # Consolidated fp32 weights equal the one-process run's up to reduction order: 4 Adam steps of
        # lr 3e-3 move weights by ~1e-2, the two runs differ by ~1e-5 where gradients are tiny.
        torch.testing.assert_close(exported[key], expected[key], rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("stage", [1, 2])
def test_zero1_and_zero2_match_one_process(tmp_path, single, stage):
    _, result = zero_run(tmp_path / f"z{stage}", stage)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same_curve(tmp_path / f"z{stage}" / "run", single)


def test_zero3_resume_after_a_killed_worker(tmp_path, single):
    path, crashed = zero_run(tmp_path, 3, env={"ALIGNKIT_TEST_KILL_AT": "3"})
    assert crashed.returncode != 0
    assert (tmp_path / "run" / "checkpoints" / "latest").read_text().strip() == "step-00000002"
    resumed = subprocess.run([sys.executable, "-m", "alignkit.cli", "train", str(path), "sampler.uncond_ratio=0.0",
                              "distributed.backend=deepspeed", "distributed.num_processes=2",
                              "distributed.zero_stage=3", "--resume"], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_curve(tmp_path / "run", single)


def test_zero3_trains_var(tmp_path):
    """VAR keeps parameters at its root (positions) and a frozen quantiser outside its module tree."""
    from test_engine import make_var_run

    path = make_var_run(tmp_path)
    result = subprocess.run([sys.executable, "-m", "alignkit.cli", "train", str(path), "distributed.backend=deepspeed",
                             "distributed.num_processes=2", "distributed.zero_stage=3"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    exported = read_weights_file(tmp_path / "run" / "final" / "model.safetensors")
    assert exported["pos_1LC"].shape == (1, 30, 32) and torch.isfinite(exported["pos_1LC"]).all()
    assert len(metrics(tmp_path / "run")) == 4


def test_extra_deepspeed_settings_merge_section_by_section():
    from alignkit_backends.zero import _merged

    base = {"zero_optimization": {"stage": 3, "overlap_comm": True}, "bf16": {"enabled": True}, "steps_per_print": 9}
    extra = {"zero_optimization": {"reduce_bucket_size": 1000}, "steps_per_print": 1}
    assert _merged(base, extra) == {"zero_optimization": {"stage": 3, "overlap_comm": True, "reduce_bucket_size": 1000},
                                    "bf16": {"enabled": True}, "steps_per_print": 1}



def ddo_run(folder: Path, *overrides: str) -> subprocess.CompletedProcess:
    path = with_objective(make_run(folder, steps=4, save_every=2, dropout=0.0), DDO_OBJECTIVE.format(rounds=2))
    return subprocess.run([sys.executable, "-m", "alignkit.cli", "train", str(path), "sampler.uncond_ratio=0.0",
                           *overrides], capture_output=True, text=True, timeout=600)


def test_ddo_under_zero2_matches_one_process_and_zero3_is_refused(tmp_path):
    """Negatives are seeded by global micro-batch, so two processes generate what one does; each
    process refreshes its own replica of the reference at the round boundary."""
    assert ddo_run(tmp_path / "one").returncode == 0
    two = ddo_run(tmp_path / "two", "distributed.backend=deepspeed", "distributed.num_processes=2",
                  "distributed.zero_stage=2")
    assert two.returncode == 0, two.stderr[-3000:]
    assert_same_curve(tmp_path / "two" / "run", tmp_path / "one" / "run")
    refused = ddo_run(tmp_path / "z3", "distributed.backend=deepspeed", "distributed.num_processes=2",
                      "distributed.zero_stage=3")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "distributed.zero_stage: objective 'ddo' generates its negatives token by token" in refused.stderr
    assert "Use zero_stage = 1 or 2" in refused.stderr
