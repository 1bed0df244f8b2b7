"""Per-GPU memory of a recipe under DeepSpeed ZeRO stages 0–3, and the cheapest setting that fits.

Pure arithmetic on the recipe and the backbone's shape (the model is built on the meta device to
count its parameters); nothing touches a GPU. Notation: Ψ parameters of the policy (Ψ_t of them
trainable), N GPUs (data-parallel processes), n per node, λ the parameters of the largest module
(DeepSpeed's "largest layer": ``max over modules of sum(p.numel() for p in m.parameters(recurse=False))``),
w = 2 bytes per weight in bf16 mode (4 in fp32), R rows per micro-batch (2B for objectives that use
negatives: every image under its positive and its negative condition), S positions, V vocabulary,
D width, F FFN width, c = w bytes per activation element.

**Model states** (``model_states``) follow DeepSpeed's estimators
(``estimate_zero2_model_states_mem_needs`` / ``estimate_zero3_model_states_mem_needs``) term by term,
so that stages 2 and 3 agree with them exactly. In bf16 mode DeepSpeed keeps bf16 weights and
gradients on the GPU and, in the optimiser, an fp32 gradient, fp32 master weights and AdamW's m and v
(4 + 4 + 8 bytes). Per GPU:

============  ===============  =========================  ==================
stage         parameters       gradients                  optimiser
============  ===============  =========================  ==================
0             wΨ               wΨ_t + 4Ψ_t                12Ψ_t
1             wΨ               wΨ_t + 4Ψ_t/N              12Ψ_t/N
2             wΨ               (w + 4)Ψ_t/N               12Ψ_t/N
3             wΨ/N + wλ        4Ψ_t/N + wλ                12Ψ_t/N
============  ===============  =========================  ==================

so stage 2 is DeepSpeed's ``2Ψ + 18Ψ/N`` and stage 3 its ``4λ + 18Ψ/N`` (λ: the gathered layer's
bf16 weights and gradients). Offloading the optimiser moves its states and the fp32 gradient to the
CPU (stage 1 keeps its full bf16 gradients on the GPU, stage 2 none: DeepSpeed's ``2Ψ``; stage 3
keeps ``wΨ/N + 2wλ``); offloading the parameters (stage 3) leaves the gathered layer, ``2wλ``. In
fp32 mode the 16-bit copies are fp32 (w = 4) and there is no separate fp32 gradient (the "+ 4" terms
drop; at stage 3 the 4Ψ_t/N partition is the gradient itself); ZeRO still clones an fp32 master
partition, but at stage 0 the client AdamW updates the fp32 weights in place (8Ψ_t, m and v).

CPU memory per node follows DeepSpeed's formulas with ``zero_init=False`` (alignkit builds the whole
model in every process; it does not use ``deepspeed.zero.Init``) and its ``additional_buffer_factor``
f = 1.5: ``4Ψ·n·f`` without offload (each process's fp32 model before it moves to the GPU), and
``Ψ·max(4n, k/nodes)·f`` with offload, k = 16 (optimiser: fp32 master, gradient, m, v) or 18 (plus the
bf16 parameters). DeepSpeed's ZeRO-2 estimator writes ``max(4·N, 16)`` with N all GPUs; on one node
that is the same number.

**What DeepSpeed's estimators leave out** (the other columns):

* the reference model: stages 0–2 hold a full replica on every GPU (``wΨ``); under ZeRO-3 it is an
  optimiser-less engine sharded like the policy (``wΨ/N + wλ``, only ``wλ`` with parameter offload).
  Its fp32 deep copy also sits in each process's CPU memory while the run is built (``4Ψ·n`` per node);
* activations of one micro-batch (``activation_bytes``);
* DeepSpeed's working buffers (``buffer_bytes``): the gradient buckets (``reduce_bucket_size``
  elements of bf16, two of them with ``overlap_comm``, at stages 1–2; one at stage 3, plus its
  ``stage3_prefetch_bucket_size`` of prefetched parameters and the bf16 gradient partition
  ``wΨ_t/N`` that its 18 bytes per parameter omit), and at stage 0 the flattened all-reduce chunk
  (at most 5·10⁸ elements).

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

GiB = 2**30
SAFETY_MARGIN = 0.10
"""Share of each GPU's memory left free (CUDA context, NCCL buffers, fragmentation, estimate error)."""
CPU_BUFFER_FACTOR = 1.5
"""DeepSpeed's ``additional_buffer_factor`` on its CPU figures."""
POLICY_HEAD_BYTES = 12
"""Per logit at the start of the policy's backward: the saved fp32 log-softmax, the gradient of the
log-probabilities (``gather``'s backward fills a full (R, S, V) fp32 tensor) and that of the logits."""
REFERENCE_HEAD_BYTES = 8
"""Per logit in the reference's forward: fp32 logits and their log-softmax (no gradients)."""
ALLREDUCE_CHUNK = 500_000_000
"""``deepspeed.runtime.engine.MEMORY_OPT_ALLREDUCE_SIZE``: stage 0 flattens gradients in chunks of this many."""
DEEPSPEED_BUCKETS = {"reduce_bucket_size": 500_000_000, "stage3_prefetch_bucket_size": 50_000_000}
"""DeepSpeed's defaults, which alignkit does not change (``distributed.deepspeed`` may)."""


@dataclass(frozen=True)
class Setting:
    """One way to run DeepSpeed: a ZeRO stage and what it offloads to the CPU."""

    zero_stage: int
    offload_optimizer: bool = False
    offload_params: bool = False

    @property
    def label(self) -> str:
        offload = ("optimizer+params" if self.offload_params else "optimizer") if self.offload_optimizer else (
            "params" if self.offload_params else "")
        return f"ZeRO-{self.zero_stage}" + (f" + offload {offload}" if offload else "")


SETTINGS = (Setting(0), Setting(1), Setting(2), Setting(3), Setting(1, True), Setting(2, True), Setting(3, True),
            Setting(3, True, True))
"""Every setting the planner compares, in table order."""
COST_ORDER = (Setting(1), Setting(0), Setting(2), Setting(3), Setting(1, True), Setting(2, True), Setting(3, True),
              Setting(3, True, True))
"""The same settings, cheapest first (why: the module docstring)."""


@dataclass(frozen=True)
class ModelShape:
    """What the memory depends on: parameter counts and the transformer's dimensions."""

    family: str  # "llamagen" or "var": which per-layer activation formula applies
    params: int
    trainable: int
    largest_layer: int
    layers: int
    width: int
    ffn_width: int
    seq_len: int
    vocab: int
    checkpointing: bool


@dataclass(frozen=True)
class Workload:
    """A recipe's run on a given cluster: the model, one micro-batch and the precision."""

    shape: ModelShape
    rows: int  # sequences through the policy (and reference) per micro-batch and GPU
    reference: bool
    precision: str
    gpus: int
    gpus_per_node: int
    reduce_bucket: int = DEEPSPEED_BUCKETS["reduce_bucket_size"]
    prefetch_bucket: int = DEEPSPEED_BUCKETS["stage3_prefetch_bucket_size"]
    overlap_comm: bool = True

    @property
    def weight_bytes(self) -> int:
        return 2 if self.precision == "bf16" else 4

    @property
    def nodes(self) -> int:
        return self.gpus // self.gpus_per_node


@dataclass(frozen=True)
class Memory:
    """Bytes per GPU by part, and CPU bytes per node."""

    params: int
    grads: int
    optimizer: int
    reference: int
    activations: int
    buffers: int
    cpu: int

    @property
    def model_states(self) -> int:
        """Parameters, gradients and optimiser states: what DeepSpeed's estimators count."""
        return self.params + self.grads + self.optimizer

    @property
    def total(self) -> int:
        return self.model_states + self.reference + self.activations + self.buffers


# ------------------------------------------------------------------------------ the model


def model_shape(recipe: Recipe) -> ModelShape:
    """Count the backbone's parameters on the meta device and read its dimensions from its config.

    The layer layout is known for LlamaGen-like configs (``n_layer``, ``dim``, ``ffn_hidden_dim``,
    ``block_size``, ``vocab_size``) and VAR-like ones (``depth``, ``width``, ``mlp_ratio``,
    ``patch_nums``, ``V``); another backbone is a user error.
    """
    import torch

    from alignkit.plugins import get_plugins

    component, _ = get_plugins(recipe.path).resolve_preset("backbone", recipe.model.backbone)
    config = recipe.model.config
    dims = _dimensions(config, recipe.model.backbone)
    with torch.device("meta"):
        model = component.spec.factory(config, checkpoint=None, tokenizer=None)
    params = list(model.parameters())  # shared parameters once, as DeepSpeed counts them
    largest = max(sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules())
    return ModelShape(params=sum(p.numel() for p in params),
                      trainable=sum(p.numel() for p in params if p.requires_grad), largest_layer=largest,
                      checkpointing=bool(getattr(config, "activation_checkpointing", False)), **dims)


def _dimensions(config: Any, backbone: str) -> dict[str, Any]:
    if all(hasattr(config, k) for k in ("n_layer", "dim", "ffn_hidden_dim", "block_size", "vocab_size")):
        return {"family": "llamagen", "layers": config.n_layer, "width": config.dim, "ffn_width": config.ffn_hidden_dim,
                "seq_len": config.block_size, "vocab": config.vocab_size}
    if all(hasattr(config, k) for k in ("depth", "width", "mlp_ratio", "patch_nums", "V")):
        return {"family": "var", "layers": config.depth, "width": config.width,
                "ffn_width": round(config.width * config.mlp_ratio), "seq_len": sum(p * p for p in config.patch_nums),
                "vocab": config.V}
    raise AlignkitError(f"alignkit plan knows the layer layout of LlamaGen and VAR backbones, not of "
                        f"'{backbone}' ({type(config).__name__})")


# ------------------------------------------------------------------------------ the parts


def model_states(setting: Setting, work: Workload, zero_init: bool = False,
                 buffer_factor: float = CPU_BUFFER_FACTOR) -> tuple[int, int, int, int]:
    """(parameters, gradients, optimiser states) bytes per GPU and model-state CPU bytes per node,
    with the formulas of the module docstring (``zero_init`` and ``buffer_factor`` as DeepSpeed's)."""
    s, N, w = work.shape, work.gpus, work.weight_bytes
    psi, trainable, largest = s.params, s.trainable, s.largest_layer
    stage, off_opt = setting.zero_stage, setting.offload_optimizer
    mixed = 4 if w == 2 else 0  # the fp32 gradient the optimiser steps on, beside the 16-bit one
    master = 4 if mixed or stage else 0  # ZeRO clones an fp32 partition even of fp32 weights
    optimizer = (master + 8) * trainable  # + AdamW m and v
    if stage == 3:
        params = w * largest + (0 if setting.offload_params else w * psi / N)
        grads = w * largest + (0 if off_opt else 4 * trainable / N)
    else:
        params = w * psi
        if stage == 2:
            grads = 0 if off_opt else (w + mixed) * trainable / N
        else:
            grads = w * trainable + (0 if off_opt else mixed * trainable / (N if stage == 1 else 1))
    gpu_optimizer = 0 if off_opt else optimizer / (N if stage else 1)
    return int(params), int(grads), int(gpu_optimizer), int(_cpu_model_states(setting, work, zero_init, buffer_factor))


def _cpu_model_states(setting: Setting, work: Workload, zero_init: bool, factor: float) -> float:
    s, n = work.shape, work.gpus_per_node
    if setting.offload_optimizer:
        per_param = (18 if setting.offload_params else 16) / work.nodes  # + the bf16 parameters
        if setting.zero_stage == 3 and zero_init:
            return s.params * per_param * factor
        return s.params * max(4 * n, per_param) * factor
    if setting.zero_stage == 3 and zero_init:
        return s.largest_layer * 4 * n * factor
    return s.params * 4 * n * factor


def reference_bytes(setting: Setting, work: Workload) -> tuple[int, int]:
    """The frozen reference: (bytes per GPU, CPU bytes per node while the run is built)."""
    if not work.reference:
        return 0, 0
    s, w = work.shape, work.weight_bytes
    if setting.zero_stage < 3:
        gpu = w * s.params
    else:
        gpu = w * s.largest_layer + (0 if setting.offload_params else w * s.params // work.gpus)
    cpu = 4 * s.params * work.gpus_per_node
    if setting.offload_params:  # its bf16 shards then live in CPU memory for the whole run
        cpu += w * s.params * work.gpus_per_node // work.gpus
    return gpu, cpu


def layer_activation_bytes(shape: ModelShape, compute_bytes: int) -> int:
    """Bytes one transformer block saves for its backward, per row and position.

    Counted tensor by tensor (and checked against ``saved_tensors_hooks`` in the tests):

    * LlamaGen: each RMSNorm saves its fp32 input (2 × 4D) and, in compute dtype, the normalised and
      the weighted activations (4D); attention saves the fused qkv output (3D), rotated q and k (2D),
      the SDPA output and its transposed copy (2D); a dropout mask (D, in compute dtype as on the CPU; a
      bool on GPUs); SwiGLU saves the w1 and w3
      outputs, the SiLU output and their product (4F): ``8D + c(12D + 4F)``.
    * VAR: each AdaLN saves the LayerNorm input, output and modulated copy (2 × 3D); attention the qkv
      output (3D), normalised and scaled q and k (3D), the SDPA output and its copy (2D), the branch
      before its gate (D); the FFN its output before the gate (D) and fc1 and GELU outputs (2F):
      ``c(15D + 2F)``.

    Small per-position terms (norm statistics, SDPA's log-sum-exp) are left out. A fused SDPA kernel
    (flash or memory-efficient, as on GPUs) is assumed: no S × S attention matrix.
    """
    D, F, c = shape.width, shape.ffn_width, compute_bytes
    if shape.family == "llamagen":
        return 8 * D + c * (12 * D + 4 * F)
    return c * (15 * D + 2 * F)


def activation_bytes(shape: ModelShape, rows: int, precision: str, reference: bool = True) -> int:
    """Peak activation bytes of one micro-batch of ``rows`` sequences on one GPU.

    The policy's peak, per row and position: the blocks' saved tensors (``layers × layer``, or with
    activation checkpointing only each block's input, ``layers × cD``), the embeddings and the head's
    inputs (``8D + 3cD``), and the larger of the head's backward (``12V``: saved log-softmax, the
    gradients of the log-probs and of the logits, all fp32) and one block's backward (its gradients,
    ``layer``, plus with checkpointing its recomputed activations, another ``layer``).

    The reference runs first, without gradients, and frees everything before the policy's forward:
    its peak is one block plus its fp32 logits and log-softmax (``layer + 8V``), counted against the
    policy's as a maximum, not a sum.
    """
    c = 2 if precision == "bf16" else 4
    D, V, per_row = shape.width, shape.vocab, rows * shape.seq_len
    layer = layer_activation_bytes(shape, c)
    saved = shape.layers * (c * D if shape.checkpointing else layer)
    backward = max(POLICY_HEAD_BYTES * V, layer * (2 if shape.checkpointing else 1))
    policy = saved + 8 * D + 3 * c * D + backward
    frozen = (layer + REFERENCE_HEAD_BYTES * V) if reference else 0
    return per_row * max(policy, frozen)


def buffer_bytes(setting: Setting, work: Workload) -> int:
    """DeepSpeed's working buffers on each GPU that its estimators leave out (module docstring)."""
    w, trainable = work.weight_bytes, work.shape.trainable
    if setting.zero_stage == 0:
        return w * min(trainable, ALLREDUCE_CHUNK)
    if setting.zero_stage < 3:
        return (2 if work.overlap_comm else 1) * w * work.reduce_bucket
    grad_partition = 0 if setting.offload_optimizer or w == 4 else w * trainable // work.gpus
    return w * (work.reduce_bucket + work.prefetch_bucket) + grad_partition


def memory(setting: Setting, work: Workload) -> Memory:
    """Every part for one setting."""
    params, grads, optimizer, cpu = model_states(setting, work)
    reference_gpu, reference_cpu = reference_bytes(setting, work)
    return Memory(params=params, grads=grads, optimizer=optimizer, reference=reference_gpu,
                  activations=activation_bytes(work.shape, work.rows, work.precision, work.reference),
                  buffers=buffer_bytes(setting, work), cpu=cpu + reference_cpu)


# ------------------------------------------------------------------------------ the plan


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
    shape: ModelShape
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
             shape: ModelShape | None = None) -> Workload:
    """The recipe's run on ``gpus`` GPUs with micro-batches of ``micro_batch_size`` images."""
    from alignkit.plugins import get_plugins

    objective = get_plugins(recipe.path).get("objective", recipe.objective.name).spec.factory
    rows = micro_batch_size * (2 if getattr(objective, "needs_negatives", True) else 1)
    extra = recipe.distributed.config.model_dump().get("deepspeed", {}).get("zero_optimization", {})
    return Workload(shape=shape or model_shape(recipe), rows=rows,
                    reference=getattr(objective, "needs_reference", True), precision=recipe.distributed.precision,
                    gpus=gpus, gpus_per_node=gpus_per_node,
                    reduce_bucket=int(extra.get("reduce_bucket_size", DEEPSPEED_BUCKETS["reduce_bucket_size"])),
                    prefetch_bucket=int(extra.get("stage3_prefetch_bucket_size",
                                                  DEEPSPEED_BUCKETS["stage3_prefetch_bucket_size"])),
                    overlap_comm=bool(getattr(recipe.distributed.config, "overlap_comm", True)))


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

