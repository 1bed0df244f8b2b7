"""``alignkit sample`` on several processes (gloo on the CPU) and in other precisions.

Two processes write the very ``samples.npz`` one process writes; a worker's failure ends the run
with that worker's own line, and the shards written so far serve a rerun on any number of processes.
bf16 and TF32 are settings of their own. The model is test_sample.py's tiny LlamaGen.
"""

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from alignkit import AlignkitError
from alignkit.cli.main import app
import test_sample
from test_sample import cli, explicit, sample

# test_sample's fixtures: the tiny model, its files, one thread
files, one_thread, policy, vq = test_sample.files, test_sample.one_thread, test_sample.policy, test_sample.vq

COMMON = ["--num-per-class", 3, "--classes", "0-3", "--batch-size", 2, "--guidance", 1.0, "--top-k", 20,
          "--device", "cpu", "--no-progress"]


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run(*args, torchrun=False):
    """``alignkit ARGS`` in a fresh process (under ``torchrun --nproc-per-node 2`` with ``torchrun``),
    one thread per process as in the one-process runs, so that only the process count differs."""
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"] if torchrun else []
    return subprocess.run([sys.executable, *launcher, "-m", "alignkit.cli", *map(str, args)], capture_output=True,
                          text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)


@pytest.fixture(scope="module")
def one_process(files, tmp_path_factory):
    out = tmp_path_factory.mktemp("one-process") / "samples"
    result, _, err = cli("sample", files / "tiny.toml", *COMMON, "--out", out)
    assert result.exit_code == 0, err
    return out


def test_two_processes_under_torchrun_write_the_file_one_process_writes(files, one_process, tmp_path):
    result = run("sample", files / "tiny.toml", *COMMON, "--out", tmp_path, torchrun=True)
    assert result.returncode == 0, result.stderr
    assert sha256(tmp_path / "samples.npz") == sha256(one_process / "samples.npz")
    assert sha256(tmp_path / "grid.png") == sha256(one_process / "grid.png")
    with np.load(tmp_path / "samples.npz") as two, np.load(one_process / "samples.npz") as one:
        assert np.array_equal(two["tokens"], one["tokens"]) and len(np.unique(one["tokens"], axis=0)) == 12
    assert result.stdout.count("12 images (4 classes × 3)") == 1  # rank 0 alone speaks
    info = json.loads((tmp_path / "sampling.json").read_text())
    assert (info["world_size"], info["generated_images"], info["precision"]) == (2, 12, "fp32")
    assert json.loads((one_process / "sampling.json").read_text())["world_size"] == 1
    assert len(list((tmp_path / "shards").glob("*.npz"))) == 8


def test_a_failing_worker_stops_the_run_and_one_process_finishes_it(files, one_process, tmp_path):
    # the model named by options: list options (--config) reach the workers too
    args = ["sample", *explicit(files), *COMMON, "--out", tmp_path]
    assert cli(*args, "--classes", "0")[0].exit_code == 0  # class 0's two shards and settings.json
    # The missing shards are dealt round-robin, so the second (class 1, images 2…3) is rank 1's; a
    # folder in its place makes rank 1's write fail.
    obstacle = tmp_path / "shards" / "class000001_chunk00001.npz"
    obstacle.mkdir()
    failed = run(*args, "--nproc-per-node", 2)
    assert failed.returncode == 2, failed.stderr
    assert "error: rank 1: " in failed.stderr and "cannot write: Is a directory" in failed.stderr, failed.stderr
    assert "Traceback" not in failed.stderr
    with np.load(tmp_path / "samples.npz") as before:  # class 0's, not replaced
        assert len(before["labels"]) == 3

    obstacle.rmdir()
    result, _, err = cli(*args)
    assert result.exit_code == 0, err
    info = json.loads((tmp_path / "sampling.json").read_text())
    assert info["resumed_images"] >= 3 and info["generated_images"] == 12 - info["resumed_images"]
    assert sha256(tmp_path / "samples.npz") == sha256(one_process / "samples.npz")


def test_bf16_and_tf32_are_settings_and_bf16_changes_the_images(policy, vq, tmp_path):
    fp32 = sample(policy, vq, tmp_path / "fp32", guidance=1.5)
    bf16 = sample(policy, vq, tmp_path / "bf16", guidance=1.5, precision="bf16")
    assert not np.array_equal(fp32.images, bf16.images)  # the model and decoder ran in bfloat16
    tf32 = sample(policy, vq, tmp_path / "tf32", guidance=1.5, precision="tf32")
    assert np.array_equal(fp32.images, tf32.images)  # TF32 does not exist on the CPU
    assert not torch.backends.cuda.matmul.allow_tf32  # and the global flags are restored
    assert json.loads((tmp_path / "bf16" / "sampling.json").read_text())["precision"] == "bf16"
    for folder, other, message in (("fp32", "tf32", "precision 'fp32' -> 'tf32'"),
                                   ("bf16", "fp32", "precision 'bf16' -> 'fp32'")):
        with pytest.raises(AlignkitError, match=f"holds shards sampled with other settings.*{message}"):
            sample(policy, vq, tmp_path / folder, guidance=1.5, precision=other)


def test_bad_process_and_precision_options_are_one_line(files, tmp_path):
    base = ["sample", files / "tiny.toml", "--num-per-class", 1, "--classes", "0", "--device", "cpu",
            "--no-progress", "--out", tmp_path]
    cases = [(["--precision", "fp16"], {}, "precision must be one of fp32, bf16, tf32, got 'fp16'"),
             (["--nnodes", 2], {}, "--nnodes > 1 needs --rdzv-endpoint HOST:PORT"),
             (["--nproc-per-node", 2], {"WORLD_SIZE": "2"}, "under torchrun (WORLD_SIZE is set) leave them out")]
    for extra, env, message in cases:
        result = CliRunner().invoke(app, [str(a) for a in base + extra], env=env)
        assert result.exit_code == 2 and result.stderr.startswith("error: "), (extra, result.stderr)
        assert message in result.stderr and result.stderr.count("\n") == 1, (extra, result.stderr)
