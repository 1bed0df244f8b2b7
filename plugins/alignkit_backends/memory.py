"""Per-GPU memory of a training run under DeepSpeed ZeRO stages 0–3, part by part.

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
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from alignkit.interfaces import ModelShape
from alignkit.logprobs import CHUNK_ELEMENTS, KEEP_ELEMENTS
from alignkit.recipe import Recipe

GiB = 2**30
CPU_BUFFER_FACTOR = 1.5
"""DeepSpeed's ``additional_buffer_factor`` on its CPU figures."""
POLICY_HEAD_BYTES = 12
"""Per logit at the start of the policy's backward, for a backbone without fused log-probs: the saved
fp32 log-softmax, the gradient of the log-probabilities (``gather``'s backward fills a full (R, S, V)
fp32 tensor) and that of the logits."""
REFERENCE_HEAD_BYTES = 8
"""Per logit in the reference's forward without fused log-probs: fp32 logits and their log-softmax."""
FUSED_HEAD_POSITION_BYTES = 4
"""Per position with fused log-probs (``alignkit.logprobs``): the fp32 log-prob."""
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


@dataclass(frozen=True)
class PlannedModel:
    """What the memory depends on: the parameter counts the planner measures and the backbone's shape."""

    params: int
    trainable: int
    largest_layer: int
    shape: ModelShape
    fused_head: bool = False  # log-probs fused with the output projection: logits exist one chunk at a time

    @property
    def checkpointing(self) -> bool:
        return self.shape.checkpointing


@dataclass(frozen=True)
class Workload:
    """A recipe's run on a given cluster: the model, one micro-batch and the precision."""

    shape: PlannedModel
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


def model_shape(recipe: Recipe) -> PlannedModel:
    """Build the backbone on the meta device (no memory, no init), count its parameters as DeepSpeed
    does and ask it for its shape (``PolicyModel.shape``)."""
    with torch.device("meta"):
        model = recipe.model.build(checkpoint=None, tokenizer=None)
    params = list(model.parameters())  # shared parameters once, as DeepSpeed counts them
    largest = max(sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules())
    return PlannedModel(params=sum(p.numel() for p in params), trainable=sum(p.numel() for p in params if p.requires_grad),
                        largest_layer=largest, shape=model.shape(), fused_head=model.output_projection() is not None)


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


def activation_bytes(model: PlannedModel, rows: int, precision: str, reference: bool = True) -> int:
    """Peak activation bytes of one micro-batch of ``rows`` sequences on one GPU.

    The policy's peak, per row and position: the blocks' saved tensors (``layers × layer``; with full
    activation checkpointing only each block's input, ``layers × cD``; with selective checkpointing its
    input and matrix-product outputs, ``ModelShape.block_kept_selective``), the embeddings and the head's
    inputs (``8D + 3cD``), and the larger of the head's backward (``12V``: saved log-softmax, the
    gradients of the log-probs and of the logits, all fp32) and one block's backward (its gradients,
    ``layer``, plus with checkpointing its recomputed activations, another ``layer``).

    The reference runs first, without gradients, and frees everything before the policy's forward:
    its peak is one block plus its fp32 logits and log-softmax (``layer + 8V``), counted against the
    policy's as a maximum, not a sum.

    With fused log-probs (``PlannedModel.fused_head``) the logits exist one chunk of
    ``CHUNK_ELEMENTS`` at a time: per position only the log-prob and the features' gradient
    (``4 + 4D``) remain, plus one chunk's logits, their fp32 copy and gradient
    (``CHUNK_ELEMENTS · (8 + 2c)``; the reference's forward ``CHUNK_ELEMENTS · (8 + c)``) once. The
    policy's fp32 probabilities (``4V``) stay too when they number at most ``KEEP_ELEMENTS``.
    """
    shape, c = model.shape, 2 if precision == "bf16" else 4
    D, V, per_row = shape.width, shape.vocab, rows * shape.seq_len
    layer = shape.block_activation_bytes(c)
    saved = shape.layers * shape.block_kept_bytes(c)
    if model.fused_head:
        head, head_once = FUSED_HEAD_POSITION_BYTES + 4 * D, CHUNK_ELEMENTS * (8 + 2 * c)
        kept = 4 * V if per_row * V <= KEEP_ELEMENTS else 0  # alive from the head's forward to its backward
        frozen_head, frozen_once = 0, CHUNK_ELEMENTS * (8 + c)
    else:
        head, head_once, frozen_head, frozen_once = POLICY_HEAD_BYTES * V, 0, REFERENCE_HEAD_BYTES * V, 0
        kept = 0
    backward = max(head, layer * (2 if shape.checkpointing else 1))
    policy = per_row * (saved + 8 * D + 3 * c * D + kept + backward) + head_once
    frozen = per_row * (layer + frozen_head) + frozen_once if reference else 0
    return max(policy, frozen)


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


