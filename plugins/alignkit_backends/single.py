"""One process, one device: plain PyTorch AdamW with the official parameter groups."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import torch
from pydantic import Field
from torch import Tensor

from alignkit import AlignkitError, Backend, ComponentConfig, NonFiniteError, PolicyModel, ReferenceModel
from alignkit.checkpoints import read_weights_file
from alignkit_backends.optim import autocast, lr_factor, param_groups
from alignkit.recipe import Recipe
from alignkit.values import resolve_device


class SingleConfig(ComponentConfig):
    device: str = Field("auto", description="'auto' (CUDA when available, else CPU), 'cpu', 'cuda', 'cuda:1', …")
    compile: bool = Field(False, description="run the policy through torch.compile (the first steps compile; a "
                          "graph that fails to compile runs eagerly, after a warning)")


class SingleProcess(Backend):
    def __init__(self, config: SingleConfig, recipe: Recipe):
        super().__init__(recipe)
        if self.world_size > 1:
            raise AlignkitError("distributed.backend: 'single' runs one process, but WORLD_SIZE is "
                                f"{self.world_size}; use backend = 'deepspeed'")
        self.device = resolve_device(config.device, "distributed.device")
        self.precision = recipe.distributed.precision
        self.compile = config.compile

    def setup(self, policy: PolicyModel, reference: ReferenceModel | None, accumulation_steps: int,
              total_steps: int) -> None:
        optim = self.recipe.optim
        self.policy = policy.to(self.device)
        self.reference = reference
        if reference is not None and reference.model is not None:
            reference.model.to(self.device)
        self.accumulation_steps = accumulation_steps
        self.optimizer = torch.optim.AdamW(param_groups(policy, optim.weight_decay), lr=optim.lr, betas=optim.betas,
                                           eps=optim.eps, fused=self.device.type == "cuda")
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_factor(optim, total_steps))
        self.params = [p for group in self.optimizer.param_groups for p in group["params"]]
        self.forward = compiled(policy, self.device) if self.compile else policy

    def policy_forward(self, tokens_BL: Tensor, labels_B: Tensor, *, train_mode: bool = True,
                       token_logps: bool = False, **conditions: Tensor) -> Tensor:
        self.policy.train(train_mode)
        with autocast(self.device, self.precision):
            return self.forward(tokens_BL, labels_B, token_logps=token_logps, **conditions)

    def reference_logps(self, tokens_BL: Tensor, labels_B: Tensor, reduction: str = "sum") -> Tensor:
        if self.reference is None:
            raise RuntimeError("this run has no reference model")
        with autocast(self.device, self.precision):
            return self.reference.sequence_logps(tokens_BL, labels_B, reduction=reduction)

    def backward(self, loss: Tensor) -> None:
        (loss / self.accumulation_steps).backward()

    def step(self) -> dict[str, float]:
        max_norm = self.recipe.optim.max_grad_norm
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, max_norm if max_norm > 0 else float("inf"))
        if not torch.isfinite(grad_norm):
            self.optimizer.zero_grad(set_to_none=True)
            raise NonFiniteError(f"the gradient norm is {grad_norm.item()}")
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {"learning_rate": lr, "lr": lr, "grad_norm": grad_norm.item()}  # "lr": alias for one release

    def save(self, folder: Path) -> None:
        torch.save({"policy": self.policy.state_dict(), "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict()}, folder / "state.pt")

    def load(self, folder: Path) -> None:
        state = read_weights_file(folder / "state.pt")
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])

    def unwrapped_policy(self) -> PolicyModel:
        return self.policy

    def export_state_dict(self) -> dict[str, Tensor]:
        return self.policy.official_state_dict()

    def parameter_distance(self) -> float | None:
        if self.reference is None or self.reference.model is None:
            return None
        reference = dict(self.reference.model.named_parameters())
        with torch.no_grad():
            return max(((p - reference[n]).abs().max().item() for n, p in self.policy.named_parameters()
                        if n in reference and p.requires_grad), default=0.0)


def compiled(policy: PolicyModel, device: torch.device) -> torch.nn.Module:
    """``torch.compile(policy)``, or the policy itself where compiling cannot work.

    Inductor builds CPU kernels with a C++ compiler; without one every graph would fail. Graphs that
    fail for another reason fall back to eager frame by frame (dynamo's ``suppress_errors``), so a
    model that does not compile still trains, at eager speed.
    """
    if device.type == "cpu" and shutil.which("c++") is None and shutil.which("g++") is None:
        print("warning: distributed.compile: no C++ compiler for torch.compile's CPU kernels; the policy runs "
              "eagerly", file=sys.stderr)
        return policy
    import torch._dynamo

    torch._dynamo.config.suppress_errors = True
    return torch.compile(policy)
