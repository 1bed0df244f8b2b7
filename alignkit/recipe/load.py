"""Reading a recipe: TOML, ``key.path=value`` overrides, ``${VAR}``, paths, plugin options, and
errors that name the file and the key.

A recipe has the sections ``[model]``, ``[tokenizer]`` (optional), ``[data]``, ``[objective]``,
``[sampler]``, ``[reference]``, ``[optim]``, ``[distributed]`` and ``[output]``. Sections backed by a
plugin (model, tokenizer, data, objective, sampler) take a name and then the options of that
plugin's config model, flat::

    [objective]
    name = "cca"
    beta = 0.02
    lambda_ = 1000

Strings may use ``${VAR}`` or ``${VAR:-default}``. Relative input paths are relative to the recipe
file, relative output paths (``output.dir``) to the working directory.
"""

from __future__ import annotations

import os
import re
import tomllib
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from alignkit.checkpoints import header_problem
from alignkit.errors import AlignkitError, RecipeError, did_you_mean
from alignkit.plugins import get_plugins
from alignkit.recipe.sections import INPUT_PATH, OUTPUT_PATH, PluginSection, Recipe
from alignkit.values import parse_value

# plugin-backed sections: (section, key naming the plugin, component kind)
_PLUGIN_SECTIONS = (("model", "backbone", "backbone"), ("tokenizer", "name", "tokenizer"), ("data", "name", "dataset"),
                    ("objective", "name", "objective"), ("sampler", "name", "pair_sampler"),
                    ("distributed", "backend", "backend"))
_SECTION_MODELS: dict[str, type[BaseModel]] = {
    name: info.annotation.__args__[0] if name in ("tokenizer", "data") else info.annotation  # type: ignore[union-attr]
    for name, info in Recipe.model_fields.items() if name != "description"
}
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def load_recipe(path: str | os.PathLike, overrides: list[str] | tuple[str, ...] = (), *,
                check_paths: bool = True) -> Recipe:
    """Read, override, validate and resolve a recipe; any mistake raises one ``RecipeError``.

    ``check_paths=False`` skips the existence checks of input files (and leaves ``${VAR}`` of unset
    variables as written), for validating recipes on a machine without the assets.
    """
    path = Path(path)
    if not path.is_file():
        raise RecipeError(path, None, "recipe file not found")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(path, None, f"invalid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise RecipeError(path, None, "not a text file") from None
    from_cli = {_apply_override(path, data, item) for item in overrides}
    data = _expand_vars(path, data, (), strict=check_paths)
    return validate_recipe(data, path, check_paths=check_paths, from_cli=from_cli)


def validate_recipe(data: dict[str, Any], path: Path, *, check_paths: bool = True,
                    from_cli: set[str] | frozenset[str] = frozenset()) -> Recipe:
    """Validate an already parsed recipe (``path`` locates errors and relative paths)."""
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        raise _recipe_error(path, exc, Recipe, (), from_cli) from None
    recipe._path = path
    plugins = get_plugins(path)
    for section_name, key, kind in _PLUGIN_SECTIONS:
        section = getattr(recipe, section_name)
        if section is None:
            continue
        name = getattr(section, key)
        try:
            component, preset = plugins.resolve_preset(kind, name)
        except AlignkitError as exc:
            raise RecipeError(path, f"{section_name}.{key}", str(exc)) from None
        config_cls = component.spec.config
        options = {**preset, **(section.model_extra or {})}
        try:
                section._config = config_cls.model_validate(options)
        except ValidationError as exc:
            raise _recipe_error(path, exc, config_cls, (section_name,), from_cli) from None
        section._component = component
    _resolve_paths(recipe, path.parent, (), check_paths, path)
    _cross_check(recipe, path)
    return recipe


def _cross_check(recipe: Recipe, path: Path) -> None:
    if recipe.objective.component.spec.trains_null and recipe.uncond_ratio <= 0:
        raise RecipeError(path, "sampler.uncond_ratio", f"objective '{recipe.objective.name}' trains the null class "
                          "and needs uncond_ratio > 0 (the paper uses 0.1)")
    needed = recipe.model.component.spec.tokenizer
    if needed and recipe.tokenizer is None:
        raise RecipeError(path, "tokenizer", f"backbone '{recipe.model.backbone}' needs a [tokenizer] section "
                          f"(name = '{needed}' and its checkpoint)")
    existing = next(p for p in (recipe.output_dir, *recipe.output_dir.parents) if p.exists())
    if not existing.is_dir():
        raise RecipeError(path, "output.dir", f"{existing} is a file, so {recipe.output_dir} cannot be a folder")
    if recipe.distributed.num_processes > 1 and not recipe.distributed.component.spec.multi_process:
        raise RecipeError(path, "distributed.num_processes", f"backend '{recipe.distributed.backend}' runs one "
                          "process; use backend = 'deepspeed' for more")


# ------------------------------------------------------------------------------- overrides


def _apply_override(path: Path, data: dict[str, Any], item: str) -> str:
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise RecipeError(path, item, "an override must look like section.key=value")
    value = parse_value(raw)  # bare words are strings: objective.name=dpo
    parts = key.split(".")
    node = data
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise RecipeError(path, ".".join(parts[: i + 1]), f"is a value, not a section (override {item!r})")
        node = child
    node[parts[-1]] = value
    return key


def _expand_vars(path: Path, value: Any, loc: tuple[str, ...], strict: bool) -> Any:
    if isinstance(value, dict):
        return {k: _expand_vars(path, v, (*loc, k), strict) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_vars(path, v, (*loc, str(i)), strict) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        if strict:
            raise RecipeError(path, ".".join(loc), f"environment variable {name} is not set")
        return match.group(0)

    return _VAR.sub(substitute, value)


# ------------------------------------------------------------------------------- paths


def _resolve_paths(model: BaseModel, base: Path, loc: tuple[str, ...], check: bool, recipe_path: Path) -> None:
    targets: list[tuple[BaseModel, tuple[str, ...]]] = [(model, loc)]
    if isinstance(model, PluginSection) and model._config is not None:
        targets.append((model._config, loc))
    for target, where in targets:
        for name, info in type(target).model_fields.items():
            value = getattr(target, name)
            if isinstance(value, BaseModel):
                _resolve_paths(value, base, (*where, name), check, recipe_path)
            elif isinstance(value, Path):
                output = OUTPUT_PATH in info.metadata
                resolved = _resolve(value, Path.cwd() if output else base, check and _is_input_path(info),
                                    recipe_path, (*where, name))
                object.__setattr__(target, name, resolved)
            elif isinstance(value, list) and value and all(isinstance(v, Path) for v in value):
                object.__setattr__(target, name, [
                    _resolve(v, base, check and _is_input_path(info), recipe_path, (*where, name, str(i)))
                    for i, v in enumerate(value)])


def _resolve(value: Path, base: Path, must_exist: bool, recipe_path: Path, loc: tuple[str, ...]) -> Path:
    resolved = value if value.is_absolute() else base / value
    if must_exist and not resolved.exists():
        raise RecipeError(recipe_path, ".".join(loc), f"file not found: {resolved}")
    problem = header_problem(resolved) if must_exist and resolved.is_file() else None
    if problem:
        raise RecipeError(recipe_path, ".".join(loc), f"{resolved}: {problem}")
    return resolved


def _is_input_path(info: Any) -> bool:
    if INPUT_PATH in info.metadata:
        return True

    def marked(annotation: Any) -> bool:
        if INPUT_PATH in getattr(annotation, "__metadata__", ()):
            return True
        return any(marked(arg) for arg in typing.get_args(annotation))

    return marked(info.annotation)


# ------------------------------------------------------------------------------- errors


def _recipe_error(path: Path, exc: ValidationError, root: type[BaseModel], prefix: tuple[str, ...],
                  from_cli: set[str] | frozenset[str]) -> RecipeError:
    messages = []
    for err in exc.errors():
        loc = tuple(str(p) for p in err["loc"])
        key = ".".join((*prefix, *loc))
        messages.append((key, _describe(err, root, loc, prefix)
                         + (" (set on the command line)" if key in from_cli else "")))
    key, message = messages[0]
    if len(messages) > 1:
        message += "; also " + "; ".join(f"{k}: {m}" for k, m in messages[1:])
    return RecipeError(path, key, message)


def _describe(err: Any, root: type[BaseModel], loc: tuple[str, ...], prefix: tuple[str, ...]) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        allowed = _allowed_keys(root, loc[:-1], prefix)
        what = "section" if not prefix and len(loc) == 1 else "key"
        return (f"unknown {what} '{loc[-1]}'{did_you_mean(loc[-1], allowed)}; "
                f"allowed: {', '.join(allowed) or 'none'}")
    if kind == "missing":
        return "required section is missing" if not prefix and len(loc) == 1 else "required key is missing"
    message = err["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, "):]
    if "input" in err and not isinstance(err["input"], dict):
        message += f", got {err['input']!r}"
    return message[0].lower() + message[1:]


def _allowed_keys(root: type[BaseModel], loc: tuple[str, ...], prefix: tuple[str, ...]) -> list[str]:
    model: Any = root
    for part in loc:
        field = model.model_fields.get(part) if isinstance(model, type) and issubclass(model, BaseModel) else None
        if field is None:
            return []
        model = _SECTION_MODELS.get(part, field.annotation) if model is Recipe else field.annotation
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return []
    keys = list(model.model_fields)
    if prefix:  # a plugin config: its section's own keys are allowed too
        keys = list(_SECTION_MODELS[prefix[0]].model_fields) + keys
    return keys
