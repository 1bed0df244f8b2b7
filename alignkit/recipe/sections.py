"""The sections of a recipe: typed models, one per ``[section]``, and the validated ``Recipe``."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from alignkit.interfaces import ComponentConfig

if TYPE_CHECKING:
    from alignkit.plugins import Component

INPUT_PATH = "alignkit:input-path"
InputPath = Annotated[Path, INPUT_PATH]
"""A path the run reads: resolved against the recipe's folder and required to exist."""
OUTPUT_PATH = "alignkit:output-path"
OutputPath = Annotated[Path, OUTPUT_PATH]
"""A path the run writes: resolved against the working directory, as other trainers do."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class PluginSection(Section):
    """A section whose remaining keys are validated by the selected plugin's config model."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)
    _config: ComponentConfig | None = PrivateAttr(None)
    _component: Component | None = PrivateAttr(None)

    @property
    def config(self) -> ComponentConfig:
        """The selected plugin's validated options."""
        if self._config is None:
            raise RuntimeError("recipe section was not resolved against its plugin (use load_recipe)")
        return self._config

    @property
    def component(self) -> Component:
        """The plugin component the section selects, resolved once when the recipe was validated."""
        if self._component is None:
            raise RuntimeError("recipe section was not resolved against its plugin (use load_recipe)")
        return self._component

    def build(self, **context: Any) -> Any:
        """The component, built from this section's options and ``context`` (its kind's documented keywords)."""
        return self.component.build(self.config, **context)


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
    divergence_factor: float | None = Field(None, gt=1, description="stop, before saving, when the loss exceeds "
                                            "this × its median over the last 100 steps (off when unset)")

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
    report_to: list[Literal["tensorboard", "wandb"]] = Field([], description="trackers besides metrics.jsonl "
                                                             "(the alignkit_trackers plugin; optional extras)")


class SampleSection(Section):
    """``alignkit sample`` defaults; other keys are the backbone's ``sampling_options``, checked with the model."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)
    guidance: float = Field(0.0, description="s of the CCA paper's Eq. 2 (0 = guidance-free)")
    image_size: int | None = Field(None, gt=0, description="resize the samples to this size (LlamaGen 384 -> 256)")


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
    sample: SampleSection = SampleSection()

    _path: Path | None = PrivateAttr(None)

    @property
    def path(self) -> Path | None:
        return self._path

    @property
    def name(self) -> str:
        return self._path.stem if self._path else "recipe"

    @property
    def uncond_ratio(self) -> float:
        """The sampler's ratio, else the backbone config's ``label_dropout`` (VAR's ``cond_drop_rate``),
        else the objective's default."""
        if self.sampler.uncond_ratio is not None:
            return self.sampler.uncond_ratio
        dropout = getattr(self.model.config, "label_dropout", None)
        return self.objective.component.spec.default_uncond_ratio if dropout is None else dropout

    @property
    def output_dir(self) -> Path:
        return Path(str(self.output.dir).replace("{name}", self.name))

    def settings(self, name: str) -> dict[str, Any]:
        """Section ``name``'s own keys and, for a plugin section, its plugin's options."""
        section = getattr(self, name)
        plugin = isinstance(section, PluginSection)
        values = {k: v for k, v in section.model_dump().items() if not plugin or k not in (section.model_extra or {})}
        if plugin and section._config is not None:
            values.update(section._config.model_dump())
        return values

    def to_toml(self) -> str:
        """The recipe as resolved: overrides applied, plugin options filled in, paths absolute. A
        run folder keeps this copy, so it can be re-run or sampled from anywhere."""
        lines = [f"# resolved from {self._path}", f"description = {_toml_value(self.description)}"]
        for name in Recipe.model_fields:
            section = getattr(self, name)
            if name == "description" or section is None:
                continue
            values = self.settings(name)
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


