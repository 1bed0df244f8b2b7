"""Issue 15: data checks before step 1 and in ``validate``, inline plugins, the conventions users expect
(the README's commands, [sample] defaults, uint8 conversions, TRL metric names, trackers, the CLI)."""

import json
import sys
import types

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

import alignkit
from alignkit import AlignkitError
from alignkit.cli.main import app
from alignkit.engine.trainer import train
from alignkit.plugins import DISABLE_ENV, reset_plugins
from alignkit.recipe import load_recipe
from alignkit_sampling.images import to_uint8_nhwc

from test_engine import make_run, make_var_run, metrics
from test_sample import GPT_CONFIG, VQ_CKPT, VQ_CONFIG, toml_table


def invoke(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def one_error_line(result, *texts):
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    for text in texts:
        assert text in errors[0], (text, errors[0])


@pytest.fixture
def plugins_reset():
    reset_plugins()
    yield
    reset_plugins()


# ------------------------------------------------------------------------------ the README's commands


def test_the_readme_sequence_train_then_sample_with_the_recipes_sample_defaults(tmp_path, monkeypatch):
    """``alignkit train recipes/X.toml`` writes ./runs/X (output folders are relative to the working
    directory), so that ``alignkit sample runs/X`` works, with the recipe's [sample] settings."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 16)
    np.savez(tmp_path / "codes.npz", tokens=rng.integers(0, 64, (16, 64)), labels=labels)
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "tiny.toml").write_text(
        toml_table("model", {"backbone": "llamagen", **GPT_CONFIG, "block_size": 64})
        + toml_table("tokenizer", {"name": "llamagen-vq", "checkpoint": str(VQ_CKPT), **VQ_CONFIG})
        + toml_table("data", {"name": "codes-npz", "path": "../codes.npz"})
        + toml_table("objective", {"name": "cca", "beta": 0.1, "lambda_": 1.0})
        + toml_table("optim", {"batch_size": 4, "max_steps": 2})
        + toml_table("distributed", {"precision": "fp32"})
        + toml_table("sample", {"guidance": 0.5, "top_k": 5}))
    monkeypatch.chdir(tmp_path)
    trained = invoke("train", "recipes/tiny.toml")
    assert trained.exit_code == 0, trained.output
    assert "run folder" in trained.stdout and (tmp_path / "runs" / "tiny" / "final" / "model.pt").is_file()
    common = ["--num-per-class", 1, "--classes", "0-1", "--batch-size", 1, "--device", "cpu", "--no-progress"]
    sampled = invoke("sample", "runs/tiny", *common)
    assert sampled.exit_code == 0, sampled.output
    info = json.loads((tmp_path / "runs" / "tiny" / "samples" / "sampling.json").read_text())
    assert info["guidance"] == 0.5 and info["options"] == {"top_k": 5}
    assert info["provenance"]["recipe_sample_defaults"] == {"guidance": 0.5, "top_k": 5}
    assert info["uint8"].startswith("clamp(127.5 * x + 128")  # LlamaGen's official conversion
    overridden = invoke("sample", "runs/tiny", *common, "--top-k", 3, "--guidance", 0, "--out", "other")
    assert overridden.exit_code == 0, overridden.output
    info = json.loads((tmp_path / "other" / "sampling.json").read_text())
    assert info["guidance"] == 0 and info["options"] == {"top_k": 3}
    bad = invoke("validate", "recipes/tiny.toml", "sample.more_smooth=true")
    one_error_line(bad, "recipes/tiny.toml: sample: the LlamaGenGPT backbone does not take the sampling option "
                        "'more_smooth'")
    one_error_line(invoke("sample", "runs/tiny", "--out", "recipes/tiny.toml"), "--out: recipes/tiny.toml is a file")


def test_uint8_conversion_follows_each_backbones_official_sampler():
    from alignkit_llamagen.model import LlamaGenGPT
    from alignkit_var.model import VAR

    assert (LlamaGenGPT.uint8_conversion, VAR.uint8_conversion) == ("round", "truncate")
    x = torch.tensor([100.6 / 127.5 - 1, -1.0, 1.0, 1.5]).view(1, 1, 1, 4).expand(1, 3, 1, 4)
    # LlamaGen: clamp(127.5·x + 128) truncated (100.6 -> 101); VAR: 255·(x + 1)/2 truncated (100.6 -> 100)
    assert to_uint8_nhwc(x, conversion="round")[0, 0, :, 0].tolist() == [101, 0, 255, 255]
    assert to_uint8_nhwc(x, conversion="truncate")[0, 0, :, 0].tolist() == [100, 0, 255, 255]


# ------------------------------------------------------------------------------ data checks


@pytest.mark.parametrize("case,edit,message", [
    ("labels", dict(classes=12), "does not fit model 'llamagen' (before step 1): labels span [0, 11]"),
    ("sequence length", dict(seq_len=9), "holds sequences of 9 tokens, but model 'llamagen' expects 16"),
    ("token ids", dict(vocab=100), "(before step 1): token ids span [0, 9"),
    ("lambda_range", "objective.lambda_range=[1.0, 100.0]", "conditions the policy on a per-row λ "
                                                           "(lambda_range, beta_range)"),
    ("float token ids", "float", "'tokens' has dtype float64; token ids and labels must be integers"),
    ("no items", "empty", "data.path: {folder}/codes.npz holds no items"),
    ("empty checkpoint", "model.checkpoint=empty.pt", "model.checkpoint: {folder}/empty.pt: the file is empty"),
    ("random bytes", "model.checkpoint=random.pt", "{folder}/random.pt: not a torch checkpoint"),
    ("empty codes folder", "codes", "data.labels: {folder}/labels holds no .npy files"),
])
def test_validate_runs_the_checks_train_runs(tmp_path, case, edit, message):
    path = make_run(tmp_path, **(edit if isinstance(edit, dict) else {}))
    overrides = [edit] if isinstance(edit, str) and "=" in edit else []
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "random.pt").write_bytes(np.random.default_rng(0).bytes(300))
    if edit == "float":
        np.savez(tmp_path / "codes.npz", tokens=np.full((64, 16), 1.7), labels=np.zeros(64, np.int64))
    if edit == "empty":
        np.savez(tmp_path / "codes.npz", tokens=np.zeros((0, 16), np.int64), labels=np.zeros(0, np.int64))
    if edit == "codes":
        (tmp_path / "codes").mkdir()
        (tmp_path / "labels").mkdir()
        overrides = ["data.name=codes", "data.codes=['codes']", "data.labels=labels"]
        path.write_text(path.read_text().replace('path = "codes.npz"\n', ""))
    one_error_line(invoke("validate", path, *overrides), message.format(folder=tmp_path))


def test_tokenizers_without_weights_are_refused_unless_asked_for():
    with pytest.raises(AlignkitError, match="tokenizer 'llamagen-vq-16' needs its weights .* a randomly "
                                            "initialised tokenizer gives meaningless codes"):
        alignkit.load_tokenizer("llamagen-vq-16")
    with torch.device("meta"):
        assert alignkit.load_tokenizer("llamagen-vq-16", random_init=True).seq_len == 576


# ------------------------------------------------------------------------------ inline plugins


MARKER_PLUGIN = """
from pathlib import Path
(Path(__file__).parent / "imported").write_text("the plugin's code ran")
"""


def test_inline_plugins_can_be_turned_off_and_failures_are_reported(tmp_path, monkeypatch, plugins_reset):
    path = make_run(tmp_path, plugin=MARKER_PLUGIN)
    monkeypatch.setenv(DISABLE_ENV, "")
    assert invoke("--no-inline-plugins", "validate", path, "--no-check-paths").exit_code == 0
    assert not (tmp_path / "imported").exists()
    reset_plugins()
    monkeypatch.setenv(DISABLE_ENV, "inline")
    assert invoke("validate", path, "--no-check-paths").exit_code == 0
    assert not (tmp_path / "imported").exists()
    reset_plugins()
    monkeypatch.setenv(DISABLE_ENV, "")
    assert invoke("validate", path, "--no-check-paths").exit_code == 0
    assert (tmp_path / "imported").exists()

    reset_plugins()
    (tmp_path / "alignkit_plugins.py").write_text("raise RuntimeError('boom')\n")
    result = invoke("validate", path, "--no-check-paths")
    assert result.exit_code == 0
    assert (f"warning: plugin {tmp_path / 'alignkit_plugins.py'} was skipped: import failed: RuntimeError: boom"
            in result.stderr)
    reset_plugins()
    monkeypatch.setenv(DISABLE_ENV, "inline,objectivs")
    result = invoke("plugins", "--json")
    assert "warning: ALIGNKIT_DISABLE_PLUGINS names no installed plugin: objectivs (installed: " in result.stderr


# ------------------------------------------------------------------------------ metrics, trackers, CLI


def test_trl_metric_names_and_a_wandb_tracker(tmp_path, monkeypatch, capsys):
    calls = []

    class Run:
        def log(self, data, step):
            calls.append(("log", step, sorted(data)))

        def finish(self):
            calls.append(("finish",))

    wandb = types.ModuleType("wandb")
    wandb.util = types.SimpleNamespace(generate_id=lambda: "abc123")
    wandb.init = lambda **kwargs: calls.append(("init", kwargs)) or Run()
    monkeypatch.setitem(sys.modules, "wandb", wandb)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # not installed
    recipe = load_recipe(make_run(tmp_path, steps=2, save_every=2, dropout=0.0),
                         ['output.report_to=["tensorboard", "wandb"]'])
    train(recipe, show_progress=False)
    said = capsys.readouterr().err.replace("\n", "")
    assert ("warning: output.report_to asks for tensorboard, but the tensorboard package is not installed (pip "
            "install 'alignkit[tensorboard]'): not logging to tensorboard") in said
    logged = metrics(tmp_path / "run")
    for key in ("rewards/chosen", "rewards/rejected", "logps/chosen", "logps/rejected", "learning_rate",
                "rewards/pos", "logps/neg", "lr"):  # TRL's names, and the former ones for one release
        assert all(np.isfinite(m[key]) for m in logged), key
    assert logged[0]["rewards/chosen"] == logged[0]["rewards/pos"]
    assert (tmp_path / "run" / "wandb_id.txt").read_text().strip() == "abc123"
    assert calls[0][0] == "init" and calls[0][1]["id"] == "abc123" and calls[0][1]["resume"] == "allow"
    assert [c[1] for c in calls if c[0] == "log"] == [1, 2] and "rewards/chosen" in calls[1][2]
    assert calls[-1] == ("finish",)


def test_version_help_and_examples():
    version = invoke("--version")
    assert version.exit_code == 0 and version.stdout == f"alignkit {alignkit.__version__}\n"
    bare = invoke()
    assert bare.exit_code == 0 and "Usage:" in bare.stdout and "Commands:" in bare.stdout
    commands = typer.main.get_command(app).commands
    assert {"train", "sample", "validate", "recipes", "plugins", "eval", "extract", "plan", "bench"} <= set(commands)
    for name in commands:
        shown = invoke(name, "--help")
        assert shown.exit_code == 0 and "Examples:" in shown.stdout and f"alignkit {name}" in shown.stdout, name


def test_several_machines_need_a_rendezvous(tmp_path):
    one_error_line(invoke("train", make_run(tmp_path), "--nnodes", 2),
                   "--nnodes > 1 needs --rdzv-endpoint HOST:PORT, the same on every machine")


# ------------------------------------------------------------------------------ VAR's constructor keywords


def test_var_accepts_the_official_constructor_keywords_and_reads_vqvae_sizes(tmp_path, capsys):
    from var_support import TINY, VAE_TINY, VAR_TINY

    recipe = load_recipe(make_var_run(tmp_path), ["model.cond_drop_rate=0.2", "model.flash_if_available=false",
                                                 "model.fused_if_available=true"])
    assert recipe.uncond_ratio == 0.2  # the official label dropout, as the sampler's null-class rows
    assert "flash_if_available and fused_if_available: accepted and ignored" in capsys.readouterr().err
    assert load_recipe(tmp_path / "recipe.toml", ["sampler.uncond_ratio=0.05", "model.cond_drop_rate=0.2"]
                       ).uncond_ratio == 0.05  # the recipe's own setting wins
    config = {k: v for k, v in TINY.items() if k not in ("V", "Cvae", "ch")}  # not restated: read from the VQVAE
    policy = alignkit.load_policy("var", checkpoint=VAR_TINY, config=config, tokenizer=VAE_TINY)
    assert (policy.vocab_size, policy.Cvae) == (32, 8)


def test_tensorboard_tracker_continues_on_resume(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    path = make_run(tmp_path, steps=3, save_every=2, dropout=0.0)
    train(load_recipe(path, ['output.report_to=["tensorboard"]', "optim.max_steps=2"]), show_progress=False)
    train(load_recipe(path, ['output.report_to=["tensorboard"]']), resume=True, show_progress=False)
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("rewards/chosen")] == [1, 2, 3]
