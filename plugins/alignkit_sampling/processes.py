"""Data-parallel sampling: which process this is and its device, the two collectives sampling needs,
and starting the processes (``--nproc-per-node``) through the engine's launcher.

Every process lists the missing shards from the same shard folder and checks the same settings
before any of them writes (``Ranks.start`` is that barrier), so the processes agree on the list and
fail alike on a bad request, which rank 0 alone reports. After the start each has its own work and
its own failures, which every rank reports, naming itself. Shards are dealt round-robin from that
list; in each round a process samples at most one, and the sum that closes the round counts every
process's images for rank 0's progress bar and keeps the processes within a shard of each other.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
import typer

from alignkit.engine.launch import launch_workers
from alignkit.errors import AlignkitError
from alignkit.values import resolve_device

COLLECTIVE_TIMEOUT = timedelta(minutes=30)
"""Longer than loading a model or sampling one shard. torchrun stops the others as soon as a process
fails; the timeout is for processes started without it."""

LAUNCH_OPTIONS = ("nproc_per_node", "nnodes", "rdzv_endpoint")


@dataclass
class Ranks:
    """This process among ``world_size`` sampling together (one, by default), on ``device``."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    started: bool = False

    @classmethod
    def from_env(cls, device: str) -> Ranks:
        """The process torchrun's variables describe (one without them). ``device`` ``auto`` or ``cuda``
        puts each process on its own GPU, ``cuda:LOCAL_RANK``."""
        rank, world_size, local_rank, local_size = (int(os.environ.get(name, default)) for name, default in (
            ("RANK", 0), ("WORLD_SIZE", 1), ("LOCAL_RANK", 0), ("LOCAL_WORLD_SIZE", 1)))
        where = resolve_device(device)
        if world_size > 1 and where.type == "cuda":
            if where.index is not None:
                raise AlignkitError(f"--device {device}: each of the {world_size} processes uses its own GPU "
                                    "(cuda:LOCAL_RANK); give --device cuda or auto")
            if local_size > torch.cuda.device_count():
                raise AlignkitError(f"{local_size} processes on this machine but it has {torch.cuda.device_count()} "
                                    "GPUs: start at most one process per GPU")
            where = torch.device("cuda", local_rank)
        return cls(rank, world_size, where)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def start(self) -> None:
        """Join the other processes (nccl on GPUs, gloo on the CPU) and wait for all of them: call it
        once every process has planned and before any writes."""
        if self.world_size > 1:
            cuda = self.device.type == "cuda"
            if cuda:
                torch.cuda.set_device(self.device)
            dist.init_process_group("nccl" if cuda else "gloo", timeout=COLLECTIVE_TIMEOUT,
                                    **({"device_id": self.device} if cuda else {}))
            self._collective(dist.barrier)
        self.started = True

    def sum(self, count: int) -> int:
        """``count`` summed over the processes; every process must call it as often as the others."""
        if self.world_size == 1:
            return count
        total = torch.tensor([count], dtype=torch.int64, device=self.device)
        self._collective(dist.all_reduce, total)
        return int(total.item())

    def stop(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()

    def report(self, exc: AlignkitError) -> AlignkitError:
        """``exc``, said on stderr here too when it is this process's own (after the start, on a rank
        other than 0, whose errors the command's one-line handler prints)."""
        if self.started and not self.is_main:
            exc = AlignkitError(f"rank {self.rank}: {exc}")
            typer.echo(f"error: {exc}", err=True)
        return exc

    def _collective(self, operation: Callable[..., Any], *args: Any) -> None:
        try:
            operation(*args)
        except RuntimeError as exc:  # a peer that died closes its connections: gloo raises here
            # gloo's messages start with its source location and end with advice meant for torch's developers
            reason = str(exc).split("] ", 1)[-1].split(". ")[0].strip() or type(exc).__name__
            raise AlignkitError(f"lost the other sampling processes ({reason}; the failing one said why above); "
                                "finished shards are kept: run the same command again to resume") from None


def launch(ctx: typer.Context, nproc_per_node: int, nnodes: int, rdzv_endpoint: str | None) -> int:
    """Run this command as ``nproc_per_node`` processes per machine (of ``nnodes``) through torchrun;
    their exit status. Each gets this command line without the launch options."""
    if nnodes > 1 and not rdzv_endpoint:
        raise AlignkitError("--nnodes > 1 needs --rdzv-endpoint HOST:PORT, the same on every machine")
    return launch_workers([ctx.info_name, *forwarded_args(ctx)], nproc_per_node, nnodes, rdzv_endpoint)


def forwarded_args(ctx: typer.Context) -> list[str]:
    """The options and arguments ``ctx`` was given that differ from their defaults, as command-line
    words (rebuilt from the parsed values, so it works however the command was called)."""
    words: list[str] = []
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        if param.name in LAUNCH_OPTIONS or value is None or value == param.default:
            continue
        if param.param_type_name == "argument":
            words.append(str(value))
        elif param.is_flag:
            words.append(param.opts[0] if value else param.secondary_opts[0])
        else:
            for item in value if param.multiple else [value]:
                words += [param.opts[0], str(item)]
    return words
