"""Every shipped recipe validates, with its paths found through the environment variables it names."""

import re
import tomllib
from pathlib import Path

import pytest
import torch

from alignkit.cli.recipes import shipped_recipes
from alignkit.recipe import load_recipe
from alignkit_llamagen.model import LlamaGenSampling
from alignkit_var.model import VARSampling

RECIPES = sorted((Path(__file__).resolve().parent.parent / "recipes").glob("*.toml"))


def test_the_paper_models_have_recipes():
    names = {p.stem for p in RECIPES}
    for size in ("b", "l", "xl", "xxl", "3b"):
        assert {f"llamagen_{size}_cca", f"llamagen_{size}_cca_cfg"} <= names
    for depth in (16, 20, 24, 30):  # Table 4 gives CCA+CFG settings for LlamaGen only
        assert f"var_d{depth}_cca" in names and f"var_d{depth}_cca_cfg" not in names
    assert {"llamagen_3b_gft", "var_d16_ddo", "var_d30_ddo"} <= names  # the successors' papers' models
    assert shipped_recipes() == RECIPES  # what `alignkit recipes` lists, registered through the plugin hook


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_validates_with_its_assets_in_place(path, tmp_path, monkeypatch):
    text = path.read_text()
    for variable in set(re.findall(r"\$\{(\w+)\}", text)):
        monkeypatch.setenv(variable, str(tmp_path / variable))
    # create every file and folder the recipe reads, where the variables point
    for value in re.findall(r'"(\$\{\w+\}[^"]*)"', text):
        target = Path(re.sub(r"\$\{(\w+)\}", lambda m: str(tmp_path / m.group(1)), value))
        if target.suffix:
            target.parent.mkdir(parents=True, exist_ok=True)
            torch.save({}, target)  # a header that validation reads
        else:
            target.mkdir(parents=True, exist_ok=True)
    recipe = load_recipe(path)
    assert recipe.model.checkpoint.is_file() and recipe.tokenizer is not None
    assert recipe.optim.batch_size == 256 and recipe.uncond_ratio == 0.1
    assert recipe.distributed.num_processes == 8
    assert recipe.description
    objective = recipe.objective.config.model_dump()
    if recipe.objective.name == "gft":  # GFT.sh: β-input, 15 epochs at lr 2e-4
        assert objective["beta_range"] is not None and recipe.optim.epochs == 15 and recipe.optim.lr == 2e-4
    elif recipe.objective.name == "cca_cfg":  # Table 4
        assert recipe.objective.config.lambda_ == 1 and recipe.optim.epochs == 1
        assert recipe.objective.config.beta == (0.02 if path.stem == "llamagen_l_cca_cfg" else 0.1)
    else:
        assert recipe.objective.config.beta == 0.02
        assert recipe.optim.epochs == (4 if recipe.objective.name == "ddo" else 1)
    if objective.get("lambda_range") is not None or objective.get("beta_range") is not None:
        assert recipe.model.config.lambda_conditioning  # the trainer refuses per-row λ otherwise
    sampling = LlamaGenSampling if recipe.model.backbone.startswith("llamagen") else VARSampling
    assert sampling.model_validate(recipe.sample.model_extra)  # the backbone's official evaluation settings


@pytest.mark.parametrize("path", [p for p in RECIPES if p.stem.endswith("_cca_cfg")], ids=lambda p: p.stem)
def test_cca_cfg_recipes_are_not_the_cca_recipes_renamed(path):
    """A CCA+CFG recipe must differ from its CCA recipe in more than its name and comments."""
    def settings(recipe_path: Path) -> dict:
        data = tomllib.loads(recipe_path.read_text())
        data.pop("description", None)
        data["objective"].pop("name")
        return data

    assert settings(path) != settings(path.with_name(path.name.replace("_cca_cfg", "_cca")))
