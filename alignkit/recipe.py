"""TOML recipes: typed sections, plugin-contributed options, ``key.path=value`` overrides, and errors
that name the file and the key.

A recipe has the sections ``[model]``, ``[tokenizer]`` (optional), ``[data]``, ``[objective]``,
``[sampler]``, ``[reference]``, ``[optim]``, ``[distributed]`` and ``[output]``. Sections backed by a
plugin (model, tokenizer, data, objective, sampler) take a name and then the options of that
plugin's config model, flat::

    [objective]
    name = "cca"
    beta = 0.02
    lambda_ = 1000

Strings may use ``${VAR}`` or ``${VAR:-default}``; relative paths are relative to the recipe file.
"""

from __future__ import annotations

import json
import math
import os
import re
import tomllib
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from alignkit.errors import AlignkitError, RecipeError, did_you_mean
from alignkit.interfaces import ComponentConfig

INPUT_PATH = "alignkit:input-path"
InputPath = Annotated[Path, INPUT_PATH]
"""A path the run reads: resolved against the recipe's folder and required to exist."""
OutputPath = Annotated[Path, "alignkit:output-path"]
"""A path the run writes: resolved against the recipe's folder."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class PluginSection(Section):
    """A section whose remaining keys are validated by the selected plugin's config model."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)
    _config: ComponentConfig | None = PrivateAttr(None)

    @property
    def config(self) -> ComponentConfig:
        if self._config is None:
            raise RuntimeError("recipe section was not resolved against its plugin (use load_recipe)")
        return self._config


class ModelSection(PluginSection):
    backbone: str = Field(description="backbone plugin, optionally with a size preset: 'llamagen-B', 'var-d16'")
    checkpoint: InputPath | None = Field(None, description="pretrained weights in the official layout (random init if unset)")


class TokenizerSection(PluginSection):
    name: str = Field(description="tokenizer plugin, optionally with a preset: 'llamagen-vq-16', 'var-vqvae'")
    checkpoint: InputPath | None = Field(None, description="tokenizer weights in the official layout")


class DataSection(PluginSection):
    name: str = Field(description="dataset plugin: 'codes' (pre-extracted token shards), …")
    num_workers: int | None = Field(None, ge=0, description="DataLoader worker processes per training process "
                                    "(default: 0 on the CPU, else min(8, CPUs per process))")


class ObjectiveSection(PluginSection):
    name: str = Field(description="objective plugin: cca, cca_cfg, dpo, unlearn, nca, …")


class SamplerSection(PluginSection):
    name: str = Field("roll", description="pair sampler: roll (official), randperm, derangement")
    uncond_ratio: float | None = Field(None, ge=0, lt=1, description="share of rows relabelled to the null class "
                                       "(unset: the objective's default, 0.1 for cca_cfg and 0 otherwise)")
    seed: int = Field(0, description="seed of the sampler's generator (offset by the process rank)")


class ReferenceSection(Section):
    train_mode: bool = Field(True, description="run the reference in train mode, dropout on, as the official CCA "
                             "code does; false = eval mode (TRL's choice)")
    checkpoint: InputPath | None = Field(None, description="reference weights (default: model.checkpoint)")


class OptimSection(Section):
    lr: float = Field(1e-5, gt=0, description="peak learning rate")
    betas: tuple[float, float] = Field((0.9, 0.95), description="AdamW betas (official: 0.9, 0.95)")
    eps: float = Field(1e-8, gt=0)
    weight_decay: float = Field(0.05, ge=0, description="on matrices and embeddings; none on norms, biases, positions")
    batch_size: int = Field(256, gt=0, description="images per optimiser step, all processes together")
    micro_batch_size: int | None = Field(None, gt=0, description="images per forward pass and process "
                                         "(default: batch_size / num_processes, no accumulation)")
    max_grad_norm: float = Field(1.0, ge=0, description="clip the global gradient norm (0 = off)")
    epochs: float = Field(1.0, gt=0, description="passes over the data (the paper: 1)")
    max_steps: int | None = Field(None, gt=0, description="train exactly this many optimiser steps (overrides epochs)")
    warmup_steps: int = Field(0, ge=0, description="linear warm-up from 0 over this many steps")
    schedule: Literal["constant", "linear", "cosine"] = Field("constant", description="after warm-up (CCA: constant)")
    final_lr_ratio: float = Field(0.0, ge=0, le=1, description="linear/cosine decay ends at lr × this")
    seed: int = Field(0, description="seed of initialisation-independent randomness: data order, dropout")

    @model_validator(mode="after")
    def _batches_divide(self) -> OptimSection:
        if self.micro_batch_size is not None and self.batch_size % self.micro_batch_size:
            raise ValueError(f"batch_size {self.batch_size} is not a multiple of micro_batch_size "
                             f"{self.micro_batch_size}")
        return self


class DistributedSection(PluginSection):
    backend: str = Field("single", description="training backend plugin: 'single' (one process) or 'deepspeed'")
    num_processes: int = Field(1, gt=0, description="worker processes; alignkit train launches them itself")
    precision: Literal["fp32", "bf16"] = Field("bf16", description="bf16 compute with fp32 master weights, or fp32")


class OutputSection(Section):
    dir: OutputPath = Field(Path("runs/{name}"), description="run folder; '{name}' is the recipe name")
    save_every: int = Field(1000, gt=0, description="checkpoint every N optimiser steps (and at the end)")
    keep_last: int = Field(2, gt=0, description="checkpoints to keep")
    log_every: int = Field(10, gt=0, description="write metrics every N optimiser steps")
    export: list[Literal["official", "safetensors"]] = Field(["official", "safetensors"],
                                                             description="final model formats")


class Recipe(Section):
    """A validated recipe. Build it with ``load_recipe``."""

    description: str = ""
    model: ModelSection
    tokenizer: TokenizerSection | None = None
    data: DataSection | None = None
    objective: ObjectiveSection
    sampler: SamplerSection = SamplerSection()
    reference: ReferenceSection = ReferenceSection()
    optim: OptimSection = OptimSection()
    distributed: DistributedSection = DistributedSection()
    output: OutputSection = OutputSection()

    _path: Path | None = PrivateAttr(None)

    @property
    def path(self) -> Path | None:
        return self._path

    @property
    def name(self) -> str:
        return self._path.stem if self._path else "recipe"

    @property
    def uncond_ratio(self) -> float:
        """The sampler's ratio, or the objective's default when the recipe leaves it unset."""
        if self.sampler.uncond_ratio is not None:
            return self.sampler.uncond_ratio
        from alignkit.plugins import get_plugins

        factory = get_plugins(self._path).get("objective", self.objective.name).spec.factory
        return float(getattr(factory, "default_uncond_ratio", 0.0))

    @property
    def output_dir(self) -> Path:
        return Path(str(self.output.dir).replace("{name}", self.name))

    def to_toml(self) -> str:
        """The recipe as resolved: overrides applied, plugin options filled in, paths absolute. A
        run folder keeps this copy, so it can be re-run or sampled from anywhere."""
        lines = [f"# resolved from {self._path}", f"description = {_toml_value(self.description)}"]
        for name in Recipe.model_fields:
            section = getattr(self, name)
            if name == "description" or section is None:
                continue
            values = {k: v for k, v in section.model_dump().items() if k not in (section.model_extra or {})}
            if isinstance(section, PluginSection) and section._config is not None:
                values.update(section._config.model_dump())
            if name == "output":
                values["dir"] = self.output_dir  # '{name}' would otherwise follow the copy's file name
            lines += ["", f"[{name}]"]
            lines += [f"{key} = {_toml_value(value)}" for key, value in values.items() if value is not None]
        return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value) if math.isfinite(value) else ("inf" if value > 0 else "-inf" if value < 0 else "nan")
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {_toml_value(v)}" for k, v in value.items()) + "}"
    return json.dumps(str(value))  # a TOML basic string is a JSON string


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
    from alignkit.plugins import get_plugins

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
    _resolve_paths(recipe, path.parent, (), check_paths, path)
    _cross_check(recipe, path, plugins)
    return recipe


def _cross_check(recipe: Recipe, path: Path, plugins: Any) -> None:
    objective = plugins.get("objective", recipe.objective.name).spec.factory
    if getattr(objective, "uses_uncond", False) and recipe.uncond_ratio <= 0:
        raise RecipeError(path, "sampler.uncond_ratio", f"objective '{recipe.objective.name}' trains the null class "
                          "and needs uncond_ratio > 0 (the paper uses 0.1)")
    backbone, _ = plugins.resolve_preset("backbone", recipe.model.backbone)
    if backbone.spec.tokenizer and recipe.tokenizer is None:
        raise RecipeError(path, "tokenizer", f"backbone '{recipe.model.backbone}' needs a [tokenizer] section "
                          f"(name = '{backbone.spec.tokenizer}' and its checkpoint)")
    backend = plugins.get("backend", recipe.distributed.backend).spec.factory
    if recipe.distributed.num_processes > 1 and not getattr(backend, "multi_process", False):
        raise RecipeError(path, "distributed.num_processes", f"backend '{recipe.distributed.backend}' runs one "
                          "process; use backend = 'deepspeed' for more")


# ------------------------------------------------------------------------------- overrides


def _apply_override(path: Path, data: dict[str, Any], item: str) -> str:
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise RecipeError(path, item, "an override must look like section.key=value")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # bare words are strings: objective.name=dpo
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
                resolved = _resolve(value, base, check and _is_input_path(info), recipe_path, (*where, name))
                object.__setattr__(target, name, resolved)
            elif isinstance(value, list) and value and all(isinstance(v, Path) for v in value):
                object.__setattr__(target, name, [
                    _resolve(v, base, check and _is_input_path(info), recipe_path, (*where, name, str(i)))
                    for i, v in enumerate(value)])


def _resolve(value: Path, base: Path, must_exist: bool, recipe_path: Path, loc: tuple[str, ...]) -> Path:
    resolved = value if value.is_absolute() else base / value
    if must_exist and not resolved.exists():
        raise RecipeError(recipe_path, ".".join(loc), f"file not found: {resolved}")
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
