"""DeepSpeed ZeRO stages 0–3 over several processes (gloo on the CPU, nccl on GPUs).

The reference follows the TRL/OpenRLHF rule: under ZeRO-3 it is sharded like the policy (an
optimizer-less DeepSpeed engine), under stages 0–2 every process holds a replica. DeepSpeed's
checkpoints are written into alignkit's checkpoint folders and read back with
``torch.load(weights_only=True)``, allowing only DeepSpeed's plain data classes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
import torch.distributed as dist
from pydantic import Field
from torch import Tensor

from alignkit import AlignkitError, Backend, ComponentConfig, PolicyModel, ReferenceModel
from alignkit_backends.optim import lr_factor, param_groups
from alignkit.recipe import Recipe


class DeepSpeedConfig(ComponentConfig):
    zero_stage: Literal[0, 1, 2, 3] = Field(2, description="ZeRO stage: 1 optimizer states, 2 + gradients, "
                                            "3 + parameters sharded across processes")
    offload_optimizer: bool = Field(False, description="keep optimizer states (and the update) in CPU memory")
    offload_params: bool = Field(False, description="ZeRO-3: keep parameters in CPU memory")
    comm_backend: Literal["auto", "nccl", "gloo"] = Field("auto", description="auto: nccl on GPUs, gloo on the CPU")
    overlap_comm: bool = Field(True, description="overlap gradient reduction with the backward pass")
    deepspeed: dict[str, Any] = Field(default_factory=dict, description="extra DeepSpeed config entries, merged "
                                      "last (for settings alignkit does not expose)")


def _safe_globals() -> list[Any]:
    """DeepSpeed classes that its checkpoints pickle: plain data holders, no code runs to rebuild them."""
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum

    allowed: list[Any] = [LossScaler, DynamicLossScaler, ZeroStageEnum]
    try:
        from deepspeed.utils.tensor_fragment import fragment_address

        allowed.append(fragment_address)
    except ImportError:
        pass
    return allowed


def _weights_only_engine(engine: Any) -> None:
    """Make ``engine`` read checkpoints with ``weights_only=True`` (DeepSpeed's default unpickles anything)."""
    checkpoint_engine = engine.checkpoint_engine

    def load(path: str, map_location: Any = None) -> Any:
        with torch.serialization.safe_globals(_safe_globals()):
            try:
                return torch.load(path, map_location=map_location, weights_only=True)
            except Exception as exc:
                raise AlignkitError(f"{path}: cannot read this DeepSpeed checkpoint with weights_only=True "
                                    f"({str(exc).splitlines()[-1][:300]})") from None

    checkpoint_engine.load = load


def _merged(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``extra`` over ``base``, section by section (a partial ``zero_optimization`` keeps the stage)."""
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _register_head(model: torch.nn.Module) -> None:
    """The fused log-probs use the output projection's weights inside the model's forward without
    calling the projection module: ZeRO-3 must gather them with the model's own parameters."""
    import deepspeed

    head = model.output_projection() if isinstance(model, PolicyModel) else None
    for param in head.parameters() if head is not None else ():
        deepspeed.zero.register_external_parameter(model, param)


class DeepSpeedBackend(Backend):
    def __init__(self, config: DeepSpeedConfig, recipe: Recipe):
        super().__init__(recipe)
        import deepspeed

        # Refused before the process group exists: a rank that exits while its peers are inside a
        # collective can take them down with an abort instead of this message.
        if config.offload_params and config.zero_stage != 3:
            raise AlignkitError("distributed.offload_params needs zero_stage = 3")
        if config.zero_stage == 3 and recipe.objective.component.spec.inputs == "generated_pairs":
            raise AlignkitError(f"{recipe.path}: distributed.zero_stage: objective "
                                f"'{recipe.objective.name}' generates its negatives token by token from the "
                                "reference and makes the reference the policy after each round; under ZeRO-3 "
                                "the reference is sharded, so every generated token would all-gather every "
                                "parameter and the policy's shards would have to be copied into the "
                                "reference's. Use zero_stage = 1 or 2 (the reference is then a replica)")
        self.config = config
        cuda = torch.cuda.is_available()
        comm = config.comm_backend if config.comm_backend != "auto" else ("nccl" if cuda else "gloo")
        if not dist.is_initialized():
            deepspeed.init_distributed(dist_backend=comm)
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        if cuda:
            torch.cuda.set_device(self.local_rank)
            self.device = torch.device("cuda", self.local_rank)
        self.precision = recipe.distributed.precision

    def ds_config(self, micro_batch_size: int, accumulation_steps: int) -> dict[str, Any]:
        optim, config = self.recipe.optim, self.config
        zero: dict[str, Any] = {"stage": config.zero_stage, "overlap_comm": config.overlap_comm}
        if config.offload_optimizer:
            zero["offload_optimizer"] = {"device": "cpu", "pin_memory": self.device.type == "cuda"}
        if config.offload_params:
            zero["offload_param"] = {"device": "cpu", "pin_memory": self.device.type == "cuda"}
        ds: dict[str, Any] = {
            "train_micro_batch_size_per_gpu": micro_batch_size,
            "gradient_accumulation_steps": accumulation_steps,
            "zero_optimization": zero,
            "bf16": {"enabled": self.precision == "bf16"},
            "steps_per_print": 2**62,
            "wall_clock_breakdown": False,
        }
        if optim.max_grad_norm > 0:
            ds["gradient_clipping"] = optim.max_grad_norm
        if config.offload_optimizer:  # DeepSpeed must build its CPU Adam itself
            ds["optimizer"] = {"type": "AdamW", "params": {"lr": optim.lr, "betas": list(optim.betas),
                                                           "eps": optim.eps, "weight_decay": optim.weight_decay}}
        return _merged(ds, config.deepspeed)

    def setup(self, policy: PolicyModel, reference: ReferenceModel | None, accumulation_steps: int,
              total_steps: int) -> None:
        import deepspeed

        optim = self.recipe.optim
        micro = optim.micro_batch_size or optim.batch_size // self.world_size
        ds = self.ds_config(micro, accumulation_steps)
        groups = param_groups(policy, optim.weight_decay)
        client_optimizer = None
        if not self.config.offload_optimizer:
            client_optimizer = torch.optim.AdamW(groups, lr=optim.lr, betas=optim.betas, eps=optim.eps)
        factor = lr_factor(optim, total_steps)
        self.policy_module = policy
        if self.config.zero_stage == 3:
            _register_head(policy)
        self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=policy, optimizer=client_optimizer, model_parameters=None if client_optimizer else groups,
            config=ds, lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, factor))
        _weights_only_engine(self.engine)
        self.reference = reference
        if reference is not None and reference.model is not None:
            if self.config.zero_stage == 3:
                _register_head(reference.model)
                ref_ds = {k: v for k, v in ds.items() if k not in ("optimizer", "gradient_clipping")}
                ref_ds["zero_optimization"] = {"stage": 3, **({"offload_param": ds["zero_optimization"]["offload_param"]}
                                                              if self.config.offload_params else {})}
                reference.model = deepspeed.initialize(model=reference.model, config=ref_ds)[0]
            else:
                dtype = torch.bfloat16 if self.precision == "bf16" else torch.float32
                reference.model.to(self.device, dtype)
        self._lr = optim.lr

    def policy_forward(self, tokens_BL: Tensor, labels_B: Tensor, *, train_mode: bool = True,
                       token_logps: bool = False, **conditions: Tensor) -> Tensor:
        self.engine.train(train_mode)
        return self.engine(tokens_BL, labels_B, token_logps=token_logps, **conditions)

    def reference_logps(self, tokens_BL: Tensor, labels_B: Tensor, reduction: str = "sum") -> Tensor:
        if self.reference is None:
            raise RuntimeError("this run has no reference model")
        return self.reference.sequence_logps(tokens_BL, labels_B, reduction=reduction)

    def backward(self, loss: Tensor) -> None:
        # DeepSpeed divides by the accumulation steps itself and applies the update on the last
        # micro-batch's engine.step().
        self.engine.backward(loss)
        if self.engine.is_gradient_accumulation_boundary():
            self._lr = self.optimizer.param_groups[0]["lr"]
        self.engine.step()

    def step(self) -> dict[str, float]:
        norm = self.engine.get_global_grad_norm()
        norm = float(norm.item() if isinstance(norm, Tensor) else (norm if norm is not None else float("nan")))
        return {"learning_rate": self._lr, "lr": self._lr, "grad_norm": norm}  # "lr": alias for one release

    def save(self, folder: Path) -> None:
        self.engine.save_checkpoint(str(folder.parent), tag=folder.name, save_latest=False)

    def load(self, folder: Path) -> None:
        path, _ = self.engine.load_checkpoint(str(folder.parent), tag=folder.name, load_optimizer_states=True,
                                              load_lr_scheduler_states=True)
        if path is None:
            raise AlignkitError(f"{folder}: DeepSpeed found no checkpoint to load there")

    def unwrapped_policy(self) -> PolicyModel:
        return self.policy_module

    def export_state_dict(self) -> dict[str, Tensor] | None:
        """fp32 master weights, gathered on every process (a collective), official names on the main one."""
        from deepspeed.utils import safe_get_full_fp32_param

        module = self.policy_module
        params = dict(module.named_parameters())
        full: dict[str, Tensor] = {}
        for name, value in module.state_dict().items():
            if name in params:
                master = safe_get_full_fp32_param(params[name])
                full[name] = (master if master is not None else params[name]).detach().float().cpu().clone()
            else:
                full[name] = value.detach().cpu().clone()
        return module.official_state_dict(full) if self.is_main else None

    def parameter_distance(self) -> float | None:
        if self.reference is None or self.reference.model is None:
            return None
        reference = self.reference.model
        reference = getattr(reference, "module", reference)
        ref_params = dict(reference.named_parameters())
        local = 0.0
        with torch.no_grad():
            for name, param in self.policy_module.named_parameters():
                other = ref_params.get(name)
                if other is None or not param.requires_grad:
                    continue
                mine = getattr(param, "ds_tensor", param)
                theirs = getattr(other, "ds_tensor", other)
                if mine.numel() and mine.shape == theirs.shape:
                    local = max(local, (mine.float() - theirs.float()).abs().max().item())
        return float(self.all_reduce_max(torch.tensor([local], device=self.device)).item())

    def all_reduce_mean(self, tensor: Tensor) -> Tensor:
        tensor = tensor.to(self.device).clone()
        dist.all_reduce(tensor)
        return tensor / self.world_size

    def all_reduce_max(self, tensor: Tensor) -> Tensor:
        tensor = tensor.to(self.device).clone()
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return tensor

    def barrier(self) -> None:
        dist.barrier()

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()
