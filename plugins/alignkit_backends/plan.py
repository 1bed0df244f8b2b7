"""Per-GPU memory of a recipe under every DeepSpeed setting, and the cheapest that fits (the memory
of each part: ``alignkit_backends.memory``).

**Fitting.** A setting fits when its per-GPU total is at most (1 − 10 %) of the GPU memory: the CUDA
context and NCCL's buffers take 0.5–1.5 GiB, PyTorch's caching allocator loses 5–10 % to
fragmentation, and the activation estimate is itself only close (see ``activation_bytes``). The CPU
figure already carries DeepSpeed's 1.5 factor, so it is compared with ``--cpu-memory`` as is.

**Cheapest** is the first setting of ``COST_ORDER`` that fits, an order by communication and offload
cost per optimiser step of A accumulated micro-batches: stages 0 and 1 reduce the gradients once per
step (an all-reduce moves the same bytes as ZeRO-1's reduce-scatter + all-gather), stage 1 with 1/N
of the optimiser's memory, so it comes first and stage 0 never wins; stage 2 reduce-scatters the
gradients after every micro-batch (A times); stage 3 also all-gathers every parameter in every
forward and backward, the reference's too. Offloading puts AdamW on the CPU and the gradients and
weights on PCIe every step, the slowest of all, so offloaded settings come last, stage by stage.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from alignkit.errors import AlignkitError
from alignkit.recipe import Recipe
from alignkit_backends.memory import (DEEPSPEED_BUCKETS, GiB, Memory, PlannedModel, Setting, Workload, memory,
                                      model_shape)

SAFETY_MARGIN = 0.10
"""Share of each GPU's memory left free (CUDA context, NCCL buffers, fragmentation, estimate error)."""
SETTINGS = (Setting(0), Setting(1), Setting(2), Setting(3), Setting(1, True), Setting(2, True), Setting(3, True),
            Setting(3, True, True))
"""Every setting the planner compares, in table order."""
COST_ORDER = (Setting(1), Setting(0), Setting(2), Setting(3), Setting(1, True), Setting(2, True), Setting(3, True),
              Setting(3, True, True))
"""The same settings, cheapest first (why: the module docstring)."""



@dataclass(frozen=True)
class Row:
    setting: Setting
    memory: Memory
    fits: bool
    max_micro_batch_size: int | None  # the largest micro-batch that fits with this setting


@dataclass(frozen=True)
class Plan:
    recipe: str
    backbone: str
    shape: PlannedModel
    gpus: int
    gpus_per_node: int
    gpu_memory_gib: float
    cpu_memory_gib: float | None
    micro_batch_size: int
    rows: list[Row]
    recipe_setting: Setting | None  # None when the recipe does not use the deepspeed backend
    recommended: Setting | None
    recommended_micro_batch_size: int | None

    def row(self, setting: Setting) -> Row:
        """The row of ``setting``; the recipe's own setting has one even when it is not in ``SETTINGS``."""
        return next(r for r in self.rows if r.setting == setting)

    def to_json(self) -> dict[str, Any]:
        def gib(value: int) -> float:
            return round(value / GiB, 3)

        return {
            "recipe": self.recipe, "backbone": self.backbone, **asdict(self.shape), "gpus": self.gpus,
            "gpus_per_node": self.gpus_per_node, "gpu_memory_gib": self.gpu_memory_gib,
            "cpu_memory_gib": self.cpu_memory_gib, "micro_batch_size": self.micro_batch_size,
            "safety_margin": SAFETY_MARGIN,
            "settings": [{**asdict(r.setting), "label": r.setting.label, "params_gib": gib(r.memory.params),
                          "grads_gib": gib(r.memory.grads), "optimizer_gib": gib(r.memory.optimizer),
                          "model_states_gib": gib(r.memory.model_states), "reference_gib": gib(r.memory.reference),
                          "activations_gib": gib(r.memory.activations), "buffers_gib": gib(r.memory.buffers),
                          "total_gib": gib(r.memory.total), "cpu_gib_per_node": gib(r.memory.cpu), "fits": r.fits,
                          "max_micro_batch_size": r.max_micro_batch_size} for r in self.rows],
            "recipe_setting": asdict(self.recipe_setting) if self.recipe_setting else None,
            "recommended": ({**asdict(self.recommended), "label": self.recommended.label,
                             "micro_batch_size": self.recommended_micro_batch_size} if self.recommended else None),
        }


def recipe_setting(recipe: Recipe) -> Setting | None:
    """The recipe's own ``[distributed]`` setting, when it uses DeepSpeed."""
    if recipe.distributed.backend != "deepspeed":
        return None
    config = recipe.distributed.config
    if config.offload_params and config.zero_stage != 3:
        raise AlignkitError(f"{recipe.path}: distributed.offload_params needs zero_stage = 3")
    return Setting(config.zero_stage, config.offload_optimizer, config.offload_params)


def workload(recipe: Recipe, gpus: int, micro_batch_size: int, gpus_per_node: int,
             shape: PlannedModel | None = None) -> Workload:
    """The recipe's run on ``gpus`` GPUs with micro-batches of ``micro_batch_size`` images."""
    needs = recipe.objective.component.spec
    rows = needs.policy_rows(micro_batch_size)
    extra = recipe.distributed.config.model_dump().get("deepspeed", {}).get("zero_optimization", {})
    return Workload(shape=shape or model_shape(recipe), rows=rows,
                    reference=needs.uses_reference, precision=recipe.distributed.precision,
                    gpus=gpus, gpus_per_node=gpus_per_node,
                    reduce_bucket=int(extra.get("reduce_bucket_size", DEEPSPEED_BUCKETS["reduce_bucket_size"])),
                    prefetch_bucket=int(extra.get("stage3_prefetch_bucket_size",
                                                  DEEPSPEED_BUCKETS["stage3_prefetch_bucket_size"])),
                    overlap_comm=bool(recipe.distributed.config.model_dump().get("overlap_comm", True)))


def fits(mem: Memory, gpu_memory_gib: float, cpu_memory_gib: float | None) -> bool:
    """Within (1 − ``SAFETY_MARGIN``) of the GPU, and within the CPU memory per node when it is given."""
    gpu_ok = mem.total <= (1 - SAFETY_MARGIN) * gpu_memory_gib * GiB
    return gpu_ok and (cpu_memory_gib is None or mem.cpu <= cpu_memory_gib * GiB)


def micro_batch_sizes(recipe: Recipe, gpus: int) -> list[int]:
    """Micro-batch sizes the trainer accepts on ``gpus`` processes (divisors of batch_size / gpus), largest first."""
    per_gpu = recipe.optim.batch_size // gpus
    return [m for m in range(per_gpu, 0, -1) if per_gpu % m == 0]


def plan(recipe: Recipe, gpus: int, gpu_memory_gib: float, cpu_memory_gib: float | None = None,
         micro_batch_size: int | None = None, gpus_per_node: int | None = None) -> Plan:
    """Every setting's memory for ``recipe`` on ``gpus`` GPUs of ``gpu_memory_gib``, and the cheapest that fits.

    ``micro_batch_size`` defaults to the recipe's (or batch_size / gpus); ``gpus_per_node`` to
    min(gpus, 8). When no setting fits at that micro-batch, ``recommended_micro_batch_size`` is the
    largest smaller one at which one does (with the cheapest setting there).
    """
    _check(recipe, gpus, gpu_memory_gib, cpu_memory_gib, gpus_per_node)
    gpus_per_node = gpus_per_node or min(gpus, 8)
    micro = micro_batch_size or recipe.optim.micro_batch_size or recipe.optim.batch_size // gpus
    if recipe.optim.batch_size % (micro * gpus):
        raise AlignkitError(f"optim.batch_size {recipe.optim.batch_size} is not a multiple of micro-batch {micro} × "
                            f"{gpus} GPUs")
    shape = model_shape(recipe)
    works = {m: workload(recipe, gpus, m, gpus_per_node, shape) for m in micro_batch_sizes(recipe, gpus)}
    own = recipe_setting(recipe)
    settings = list(SETTINGS) + ([own] if own is not None and own not in SETTINGS else [])

    def fitting(setting: Setting, m: int) -> bool:
        return fits(memory(setting, works[m]), gpu_memory_gib, cpu_memory_gib)

    rows = []
    for setting in settings:
        mem = memory(setting, works[micro])
        largest = next((m for m in works if fitting(setting, m)), None)
        rows.append(Row(setting, mem, fits(mem, gpu_memory_gib, cpu_memory_gib), largest))
    recommended, recommended_micro = None, None
    for m in [m for m in works if m <= micro]:
        recommended = next((s for s in COST_ORDER if fitting(s, m)), None)
        if recommended is not None:
            recommended_micro = m
            break
    return Plan(recipe=str(recipe.path), backbone=recipe.model.backbone, shape=shape, gpus=gpus,
                gpus_per_node=gpus_per_node, gpu_memory_gib=gpu_memory_gib, cpu_memory_gib=cpu_memory_gib,
                micro_batch_size=micro, rows=rows, recipe_setting=own, recommended=recommended,
                recommended_micro_batch_size=recommended_micro)


def _check(recipe: Recipe, gpus: int, gpu_memory_gib: float, cpu_memory_gib: float | None,
           gpus_per_node: int | None) -> None:
    if gpus < 1:
        raise AlignkitError(f"--gpus must be at least 1, got {gpus}")
    if not gpu_memory_gib > 0 or not math.isfinite(gpu_memory_gib):
        raise AlignkitError(f"--gpu-memory must be a positive number of GiB, got {gpu_memory_gib}")
    if cpu_memory_gib is not None and (not cpu_memory_gib > 0 or not math.isfinite(cpu_memory_gib)):
        raise AlignkitError(f"--cpu-memory must be a positive number of GiB, got {cpu_memory_gib}")
    if gpus_per_node is not None and (gpus_per_node < 1 or gpus % gpus_per_node):
        raise AlignkitError(f"--gpus-per-node must divide --gpus {gpus}, got {gpus_per_node}")
    if recipe.optim.batch_size % gpus:
        raise AlignkitError(f"optim.batch_size {recipe.optim.batch_size} does not split over {gpus} GPUs")

