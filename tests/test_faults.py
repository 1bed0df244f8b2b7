"""Issue 15, the output side: nothing lost, nothing silent. Every fault ends in one line (exit status 2,
no traceback) and a run that continues exactly once the cause is gone."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from alignkit.engine.checkpointing import CheckpointStore
from alignkit.engine.trainer import train
from alignkit.recipe import load_recipe

from test_engine import cli, make_run, metrics

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def one_error_line(result, *texts):
    """Exit status 2, no traceback, a single ``error:`` line holding every text."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    for text in texts:
        assert text in errors[0], (text, errors[0])
    return errors[0]


FULL_DISK_PLUGIN = """
import os, torch
_save = torch.save

def save(obj, f, *args, **kwargs):
    # the disk fills while step 4's weights are written: /dev/full fails every write with ENOSPC
    if os.environ.get("ALIGNKIT_TEST_FULL") and str(f).endswith("step-00000004/state.pt"):
        f = "/dev/full"
    return _save(obj, f, *args, **kwargs)

torch.save = save
"""


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_full_disk_during_a_checkpoint_is_one_line_and_resumes(tmp_path):
    path = make_run(tmp_path, steps=5, save_every=2, dropout=0.0, plugin=FULL_DISK_PLUGIN)
    full = cli("train", str(path), env={"ALIGNKIT_TEST_FULL": "1"})
    one_error_line(full, "cannot write", "a full disk?", "free there", "a checkpoint takes", "stopped at step 4",
                   f"the last good checkpoint is {tmp_path / 'run' / 'checkpoints' / 'step-00000002'}",
                   "continue with --resume")
    root = tmp_path / "run" / "checkpoints"
    assert [p.name for p in root.iterdir() if p.is_dir()] == ["step-00000002"]  # the half-written one is gone
    with open(tmp_path / "run" / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "loss": ')  # what a full disk also does: a torn last line
    resumed = cli("train", str(path), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "dropped 1 torn line(s)" in resumed.stderr and "Traceback" not in resumed.stderr
    assert [m["step"] for m in metrics(tmp_path / "run")] == [1, 2, 3, 4, 5]


def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path):
    path = make_run(tmp_path, steps=4, save_every=2, dropout=0.0)
    train(load_recipe(path), show_progress=False)
    root = tmp_path / "run" / "checkpoints"
    assert json.loads((root / "step-00000004" / "checksums.json").read_text()).keys() >= {"state.pt", "trainer.pt"}
    state = root / "step-00000004" / "state.pt"
    state.write_bytes(state.read_bytes()[:1000])  # truncated
    resumed = cli("train", str(path), "optim.max_steps=6", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    said = resumed.stderr.replace("\n", "")  # the console wraps long lines
    assert "Traceback" not in said
    assert "step-00000004 is damaged (state.pt is missing or not the" in said
    assert "falling back to the previous one" in said and "step-00000002 (step 2 of 6)" in said
    assert [p.name for p in root.glob("step-00000004.damaged-*")]  # kept aside, not deleted
    assert [m["step"] for m in metrics(tmp_path / "run")] == [1, 2, 3, 4, 5, 6]
    assert CheckpointStore.damage(root / "step-00000006") is None
    (root / "step-00000006" / "trainer.pt").write_bytes(b"x" * (root / "step-00000006" / "trainer.pt").stat().st_size)
    assert CheckpointStore.damage(root / "step-00000006") == "trainer.pt does not match its SHA-256"


HOLD_PLUGIN = """
import os, time
from alignkit import hookimpl

@hookimpl
def alignkit_before_train(run):
    release = os.environ.get("ALIGNKIT_TEST_RELEASE")
    while release and not os.path.exists(release):
        time.sleep(0.05)
"""


def test_a_second_train_on_the_same_run_folder_is_refused(tmp_path):
    path = make_run(tmp_path, steps=2, save_every=2, dropout=0.0, plugin=HOLD_PLUGIN)
    release = tmp_path / "release"
    env = {**os.environ, "ALIGNKIT_TEST_RELEASE": str(release)}
    first = subprocess.Popen([sys.executable, "-m", "alignkit.cli", "train", str(path)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lock = tmp_path / "run" / ".lock"
        deadline = time.time() + 60
        while not (lock.is_file() and lock.read_text()) and time.time() < deadline:
            time.sleep(0.1)
        second = cli("train", str(path), env={"ALIGNKIT_TEST_RELEASE": str(release)})
        one_error_line(second, f"{tmp_path / 'run'} is in use by another training run "
                               f"(pid {first.pid} on host {socket.gethostname()})", "output.dir")
    finally:
        release.touch()
        _, stderr = first.communicate(timeout=120)
    assert first.returncode == 0, stderr
    assert [m["step"] for m in metrics(tmp_path / "run")] == [1, 2]  # one run's lines only


BLOW_UP_PLUGIN = """
from alignkit import ObjectiveSpec, hookimpl
from alignkit_objectives import CCA, CCAConfig

class BlowUpAtStep3(CCA):
    calls = 0
    def __call__(self, logps):
        BlowUpAtStep3.calls += 1
        out = super().__call__(logps)
        if BlowUpAtStep3.calls >= 5:  # 2 micro-batches per step: step 3 on, as lr = 1000 would
            out.loss, out.metrics["loss"] = out.loss * 1e9, out.metrics["loss"] * 1e9
        return out

@hookimpl
def alignkit_register_objectives():
    return [ObjectiveSpec("cca_blowup", BlowUpAtStep3, CCAConfig, "CCA whose loss explodes at step 3")]
"""


def test_the_divergence_guard_stops_before_saving(tmp_path):
    path = make_run(tmp_path, steps=4, save_every=1, dropout=0.0, objective="cca_blowup", plugin=BLOW_UP_PLUGIN)
    result = cli("train", str(path), "optim.divergence_factor=10")
    one_error_line(result, "the loss diverged at step 3:", "is above 10 × the median", "optim.divergence_factor",
                   "training stopped before saving",
                   f"the last good checkpoint is {tmp_path / 'run' / 'checkpoints' / 'step-00000002'}")
    assert CheckpointStore(tmp_path / "run" / "checkpoints", 2, True, lambda: None).latest().name == "step-00000002"


def test_output_dir_that_is_a_file(tmp_path):
    path = make_run(tmp_path)
    (tmp_path / "run").write_text("not a folder")
    for command in ("train", "validate"):
        one_error_line(cli(command, str(path)), f"{path}: output.dir: {tmp_path / 'run'} is a file")
