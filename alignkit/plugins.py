"""The plugin manager: loading, registries of components, and lookups with clear errors.

Loading order: the built-in plugins (entry points of the ``alignkit`` group that the alignkit
distribution itself declares), then every other installed entry point of that group (sorted by
name), then an optional ``alignkit_plugins.py`` beside the recipe: code that is run.
``ALIGNKIT_DISABLE_PLUGINS=a,b`` blocks plugins by name (``inline``: every ``alignkit_plugins.py``).
A plugin that fails to import, or that implements a hook that does not exist, is recorded in
``failures`` (an inline one is also reported on stderr) and skipped; everything else keeps working.
"""

from __future__ import annotations

import importlib
import importlib.metadata as metadata
import importlib.util
import os
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pluggy

from alignkit import hookspecs
from alignkit.errors import AlignkitError, PluginError, did_you_mean
from alignkit.interfaces import SPEC_TYPES, ComponentConfig, ComponentSpec

ENTRY_POINT_GROUP = "alignkit"
INLINE_PLUGIN_FILE = "alignkit_plugins.py"
DISABLE_ENV = "ALIGNKIT_DISABLE_PLUGINS"
_DIST_NAME = "alignkit"

_REGISTRATION_HOOKS = {
    "objective": "alignkit_register_objectives",
    "pair_sampler": "alignkit_register_pair_samplers",
    "backbone": "alignkit_register_backbones",
    "tokenizer": "alignkit_register_tokenizers",
    "dataset": "alignkit_register_datasets",
    "feature_extractor": "alignkit_register_feature_extractors",
    "backend": "alignkit_register_backends",
}
KINDS = tuple(_REGISTRATION_HOOKS)


@dataclass(frozen=True)
class Component:
    """One registered component and the plugin that registered it."""

    kind: str
    name: str
    plugin: str
    spec: ComponentSpec

    @property
    def summary(self) -> str:
        return self.spec.summary

    def build(self, config: ComponentConfig, **context: Any) -> Any:
        """``spec.factory(config, **context)``; a factory that fails, or builds something that is not
        the kind's interface, is one ``AlignkitError`` naming the component and its plugin."""
        where = f"{self.kind.replace('_', ' ')} '{self.name}' (plugin '{self.plugin}')"
        try:
            built = self.spec.factory(config, **context)
        except AlignkitError:  # already a message for the user
            raise
        except Exception as exc:  # a plugin's bug must not end in a traceback that hides whose it is
            raise PluginError(f"{where} failed to build: {type(exc).__name__}: {exc}") from None
        expected = self.spec.builds
        if expected is not None and not isinstance(built, expected):
            raise PluginError(f"{where}: its factory returned {type(built).__name__}, not an alignkit "
                              f"{expected.__name__}")
        return built


class Plugins:
    """A loaded set of plugins and the components they register."""

    def __init__(self, inline_dir: Path | None = None):
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.failures: dict[str, str] = {}
        self.builtin: list[str] = []
        self.versions: dict[str, str] = {}
        self._registries: dict[str, dict[str, Component]] = {}
        disabled = {n.strip() for n in os.environ.get(DISABLE_ENV, "").split(",") if n.strip()}
        for name in disabled:
            self.pm.set_blocked(name)
        entry_points = _entry_points()
        unknown = {n for n in disabled - {ep.name for ep in entry_points} if n != "inline" and ":" not in n}
        if unknown and inline_dir is None and int(os.environ.get("RANK", "0")) == 0:  # once per process
            print(f"warning: {DISABLE_ENV} names no installed plugin: {', '.join(sorted(unknown))} (installed: "
                  f"{', '.join(ep.name for ep in entry_points)}; 'inline' for alignkit_plugins.py files)",
                  file=sys.stderr)
        for ep in entry_points:
            if ep.name in disabled:
                continue
            dist = ep.dist.name if ep.dist is not None else ""
            try:
                plugin = ep.load()
            except Exception as exc:  # a broken third-party package must not break alignkit
                self.failures[ep.name] = f"import of {ep.value!r} failed: {type(exc).__name__}: {exc}"
                continue
            if self._register(plugin, ep.name) and _is_builtin(dist):
                self.builtin.append(ep.name)
            if ep.dist is not None:
                self.versions[ep.name] = f"{ep.dist.name} {ep.dist.version}"
        path = Path(inline_dir or ".") / INLINE_PLUGIN_FILE
        if inline_dir is not None and not {"inline", f"inline:{path}"} & disabled:
            self._load_inline(path)

    # ------------------------------------------------------------------ loading

    def _register(self, plugin: Any, name: str) -> bool:
        try:
            self.pm.register(plugin, name=name)
        except ValueError as exc:  # the same module or name registered twice
            self.failures[name] = str(exc)
            return False
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            self.pm.unregister(name=name)
            self.failures[name] = f"implements an unknown hook: {exc}"
            return False
        return True

    def _load_inline(self, path: Path) -> None:
        if not path.is_file():
            return
        name = f"inline:{path}"
        module_name = f"alignkit_inline_{abs(hash(str(path.resolve())))}"
        try:
            spec = importlib.util.spec_from_file_location(module_name, path)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module
            spec.loader.exec_module(module)
        except Exception as exc:
            self.failures[name] = f"import failed: {type(exc).__name__}: {exc}"
            if int(os.environ.get("RANK", "0")) == 0:
                print(f"warning: plugin {path} was skipped: {self.failures[name]}", file=sys.stderr)
            return
        self._register(module, name)

    # ------------------------------------------------------------------ registries

    def registry(self, kind: str) -> dict[str, Component]:
        """All components of one kind by name; two plugins registering one name is an error."""
        if kind not in _REGISTRATION_HOOKS:
            raise ValueError(f"unknown component kind {kind!r}; kinds: {', '.join(KINDS)}")
        if kind in self._registries:
            return self._registries[kind]
        spec_type = SPEC_TYPES[kind]
        registry: dict[str, Component] = {}
        hook = getattr(self.pm.hook, _REGISTRATION_HOOKS[kind])
        # Call each implementation on its own so every component is traced back to its plugin and a
        # plugin whose hook raises is reported without hiding the others' components.
        for impl in hook.get_hookimpls():  # registration order
            try:
                specs = list(impl.function() or ())
                for spec in specs:
                    if not isinstance(spec, spec_type):
                        raise TypeError(f"{_REGISTRATION_HOOKS[kind]} returned {type(spec).__name__}, "
                                        f"expected {spec_type.__name__}")
            except Exception as exc:
                self.failures[impl.plugin_name] = f"{_REGISTRATION_HOOKS[kind]} failed: {type(exc).__name__}: {exc}"
                continue
            for spec in specs:
                if spec.name in registry:
                    other = registry[spec.name].plugin
                    raise PluginError(f"{kind} '{spec.name}' is registered by two plugins: '{other}' and "
                                      f"'{impl.plugin_name}'; uninstall one or disable it with "
                                      f"{DISABLE_ENV}={impl.plugin_name}")
                registry[spec.name] = Component(kind, spec.name, impl.plugin_name, spec)
        self._registries[kind] = registry
        return registry

    def components(self) -> list[Component]:
        return [c for kind in KINDS for c in self.registry(kind).values()]

    def get(self, kind: str, name: str) -> Component:
        """The component ``name`` of ``kind``, or a ``PluginError`` listing what exists."""
        registry = self.registry(kind)
        if name in registry:
            return registry[name]
        label = kind.replace("_", " ")
        available = ", ".join(sorted(registry)) or "none"
        message = f"unknown {label} '{name}'{did_you_mean(name, registry)}; available: {available}"
        if self.failures:
            message += f" (plugins that failed to load: {', '.join(sorted(self.failures))})"
        raise PluginError(message)

    def resolve_preset(self, kind: str, name: str) -> tuple[Component, dict[str, Any]]:
        """``llamagen-L`` -> (the ``llamagen`` component, its ``L`` preset); plain names have no preset."""
        registry = self.registry(kind)
        if name not in registry and "-" in name:
            base, _, preset = name.rpartition("-")
            if base in registry:
                presets = registry[base].spec.presets
                if preset in presets:
                    return registry[base], dict(presets[preset])
                raise PluginError(f"{kind} '{base}' has no preset '{preset}'{did_you_mean(preset, presets)}; "
                                  f"presets: {', '.join(presets) or 'none'}")
        return self.get(kind, name), {}

    def preset_names(self, kind: str) -> list[str]:
        """Every accepted name of ``kind``, presets included (``llamagen``, ``llamagen-B``, …)."""
        names = []
        for name, component in self.registry(kind).items():
            names.append(name)
            names += [f"{name}-{p}" for p in component.spec.presets]
        return names


def _entry_points() -> list[metadata.EntryPoint]:
    eps = {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}
    # built-ins first, then third-party plugins by name
    return sorted(eps.values(), key=lambda ep: (not _is_builtin(ep.dist.name if ep.dist else ""), ep.name))


def _is_builtin(dist_name: str) -> bool:
    return dist_name.replace("_", "-").lower() == _DIST_NAME


@cache
def _cached(inline_dir: str | None) -> Plugins:
    return Plugins(Path(inline_dir) if inline_dir else None)


def get_plugins(recipe_path: str | os.PathLike | None = None) -> Plugins:
    """The process-wide plugin set, plus the inline plugin beside ``recipe_path`` when given."""
    inline_dir = str(Path(recipe_path).resolve().parent) if recipe_path else None
    if inline_dir and not (Path(inline_dir) / INLINE_PLUGIN_FILE).is_file():
        inline_dir = None
    return _cached(inline_dir)


def reset_plugins() -> None:
    """Forget loaded plugin sets (tests, or after installing a plugin in a running process)."""
    _cached.cache_clear()
    importlib.invalidate_caches()
