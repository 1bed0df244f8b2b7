"""Which images each process sees at each step: a seeded, resumable, world-size-independent plan.

Epoch e shuffles the dataset with a generator seeded by (seed, e) and draws one augmentation per
image. Global step s takes images [s·batch, (s+1)·batch) of its epoch's order (the remainder of an
epoch is dropped, as the official loaders do) and cuts them into ``world_size × accumulation``
micro-batches; process r runs micro-batches r, r + world_size, … So the same recipe sees the same
micro-batches on one process or many, and resuming at step s needs nothing but s.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from alignkit.errors import AlignkitError

Key = tuple[int, int]  # (image index, augmentation)


@dataclass
class BatchPlan:
    num_items: int
    num_augmentations: int
    batch_size: int
    micro_batch_size: int
    world_size: int = 1
    rank: int = 0
    seed: int = 0
    _epoch_cache: tuple[int, torch.Tensor, torch.Tensor] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        per_step = self.micro_batch_size * self.world_size
        if self.batch_size % per_step:
            raise AlignkitError(f"optim.batch_size {self.batch_size} is not a multiple of micro_batch_size "
                                f"{self.micro_batch_size} × {self.world_size} processes")
        if self.num_items < self.batch_size:
            raise AlignkitError(f"the dataset has {self.num_items} images, fewer than one batch "
                                f"(optim.batch_size = {self.batch_size})")

    @property
    def accumulation_steps(self) -> int:
        return self.batch_size // (self.micro_batch_size * self.world_size)

    @property
    def steps_per_epoch(self) -> int:
        return self.num_items // self.batch_size

    def _epoch(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._epoch_cache is None or self._epoch_cache[0] != epoch:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(self.num_items, generator=generator)
            augmentation = torch.randint(self.num_augmentations, (self.num_items,), generator=generator)
            self._epoch_cache = (epoch, order, augmentation)
        return self._epoch_cache[1], self._epoch_cache[2]

    def micro_batches(self, step: int) -> list[list[Key]]:
        """This process's micro-batches of global step ``step`` (``accumulation_steps`` of them)."""
        epoch, within = divmod(step, self.steps_per_epoch)
        order, augmentation = self._epoch(epoch)
        start = within * self.batch_size
        out = []
        for m in range(self.accumulation_steps):
            chunk = m * self.world_size + self.rank
            idx = order[start + chunk * self.micro_batch_size: start + (chunk + 1) * self.micro_batch_size]
            out.append([(int(i), int(augmentation[i])) for i in idx])
        return out

    def iterate(self, start_step: int, end_step: int) -> Iterator[list[Key]]:
        """Micro-batch key lists for steps ``start_step .. end_step - 1``, in order (a batch sampler)."""
        for step in range(start_step, end_step):
            yield from self.micro_batches(step)


class PlanSampler:
    """``BatchPlan.iterate`` as a DataLoader ``batch_sampler`` (keeps worker prefetching in order)."""

    def __init__(self, plan: BatchPlan, start_step: int, end_step: int):
        self.plan, self.start_step, self.end_step = plan, start_step, end_step

    def __iter__(self) -> Iterator[list[Key]]:
        return self.plan.iterate(self.start_step, self.end_step)

    def __len__(self) -> int:
        return (self.end_step - self.start_step) * self.plan.accumulation_steps
