import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

FIXTURES = Path(__file__).parent / "fixtures"
TEST_PLUGINS = Path(__file__).parent / "plugins"


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


@pytest.fixture(scope="session")
def site(tmp_path_factory) -> Path:
    """The test plugin packages (tests/plugins/*), installed with pip into a private site folder."""
    work = tmp_path_factory.mktemp("plugins")
    target = work / "site"
    sources = [shutil.copytree(TEST_PLUGINS / name, work / name) for name in ("alignkit-ipo", "alignkit-broken",
                                                                              "alignkit-toy")]
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "--target", str(target), *map(str, sources)], check=True, capture_output=True)
    return target


def run_cli(*args, site: Path | None = None, env: dict | None = None, cwd: Path | None = None):
    """``python -m alignkit.cli ARGS`` in a fresh process, with the test plugins' ``site`` on the path."""
    environment = {**os.environ, **(env or {})}
    if site is not None:
        environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), environment.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "alignkit.cli", *map(str, args)], capture_output=True, text=True,
                          env=environment, cwd=cwd)
