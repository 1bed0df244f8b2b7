"""The plugin system: entry points, a real third-party package, broken plugins, conflicts."""

import importlib.metadata as metadata
import json
import tomllib
from pathlib import Path

import pytest

from alignkit import hookspecs
from alignkit.errors import PluginError
from alignkit.plugins import Plugins

from conftest import MINIMAL_RECIPE, run_cli

ROOT = Path(__file__).resolve().parent.parent


def test_third_party_plugin_is_listed_and_a_recipe_selects_it(site, recipe_dir):
    result = run_cli("plugins", "--json", site=site)
    assert result.returncode == 0, result.stderr
    components = json.loads(result.stdout)
    assert {"kind": "objective", "name": "ipo", "plugin": "ipo",
            "summary": "Identity Preference Optimisation (Azar et al. 2023)"} in components
    cca, = [c for c in components if c["name"] == "cca"]
    assert (cca["kind"], cca["plugin"]) == ("objective", "objectives")
    recipe = recipe_dir / "ipo.toml"
    recipe.write_text(MINIMAL_RECIPE.replace('name = "cca"\nbeta = 0.02\nlambda_ = 10', 'name = "ipo"\ntau = 0.05'))
    ok = run_cli("validate", str(recipe), site=site)
    assert ok.returncode == 0, ok.stderr
    assert "tau=0.05" in ok.stdout
    bad = run_cli("validate", str(recipe), "objective.tau=-1", site=site)
    assert bad.returncode == 2
    assert f"{recipe}: objective.tau: input should be greater than 0" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_broken_plugin_is_reported_by_name_and_the_rest_works(site):
    result = run_cli("plugins", "--json", site=site)
    assert result.returncode == 0
    assert "plugin 'broken' was skipped: import of 'alignkit_broken' failed: ModuleNotFoundError" in result.stderr
    names = {c["name"] for c in json.loads(result.stdout)}
    assert {"cca", "dpo", "ipo", "roll"} <= names


def test_disable_plugins_by_name(site):
    result = run_cli("plugins", "--json", site=site, env={"ALIGNKIT_DISABLE_PLUGINS": "ipo, broken"})
    assert result.returncode == 0
    assert result.stderr == ""
    names = {c["name"] for c in json.loads(result.stdout)}
    assert "ipo" not in names and "cca" in names


def test_two_plugins_registering_one_name_is_an_error_naming_both(tmp_path):
    (tmp_path / "alignkit_plugins.py").write_text(
        "from alignkit import ObjectiveSpec, hookimpl\n"
        "from alignkit_objectives import CCA, CCAConfig\n"
        "@hookimpl\n"
        "def alignkit_register_objectives():\n"
        "    return [ObjectiveSpec('cca', CCA, CCAConfig, 'a second cca')]\n")
    plugins = Plugins(tmp_path)
    with pytest.raises(PluginError, match=r"objective 'cca' is registered by two plugins: 'objectives' and 'inline:"):
        plugins.registry("objective")


def test_plugin_with_a_misspelled_hook_is_skipped(tmp_path):
    (tmp_path / "alignkit_plugins.py").write_text(
        "from alignkit import hookimpl\n"
        "@hookimpl\n"
        "def alignkit_register_objectivs():\n"
        "    return []\n")
    plugins = Plugins(tmp_path)
    (name, reason), = plugins.failures.items()
    assert name.startswith("inline:") and "unknown hook" in reason and "alignkit_register_objectivs" in reason
    assert "cca" in plugins.registry("objective")


def test_plugin_whose_registration_hook_raises_is_skipped(tmp_path):
    (tmp_path / "alignkit_plugins.py").write_text(
        "from alignkit import hookimpl\n"
        "@hookimpl\n"
        "def alignkit_register_pair_samplers():\n"
        "    raise RuntimeError('boom')\n")
    plugins = Plugins(tmp_path)
    assert "roll" in plugins.registry("pair_sampler")
    assert any("RuntimeError: boom" in reason for reason in plugins.failures.values())


def test_unknown_component_names_suggest_and_list():
    with pytest.raises(PluginError, match=r"unknown objective 'ccaa' \(did you mean 'cca'\?\); available: cca, cca_cfg"):
        Plugins().get("objective", "ccaa")


def test_builtins_are_registered_through_the_entry_point_group():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    declared = pyproject["project"]["entry-points"]["alignkit"]
    packages = [p.name for p in (ROOT / "plugins").iterdir() if (p / "__init__.py").is_file()]
    # every built-in plugin package, and only those, plus the paper recipes' folder (alignkit_recipes)
    assert sorted(declared.values()) == sorted([*packages, "alignkit_recipes"])
    installed = {ep.name: ep.value for ep in metadata.entry_points(group="alignkit") if ep.dist.name == "alignkit"}
    assert installed == declared
    plugins = Plugins()
    assert set(plugins.builtin) == set(declared)


def test_every_hook_is_documented():
    hooks = [name for name in dir(hookspecs) if name.startswith("alignkit_")]
    assert len(hooks) >= 13
    for name in hooks:
        doc = getattr(hookspecs, name).__doc__
        assert doc and len(doc.split()) >= 8, f"hook {name} needs a docstring"


def test_every_package_of_the_source_tree_is_installed():
    """pyproject lists packages by hand (plugins live outside alignkit/): a package it forgets would
    be missing from every installed copy."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed, folders = set(setuptools["packages"]), setuptools["package-dir"]
    found = {"alignkit." + ".".join(p.parent.relative_to(ROOT / "alignkit").parts) if p.parent != ROOT / "alignkit"
             else "alignkit" for p in (ROOT / "alignkit").rglob("__init__.py")}
    found |= {name for name, folder in folders.items() if (ROOT / folder).is_dir()}
    found |= {p.parent.name for p in (ROOT / "plugins").glob("*/__init__.py")}
    assert found == listed
