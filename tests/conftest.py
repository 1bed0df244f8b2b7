from pathlib import Path

import pytest
import torch

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


@pytest.fixture
def fixtures() -> Path:
    return FIXTURES


# An inline plugin (alignkit_plugins.py beside a recipe) with a backbone that recipes can name
# without real weights; validation never builds it.
TOY_PLUGIN = '''
from alignkit import BackboneSpec, ComponentConfig, hookimpl


class ToyConfig(ComponentConfig):
    width: int = 8
    num_classes: int = 10


def build(config, checkpoint=None, tokenizer=None):
    raise RuntimeError("the toy backbone is for recipe validation only")


@hookimpl
def alignkit_register_backbones():
    return [BackboneSpec("toy", build, ToyConfig, "a recipe-validation backbone", presets={"S": {"width": 4}})]
'''

MINIMAL_RECIPE = '''
description = "a test recipe"

[model]
backbone = "toy-S"

[objective]
name = "cca"
beta = 0.02
lambda_ = 10
'''


@pytest.fixture
def recipe_dir(tmp_path: Path) -> Path:
    """A folder with the toy inline plugin; write recipes into it."""
    (tmp_path / "alignkit_plugins.py").write_text(TOY_PLUGIN)
    return tmp_path
