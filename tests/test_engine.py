"""The training engine on a tiny LlamaGen: outputs, exact resume after SIGKILL, guards, CCA dynamics."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from alignkit import load_policy
from alignkit.checkpoints import read_weights_file
from alignkit.engine.checkpointing import CheckpointStore
from alignkit.engine.trainer import Trainer, TrainingError, train
from alignkit.errors import AlignkitError
from alignkit.recipe import load_recipe

TINY_MODEL = """
[model]
backbone = "llamagen"
dim = 32
n_layer = 2
n_head = 2
multiple_of = 32
vocab_size = 64
block_size = 16
num_classes = 10
token_dropout_p = {dropout}
resid_dropout_p = {dropout}
ffn_dropout_p = {dropout}
"""

RECIPE = TINY_MODEL + """
[data]
name = "codes-npz"
path = "codes.npz"

[objective]
name = "{objective}"
beta = 0.5
lambda_ = 1.0

[sampler]
name = "roll"
uncond_ratio = 0.25

[optim]
lr = 3e-3
batch_size = 8
micro_batch_size = 4
max_steps = {steps}

[distributed]
precision = "fp32"

[output]
dir = "{run}"
save_every = {save_every}
log_every = 1
"""


def make_run(folder: Path, *, steps=8, save_every=2, dropout=0.1, objective="cca", num_items=64, seq_len=16,
             vocab=64, classes=10, plugin: str | None = None) -> Path:
    """A tiny run folder: class-dependent token sequences (class c favours tokens near 6c), a recipe."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, classes, num_items)
    offsets = rng.integers(0, 4, (num_items, 2, seq_len)) + np.arange(seq_len) % 3
    tokens = (labels[:, None, None] * 6 + offsets) % vocab
    tokens[:, :, -1] = rng.integers(0, vocab, (num_items, 2))  # reach the whole vocabulary
    np.savez(folder / "codes.npz", tokens=tokens, labels=labels)
    if plugin:
        (folder / "alignkit_plugins.py").write_text(plugin)
    path = folder / "recipe.toml"
    path.write_text(RECIPE.format(dropout=dropout, objective=objective, steps=steps, save_every=save_every,
                                  run=folder / "run"))
    return path


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def cli(*args, env=None, cwd=None):
    return subprocess.run([sys.executable, "-m", "alignkit.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=cwd)


def test_training_writes_metrics_checkpoints_and_official_exports(tmp_path):
    recipe = load_recipe(make_run(tmp_path, steps=5, save_every=2))
    result = train(recipe, show_progress=False)
    run = tmp_path / "run"
    assert result.steps == 5 and result.output_dir == run
    logged = metrics(run)
    assert [m["step"] for m in logged] == [1, 2, 3, 4, 5]
    for key in ("loss", "rewards/pos", "rewards/neg", "rewards/margins", "rewards/accuracies", "logps/pos",
                "logps/neg", "lr", "grad_norm", "images_per_s"):
        assert all(np.isfinite(m[key]) for m in logged), key
    store = CheckpointStore(run / "checkpoints", 2, True, lambda: None)
    assert [p.name for p in store.completed()] == ["step-00000004", "step-00000005"]  # keep_last = 2
    assert store.latest().name == "step-00000005"
    assert not list((run / "checkpoints").glob(".tmp-*"))
    # the exports load back through the public API and equal the trained weights
    config = dict(dim=32, n_layer=2, n_head=2, multiple_of=32, vocab_size=64, block_size=16, num_classes=10)
    trained = result_policy_state(run)
    for name in ("model.pt", "model.safetensors"):
        policy = load_policy("llamagen", checkpoint=run / "final" / name, config=config)
        for key, value in policy.official_state_dict().items():
            torch.testing.assert_close(value, trained[key], rtol=0, atol=0)
    assert "model" in read_weights_file(run / "final" / "model.pt")  # the official B/L/XL wrapping


def result_policy_state(run: Path) -> dict:
    state = read_weights_file(run / "checkpoints" / "step-00000005" / "state.pt")["policy"]
    return state


KILL_PLUGIN = """
import os, signal
from alignkit import hookimpl

@hookimpl
def alignkit_after_step(run, step):
    if step == int(os.environ.get("ALIGNKIT_TEST_KILL_AT", "0")):
        os.kill(os.getpid(), signal.SIGKILL)
"""


def test_sigkill_and_resume_gives_the_same_losses(tmp_path):
    """Dropout on, null-class masking on: every random stream must be restored exactly."""
    whole = make_run(tmp_path / "whole", plugin=KILL_PLUGIN)
    killed = make_run(tmp_path / "killed", plugin=KILL_PLUGIN)
    done = cli("train", str(whole))
    assert done.returncode == 0, done.stderr
    crash = cli("train", str(killed), env={"ALIGNKIT_TEST_KILL_AT": "5"})
    assert crash.returncode == -9
    assert (tmp_path / "killed" / "run" / "checkpoints" / "latest").read_text().strip() == "step-00000004"
    refused = cli("train", str(killed))
    assert refused.returncode == 2 and "already holds checkpoints" in refused.stderr and "--resume" in refused.stderr
    resumed = cli("train", str(killed), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    a, b = metrics(tmp_path / "whole" / "run"), metrics(tmp_path / "killed" / "run")
    assert [m["step"] for m in b] == list(range(1, 9))
    for key in ("loss", "rewards/margins", "grad_norm", "logps/neg"):
        assert [m[key] for m in a] == [m[key] for m in b], key
    final_a = read_weights_file(tmp_path / "whole" / "run" / "final" / "model.safetensors")
    final_b = read_weights_file(tmp_path / "killed" / "run" / "final" / "model.safetensors")
    assert all(torch.equal(final_a[k], final_b[k]) for k in final_a)


def test_half_written_checkpoints_are_never_used(tmp_path):
    recipe = load_recipe(make_run(tmp_path, steps=4, save_every=2, dropout=0.0), ["optim.max_steps=2"])
    train(recipe, show_progress=False)
    root = tmp_path / "run" / "checkpoints"
    (root / ".tmp-step-00000004").mkdir()  # a crash while writing step 4
    (root / ".tmp-step-00000004" / "state.pt").write_bytes(b"partial")
    (root / "step-00000006").mkdir()  # a folder without its completion marker
    store = CheckpointStore(root, 2, True, lambda: None)
    assert store.latest().name == "step-00000002"
    result = train(load_recipe(tmp_path / "recipe.toml"), resume=True, show_progress=False)
    assert result.steps == 4
    assert not list(root.glob(".tmp-*"))


NAN_PLUGIN = """
import os
from alignkit import ObjectiveSpec, hookimpl
from alignkit_objectives import CCA, CCAConfig

class NanAtStep3(CCA):
    calls = 0
    def __call__(self, logps):
        NanAtStep3.calls += 1
        out = super().__call__(logps)
        # 2 micro-batches per step: call 5 is the first micro-batch of step 3
        if NanAtStep3.calls == 5 and os.environ.get("ALIGNKIT_TEST_NAN"):
            out.loss = out.loss * float("nan")
        return out

@hookimpl
def alignkit_register_objectives():
    return [ObjectiveSpec("cca_nan", NanAtStep3, CCAConfig, "CCA that diverges at step 3")]
"""


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNKIT_TEST_NAN", "1")
    path = make_run(tmp_path, objective="cca_nan", plugin=NAN_PLUGIN, dropout=0.0)
    with pytest.raises(TrainingError, match=r"non-finite loss at step 3: the loss is nan .* the last good checkpoint "
                                            r"is .*step-00000002"):
        train(load_recipe(path), show_progress=False)
    state = read_weights_file(tmp_path / "run" / "checkpoints" / "step-00000002" / "state.pt")
    assert all(torch.isfinite(v).all() for v in state["policy"].values())
    result = cli("train", str(path), "--resume", env={"ALIGNKIT_TEST_NAN": ""})
    assert result.returncode == 0, result.stderr


SAME_REFERENCE_PLUGIN = """
from alignkit import hookimpl
from alignkit.reference import FrozenReference

class PolicyAsReference(FrozenReference):
    def __init__(self, model):
        self.model, self.train_mode = model, True   # the classic bug: no copy, nothing frozen

@hookimpl
def alignkit_build_reference(policy, recipe):
    return PolicyAsReference(policy)
"""


def test_warns_when_policy_equals_reference_after_steps(tmp_path):
    recipe = load_recipe(make_run(tmp_path, steps=10, save_every=10, plugin=SAME_REFERENCE_PLUGIN, dropout=0.0))
    with pytest.warns(RuntimeWarning, match="policy and reference are still identical after 10 optimiser steps"):
        train(recipe, show_progress=False)


def test_a_normal_run_does_not_warn(tmp_path, recwarn):
    train(load_recipe(make_run(tmp_path, steps=10, save_every=10, dropout=0.0)), show_progress=False)
    assert not [w for w in recwarn if "identical" in str(w.message)]


@pytest.mark.parametrize("case,kwargs,message", [
    ("sequence length", dict(seq_len=9), r"holds sequences of 9 tokens, but model 'llamagen' expects 16"),
    ("token ids", dict(vocab=100), r"\(before step 1\): token ids span \[0, 9\d\], the vocabulary is \[0, 64\)"),
    ("labels", dict(classes=12), r"labels span \[0, 11\], the model has 10 classes \(null class 10\)"),
])
def test_data_that_does_not_fit_the_model(tmp_path, case, kwargs, message):
    path = make_run(tmp_path, **kwargs)
    result = cli("train", str(path))
    assert result.returncode == 2
    assert re.search(message, result.stderr) and "Traceback" not in result.stderr
    assert len([line for line in result.stderr.splitlines() if line.startswith("error:")]) == 1


def test_cca_raises_positive_and_lowers_negative_likelihood(tmp_path):
    """The paper's Figure 10: relative likelihood of (x, c) rises, of (x, c⁻) falls."""
    recipe = load_recipe(make_run(tmp_path, steps=30, save_every=30, dropout=0.0),
                         ["sampler.uncond_ratio=0.0", "objective.beta=0.1"])
    train(recipe, show_progress=False)
    logged = metrics(tmp_path / "run")
    late = logged[-10:]
    assert np.mean([m["rewards/pos"] for m in late]) > 0.05
    assert np.mean([m["rewards/neg"] for m in late]) < -0.05
    assert np.mean([m["rewards/accuracies"] for m in late]) > 0.7
    assert logged[-1]["loss"] < logged[0]["loss"]


def test_train_cli_reports_recipe_errors(tmp_path):
    path = make_run(tmp_path)
    result = cli("train", str(path), "optim.lr=-1")
    assert result.returncode == 2
    assert f"{path}: optim.lr: input should be greater than 0" in result.stderr
    with pytest.raises(AlignkitError, match="fewer than one batch"):
        train(load_recipe(make_run(tmp_path / "small", num_items=4)), show_progress=False)


VAR_RECIPE = """
[model]
backbone = "var"
depth = 2
embed_dim = 32
num_heads = 2
patch_nums = [1, 2, 3, 4]
num_classes = 10
V = 32
Cvae = 8
ch = 32

[tokenizer]
name = "var-vqvae"
checkpoint = "{vae}"
vocab_size = 32
z_channels = 8
ch = 32
v_patch_nums = [1, 2, 3, 4]

[data]
name = "codes-npz"
path = "codes.npz"

[objective]
name = "cca_cfg"
beta = 0.5
lambda_ = 1.0

[optim]
lr = 3e-3
batch_size = 8
micro_batch_size = 4
max_steps = 4

[distributed]
precision = "fp32"

[output]
dir = "{run}"
save_every = 2
log_every = 1
"""


def make_var_run(folder: Path) -> Path:
    """A tiny VAR (30 tokens over 4 scales) with the fixture VQVAE, drop-path on (0.1·2/24)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 10, 64)
    tokens = (labels[:, None, None] * 3 + rng.integers(0, 4, (64, 1, 30))) % 32
    np.savez(folder / "codes.npz", tokens=tokens, labels=labels)
    vae = Path(__file__).parent / "fixtures" / "var" / "vae_tiny.pth.xz"
    path = folder / "recipe.toml"
    path.write_text(VAR_RECIPE.format(vae=vae, run=folder / "run"))
    return path


def test_var_trains_resumes_and_exports_the_official_layout(tmp_path):
    recipe = load_recipe(make_var_run(tmp_path))
    assert recipe.uncond_ratio == 0.1  # cca_cfg's default
    result = train(recipe, show_progress=False)
    assert result.steps == 4 and np.isfinite(result.final_metrics["loss"])
    official = read_weights_file(tmp_path / "run" / "final" / "model.pt")
    assert "pos_1LC" in official and "attn_bias_for_masking" in official  # a plain VAR state_dict
    assert not any(key.startswith(("quantize", "encoder", "decoder")) for key in official)
    config = dict(depth=2, embed_dim=32, num_heads=2, patch_nums=(1, 2, 3, 4), num_classes=10, V=32, Cvae=8, ch=32)
    tokenizer = Path(__file__).parent / "fixtures" / "var" / "vae_tiny.pth.xz"
    policy = load_policy("var", checkpoint=tmp_path / "run" / "final" / "model.safetensors", config=config,
                         tokenizer=tokenizer)
    assert policy.generate(torch.tensor([1, 2]), guidance=1.0).shape == (2, 30)


def test_compiled_policy_trains_like_the_eager_one(tmp_path):
    """distributed.compile: the same losses and weights as eager (fp32), the compiled module in use."""
    runs = {}
    for name, flag in (("eager", "false"), ("compiled", "true")):
        recipe = load_recipe(make_run(tmp_path / name, steps=2, save_every=10, dropout=0.0),
                             [f"distributed.compile={flag}"])
        trainer = Trainer(recipe, show_progress=False)
        trainer.run()
        assert (trainer.backend.forward is trainer.backend.policy) == (flag == "false")
        runs[name] = trainer.backend.policy.state_dict()
    np.testing.assert_allclose([m["loss"] for m in metrics(tmp_path / "compiled" / "run")],
                               [m["loss"] for m in metrics(tmp_path / "eager" / "run")], rtol=1e-5)
    for key, value in runs["eager"].items():
        torch.testing.assert_close(runs["compiled"][key], value, rtol=0, atol=3e-5, msg=key)


def test_compile_without_a_cpp_compiler_trains_eagerly(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("shutil.which", lambda name: None)
    trainer = Trainer(load_recipe(make_run(tmp_path, steps=1), ["distributed.compile=true"]), show_progress=False)
    assert trainer.run().steps == 1
    assert trainer.backend.forward is trainer.backend.policy
    assert "no C++ compiler" in capsys.readouterr().err
