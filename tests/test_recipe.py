"""Recipes: validation, overrides, and one clear message (file + key path, exit code 2) per mistake."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from alignkit.cli.main import app
from alignkit.errors import RecipeError
from alignkit.recipe import load_recipe

from conftest import MINIMAL_RECIPE

runner = CliRunner()


def write(recipe_dir: Path, text: str, name: str = "r.toml") -> Path:
    path = recipe_dir / name
    path.write_text(text)
    return path


def validate(path: Path, *overrides: str):
    return runner.invoke(app, ["validate", str(path), *overrides])


def test_minimal_recipe_validates_with_defaults(recipe_dir):
    recipe = load_recipe(write(recipe_dir, MINIMAL_RECIPE))
    assert recipe.objective.config.lambda_ == 10 and recipe.objective.config.beta == 0.02
    assert recipe.model.config.width == 4  # from the toy backbone's "S" preset
    assert recipe.sampler.name == "roll" and recipe.uncond_ratio == 0.0
    assert recipe.reference.train_mode is True
    assert recipe.optim.betas == (0.9, 0.95)
    assert recipe.output_dir == Path.cwd() / "runs" / "r"  # output folders: from the working directory


def test_cca_cfg_defaults_to_ten_percent_null_rows(recipe_dir):
    recipe = load_recipe(write(recipe_dir, MINIMAL_RECIPE.replace('"cca"', '"cca_cfg"')))
    assert recipe.uncond_ratio == 0.1


def test_overrides_reach_plugin_and_core_keys(recipe_dir):
    path = write(recipe_dir, MINIMAL_RECIPE)
    recipe = load_recipe(path, ["objective.lambda_=300", "optim.lr=2e-5", "sampler.name=derangement",
                                "model.width=16", "output.dir=out/{name}", "optim.betas=[0.9, 0.99]"])
    assert recipe.objective.config.lambda_ == 300
    assert recipe.optim.lr == 2e-5 and recipe.optim.betas == (0.9, 0.99)
    assert recipe.sampler.name == "derangement"
    assert recipe.model.config.width == 16
    assert recipe.output_dir == Path.cwd() / "out" / "r"


def test_env_vars_and_relative_paths(recipe_dir, monkeypatch):
    (recipe_dir / "weights").mkdir()
    (recipe_dir / "weights" / "base.pt").write_bytes(b"PK\x03\x04 a torch zip header")
    monkeypatch.setenv("CKPT_DIR", "weights")
    text = MINIMAL_RECIPE.replace('backbone = "toy-S"', 'backbone = "toy-S"\ncheckpoint = "${CKPT_DIR}/base.pt"')
    recipe = load_recipe(write(recipe_dir, text))
    assert recipe.model.checkpoint == recipe_dir / "weights" / "base.pt"


def test_validate_command_prints_the_resolved_recipe(recipe_dir):
    result = validate(write(recipe_dir, MINIMAL_RECIPE))
    assert result.exit_code == 0, result.output
    assert "is valid" in result.stdout and "lambda_=10" in result.stdout and "uncond_ratio=0.0" in result.stdout


MISTAKES = {
    "unknown section": (
        "[optimizer]\nlr = 1e-5\n", [],
        "r.toml: optimizer: unknown section 'optimizer' (did you mean 'optim'?)"),
    "misspelled plugin key": (
        MINIMAL_RECIPE.replace("lambda_ = 10", "lamda_ = 10"), [],
        "r.toml: objective.lamda_: unknown key 'lamda_' (did you mean 'lambda_'?); allowed: name, lambda_, normalize, lambda_range, same_label, beta"),
    "misspelled core key": (
        "[optim]\nlearning_rate = 1e-5\n", [],
        "r.toml: optim.learning_rate: unknown key 'learning_rate'"),
    "wrong type": (
        MINIMAL_RECIPE.replace("beta = 0.02", 'beta = "small"'), [],
        "r.toml: objective.beta: input should be a valid number, unable to parse string as a number, got 'small'"),
    "out of range": (
        "[sampler]\nuncond_ratio = 1.5\n", [],
        "r.toml: sampler.uncond_ratio: input should be less than 1, got 1.5"),
    "unknown objective": (
        MINIMAL_RECIPE.replace('name = "cca"', 'name = "cca2"'), [],
        "r.toml: objective.name: unknown objective 'cca2' (did you mean 'cca'?); available: cca, cca_cfg, ddo, dpo, gft"),
    "unknown backbone preset": (
        MINIMAL_RECIPE.replace('"toy-S"', '"toy-XL"'), [],
        "r.toml: model.backbone: backbone 'toy' has no preset 'XL'; presets: S"),
    "missing section": (
        '[model]\nbackbone = "toy"\n', [],
        "r.toml: objective: required section is missing"),
    "missing key": (
        "[model]\ncheckpoint = 'x.pt'\n", [],
        "r.toml: model.backbone: required key is missing"),
    "missing checkpoint file": (
        MINIMAL_RECIPE.replace('backbone = "toy-S"', 'backbone = "toy-S"\ncheckpoint = "weights/nope.pt"'), [],
        "r.toml: model.checkpoint: file not found: "),
    "unset environment variable": (
        MINIMAL_RECIPE.replace('backbone = "toy-S"', 'backbone = "toy-S"\ncheckpoint = "${ALIGNKIT_TEST_UNSET}/b.pt"'),
        [], "r.toml: model.checkpoint: environment variable ALIGNKIT_TEST_UNSET is not set"),
    "invalid TOML": (
        "[model]\nbackbone = toy\n", [],
        "r.toml: invalid TOML: Invalid value (at line 2, column 12)"),
    "null class objective without null rows": (
        MINIMAL_RECIPE.replace('"cca"', '"cca_cfg"') + "\n[sampler]\nuncond_ratio = 0.0\n", [],
        "r.toml: sampler.uncond_ratio: objective 'cca_cfg' trains the null class and needs uncond_ratio > 0"),
    "batch not divisible": (
        MINIMAL_RECIPE + "\n[optim]\nbatch_size = 10\nmicro_batch_size = 4\n", [],
        "r.toml: optim: batch_size 10 is not a multiple of micro_batch_size 4"),
    "bad override key": (
        MINIMAL_RECIPE, ["objective.bta=0.1"],
        "r.toml: objective.bta: unknown key 'bta' (did you mean 'beta'?)"),
    "override that is not key=value": (
        MINIMAL_RECIPE, ["lambda_"],
        "r.toml: lambda_: an override must look like section.key=value"),
    "wrong type on the command line": (
        MINIMAL_RECIPE, ["optim.lr=fast"],
        "r.toml: optim.lr: input should be a valid number, unable to parse string as a number, got 'fast' "
        "(set on the command line)"),
}


@pytest.mark.parametrize("case", list(MISTAKES))
def test_each_mistake_gets_one_clear_message(recipe_dir, case, monkeypatch):
    monkeypatch.delenv("ALIGNKIT_TEST_UNSET", raising=False)
    text, overrides, expected = MISTAKES[case]
    if "[model]" not in text:
        text = MINIMAL_RECIPE + "\n" + text
    path = write(recipe_dir, text)
    result = validate(path, *overrides)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    message = result.stderr.strip()
    assert message.startswith("error: ") and len(message.splitlines()) == 1
    assert expected.replace("r.toml", str(path)) in message


def test_missing_recipe_file(tmp_path):
    result = validate(tmp_path / "nope.toml")
    assert result.exit_code == 2
    assert f"error: {tmp_path / 'nope.toml'}: recipe file not found" in result.stderr


def test_load_recipe_raises_recipe_error_with_location(recipe_dir):
    path = write(recipe_dir, MINIMAL_RECIPE.replace("lambda_ = 10", "lambda_ = -1"))
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert info.value.key == "objective.lambda_" and info.value.file == str(path)


def test_paths_need_not_exist_without_path_checks(recipe_dir):
    text = MINIMAL_RECIPE.replace('backbone = "toy-S"', 'backbone = "toy-S"\ncheckpoint = "${NOT_SET_HERE}/b.pt"')
    recipe = load_recipe(write(recipe_dir, text), check_paths=False)
    assert str(recipe.model.checkpoint).endswith("${NOT_SET_HERE}/b.pt")


def test_resolved_toml_round_trips(recipe_dir, monkeypatch):
    (recipe_dir / "w.pt").write_bytes(b"PK\x03\x04 a torch zip header")
    text = MINIMAL_RECIPE.replace('backbone = "toy-S"', 'backbone = "toy-S"\ncheckpoint = "w.pt"')
    recipe = load_recipe(write(recipe_dir, text), ["optim.lr=3e-5", "objective.same_label=negative"])
    elsewhere = recipe_dir / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "alignkit_plugins.py").write_text((recipe_dir / "alignkit_plugins.py").read_text())
    copy = write(elsewhere, recipe.to_toml(), "copy.toml")
    again = load_recipe(copy)
    assert again.model.checkpoint == recipe_dir / "w.pt"  # absolute: found from any folder
    assert again.optim == recipe.optim and again.objective.config == recipe.objective.config
    assert again.model.config.model_dump() == recipe.model.config.model_dump() and again.sampler == recipe.sampler
    assert again.output_dir == recipe.output_dir
