"""The plugin contract as a plugin author meets it: the README's example trains verbatim, an installed
objective package trains, a failing factory is one line, and a third backbone from outside alignkit
is planned, trained, sampled and evaluated without any engine edit."""

import json
import re
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli

ROOT = Path(__file__).resolve().parent.parent

LLAMAGEN_RECIPE = """
[model]
backbone = "llamagen"
dim = 32
n_layer = 2
n_head = 2
multiple_of = 32
vocab_size = 64
block_size = 16
num_classes = 10
token_dropout_p = 0.0
resid_dropout_p = 0.0
ffn_dropout_p = 0.0

[data]
name = "codes-npz"
path = "codes.npz"

[objective]
{objective}

[optim]
lr = 1e-3
batch_size = 8
max_steps = 3

[distributed]
precision = "fp32"

[output]
dir = "run"
log_every = 1
"""


def write_codes(folder: Path, num_items: int = 32, seq_len: int = 16, vocab: int = 64, classes: int = 10) -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, classes, num_items)
    np.savez(folder / "codes.npz", tokens=rng.integers(0, vocab, (num_items, seq_len)), labels=labels)


def readme_plugin_examples() -> list[str]:
    """The Python blocks of the README's "Writing a plugin" section, verbatim."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Writing a plugin\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def trained_losses(folder: Path) -> list[float]:
    lines = (folder / "run" / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["loss"] for line in lines]


@pytest.mark.parametrize("example,objective,first_loss", [
    (0, 'name = "ipo"\ntau = 0.1', (1 / (2 * 0.1)) ** 2),  # r⁺ = r⁻ = 0 before the first update: (1/(2τ))²
    (1, 'name = "smoothed_mle"', None),
    (2, 'name = "spin"\nround_steps = 2', 0.6931471805599453),  # r = 0 at step 1: −log σ(0)
])
def test_the_readme_plugin_examples_train_verbatim(tmp_path, example, objective, first_loss):
    examples = readme_plugin_examples()
    assert len(examples) == 3
    (tmp_path / "alignkit_plugins.py").write_text(examples[example])
    write_codes(tmp_path)
    (tmp_path / "recipe.toml").write_text(LLAMAGEN_RECIPE.format(objective=objective))
    result = run_cli("train", tmp_path / "recipe.toml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    losses = trained_losses(tmp_path)
    assert len(losses) == 3 and all(np.isfinite(losses))
    if first_loss is not None:
        assert losses[0] == pytest.approx(first_loss)
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file()


def test_the_installed_ipo_package_trains(site, tmp_path):
    write_codes(tmp_path)
    (tmp_path / "recipe.toml").write_text(LLAMAGEN_RECIPE.format(objective='name = "ipo"\ntau = 0.05'))
    result = run_cli("train", tmp_path / "recipe.toml", site=site, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert trained_losses(tmp_path)[0] == pytest.approx(100.0)  # (1/(2τ))² at τ = 0.05


@pytest.mark.parametrize("factory,message", [
    ("lambda config: 1 / 0", "failed to build: ZeroDivisionError: division by zero"),
    ("lambda config: 'not an objective'", "its factory returned str, not an alignkit Objective"),
])
def test_a_failing_plugin_factory_is_one_line_naming_the_plugin(tmp_path, factory, message):
    (tmp_path / "alignkit_plugins.py").write_text(
        "from alignkit import ObjectiveSpec, hookimpl\n"
        "@hookimpl\n"
        "def alignkit_register_objectives():\n"
        f"    return [ObjectiveSpec('boom', {factory})]\n")
    write_codes(tmp_path)
    (tmp_path / "recipe.toml").write_text(LLAMAGEN_RECIPE.format(objective='name = "boom"'))
    result = run_cli("train", tmp_path / "recipe.toml", cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert re.match(rf"error: objective 'boom' \(plugin 'inline:{re.escape(str(tmp_path))}/alignkit_plugins.py'\): "
                    if "returned" in message else
                    rf"error: objective 'boom' \(plugin 'inline:{re.escape(str(tmp_path))}/alignkit_plugins.py'\) ",
                    result.stderr), result.stderr
    assert message in result.stderr


TOY_RECIPE = """
description = "a third-party backbone, end to end"

[model]
backbone = "gru"
num_classes = 4

[tokenizer]
name = "toy-pixels"

[data]
name = "codes-npz"
path = "codes.npz"

[objective]
name = "cca"
beta = 0.1
lambda_ = 1.0

[optim]
lr = 1e-2
batch_size = 16
max_steps = 4

[distributed]
precision = "fp32"

[output]
dir = "run"
"""


def test_a_third_party_backbone_is_planned_trained_sampled_and_evaluated(site, tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 64)
    tokens = np.clip(labels[:, None] * 2 + rng.integers(0, 2, (64, 16)), 0, 7)  # class c: grey level ≈ 2c
    np.savez(tmp_path / "codes.npz", tokens=tokens, labels=labels)
    (tmp_path / "recipe.toml").write_text(TOY_RECIPE)

    planned = run_cli("plan", "recipe.toml", "--gpu-memory", "1", "--json", site=site, cwd=tmp_path)
    assert planned.returncode == 0, planned.stderr
    plan = json.loads(planned.stdout)
    assert plan["backbone"] == "gru" and plan["shape"]["seq_len"] == 16 and plan["recommended"] is not None

    trained = run_cli("train", "recipe.toml", site=site, cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    assert (tmp_path / "run" / "final" / "model.pt").is_file()

    sampled = run_cli("sample", "run", "--num-per-class", 4, "--guidance", 1.0, "--top-k", 4, "--out", "samples",
                      "--no-progress", site=site, cwd=tmp_path)
    assert sampled.returncode == 0, sampled.stderr
    info = json.loads((tmp_path / "samples" / "sampling.json").read_text())
    assert info["num_images"] == 16 and info["options"] == {"top_k": 4}
    refused = run_cli("sample", "run", "--more-smooth", "--out", "other", site=site, cwd=tmp_path)
    assert refused.returncode == 2 and "ToyGRU backbone does not take the sampling option 'more_smooth'" in refused.stderr

    real = np.repeat(((tokens[:16, :, None] + 0.5) * 32).astype(np.uint8).reshape(16, 4, 4), 2, 1).repeat(2, 2)
    np.savez(tmp_path / "real.npz", arr_0=real[..., None])
    evaluated = run_cli("eval", "-s", "samples/samples.npz", "-r", "real.npz", "-f", "toy-pixels", "--json",
                        "eval.json", "--no-progress", site=site, cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    results = json.loads((tmp_path / "eval.json").read_text())
    assert results["num_samples"] == 16 and np.isfinite(results["fid"])
