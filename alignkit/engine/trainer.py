"""The training loop: one recipe, one or many processes, exact resume, guards against lost work."""

from __future__ import annotations

import math
import os
import statistics
import time
import warnings
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch import Tensor
from torch.utils.data import DataLoader

from alignkit.checkpoints import load_strict, read_weights_file, save_safetensors, save_torch
from alignkit.engine.build import (build_backend, build_dataset, build_objective, build_policy, build_reference,
                                   build_sampler, build_tokenizer, plugins_for)
from alignkit.engine.checkpointing import CheckpointStore, lock_run
from alignkit.engine.data_order import BatchPlan, PlanSampler
from alignkit.engine.progress import MetricsLog, ProgressDisplay
from alignkit.engine.step import StepRunner
from alignkit.errors import AlignkitError
from alignkit.files import size_text, write_failure, write_json, write_text
from alignkit.interfaces import NonFiniteError, PolicyModel, TokenDataset, collate
from alignkit.recipe import Recipe

IDENTITY_CHECK_STEPS = 10
REFERENCE_FILE = "reference.safetensors"
"""In the checkpoints of self-play objectives: the reference of the round the checkpoint falls in."""


class TrainingError(AlignkitError):
    """Training stopped on purpose (non-finite loss, bad data); the message says where and why."""


@dataclass
class RunResult:
    output_dir: Path
    steps: int
    final_metrics: dict[str, float]


class Trainer:
    """Builds a run from a recipe and trains it; ``run()`` returns where everything went.

    Hooks receive the trainer as ``run``: ``run.recipe``, ``run.policy``, ``run.backend``,
    ``run.step``, ``run.output_dir`` are stable.
    """

    def __init__(self, recipe: Recipe, resume: bool = False, console: Console | None = None,
                 show_progress: bool | None = None):
        self.recipe = recipe
        self.resume = resume
        self.console = console or Console(stderr=True)
        self.output_dir = recipe.output_dir
        self.hooks = plugins_for(recipe).pm.hook
        self.backend = build_backend(recipe)
        self.is_main = self.backend.is_main
        self.show_progress = show_progress
        self.step = 0

    # ------------------------------------------------------------------------------ setup

    def _build(self) -> None:
        recipe, backend = self.recipe, self.backend
        torch.manual_seed(recipe.optim.seed)  # the same initialisation on every process
        self.tokenizer = tokenizer = build_tokenizer(recipe)
        self.policy = build_policy(recipe, tokenizer=tokenizer)
        self.reference = build_reference(self.policy, recipe)
        self.dataset = build_dataset(recipe, tokenizer=tokenizer)
        micro = recipe.optim.micro_batch_size or recipe.optim.batch_size // backend.world_size
        self.plan = BatchPlan(len(self.dataset), self.dataset.num_augmentations, recipe.optim.batch_size, micro,
                              backend.world_size, backend.rank, recipe.optim.seed)
        self.total_steps = recipe.optim.max_steps or math.ceil(recipe.optim.epochs * self.plan.steps_per_epoch)
        self.objective = build_objective(recipe, self.policy)
        self.sampler = build_sampler(recipe, self.policy.null_label, backend.rank)
        self.spec = recipe.objective.component.spec
        self.rounds = self.objective.config.round_steps if self.spec.inputs == "generated_pairs" else None
        backend.setup(self.policy, self.reference, self.plan.accumulation_steps, self.total_steps)
        self.micro_step = StepRunner(self.objective, self.spec, backend, self.sampler, self.policy, recipe.sampler.seed)
        self.store = CheckpointStore(self.output_dir / "checkpoints", recipe.output.keep_last, self.is_main,
                                     backend.barrier)
        torch.manual_seed(recipe.optim.seed + 1 + backend.rank)  # dropout streams, distinct per process

    def _maybe_resume(self) -> None:
        latest = self.store.latest()
        if latest is not None and not self.resume:
            raise AlignkitError(f"{self.output_dir} already holds checkpoints (latest {latest.name}); pass --resume "
                                "to continue that run, or set output.dir to a new folder")
        if latest is None:
            if self.resume and self.is_main:
                self.console.print(f"[yellow]no checkpoint in {self.store.root}; starting from step 0[/]")
            return
        latest = self._intact(latest)
        state = read_weights_file(latest / "trainer.pt")
        expected = self._plan_signature()
        if state["plan"] != expected:
            raise AlignkitError(f"cannot resume {latest}: it was written with data plan {state['plan']}, this recipe "
                                f"gives {expected} (batch size, seed or dataset size changed)")
        self.backend.load(latest)
        if self.rounds is not None and int(state["step"]) >= self.rounds:  # the reference of the current round
            load_strict(self.reference.model, read_weights_file(latest / REFERENCE_FILE), latest / REFERENCE_FILE)
        rank_file = latest / f"rank{self.backend.rank}.pt"
        if rank_file.is_file():
            rank_state = read_weights_file(rank_file)
            self.sampler.load_state_dict(rank_state["sampler"])
            torch.set_rng_state(rank_state["torch_rng"])
            if torch.cuda.is_available() and rank_state.get("cuda_rng") is not None:
                torch.cuda.set_rng_state_all(rank_state["cuda_rng"])
        elif self.is_main:
            self.console.print(f"[yellow]{latest} was written by {state['world_size']} processes: sampler and "
                               "dropout streams restart (the data order is kept)[/]")
        self.step = int(state["step"])
        if self.is_main:
            self.console.print(f"resuming from {latest} (step {self.step} of {self.total_steps})")

    def _intact(self, latest: Path) -> Path:
        """The newest checkpoint that matches its checksums (the main process decides); damaged ones are
        moved aside, and said so."""
        step = -1
        older = [c for c in self.store.completed() if c.name < latest.name][::-1]
        for folder in [latest, *older] if self.is_main else []:
            if (problem := self.store.damage(folder)) is None:
                step = self.store.step_of(folder)
                break
            folder.rename(aside := folder.with_name(f"{folder.name}.damaged-{int(time.time())}"))
            self.console.print(f"[yellow]warning: checkpoint {folder} is damaged ({problem}); moved to {aside.name}, "
                               "falling back to the previous one[/]")
        step = int(self.backend.all_reduce_max(torch.tensor([step], dtype=torch.float64)).item())
        if step < 0:
            raise AlignkitError(f"cannot resume: no intact checkpoint is left in {self.store.root}")
        return self.store.root / self.store.name(step)

    def _plan_signature(self) -> dict[str, int]:
        return {"num_items": self.plan.num_items, "batch_size": self.plan.batch_size, "seed": self.plan.seed}

    # ------------------------------------------------------------------------------ one step

    def _check_batch(self, tokens_BL: Tensor, labels_B: Tensor, where: str | None = None) -> None:
        try:
            self.policy.check_batch(tokens_BL, labels_B, allow_null=False)
        except AlignkitError as exc:
            where = f" at step {self.step + 1}" if where is None else where
            raise TrainingError(f"{self.recipe.path}: data ({self.dataset.describe()}) does not fit model "
                                f"'{self.recipe.model.backbone}'{where}: {exc}") from None

    # ------------------------------------------------------------------------------ loop

    def run(self) -> RunResult:
        self._build()
        check_data_fits(self.recipe, self.policy, self.dataset)
        self._maybe_resume()
        metrics_log = MetricsLog(self.output_dir, enabled=self.is_main, resume_step=self.step)
        if self.is_main:
            self._write_run_files()
        self.hooks.alignkit_before_train(run=self)
        loader = self._loader()
        progress = ProgressDisplay(self.console, self.total_steps, self.step, enabled=self.is_main,
                                   live=self.show_progress)
        last: dict[str, float] = {}
        saved_at, recent = self.step, deque(maxlen=100)
        try:
            with progress:
                batches = iter(loader)
                while self.step < self.total_steps:
                    last = self._train_step(batches)
                    self.step += 1
                    if self.rounds is not None and self.step % self.rounds == 0 and self.step < self.total_steps:
                        self.backend.refresh_reference()  # self-play: the next round contrasts with this policy
                    self.hooks.alignkit_after_step(run=self, step=self.step, metrics=last)
                    progress.update(self.step, last)
                    if self.step % self.recipe.output.log_every == 0 or self.step == self.total_steps:
                        metrics_log.write(self.step, last)
                    self._check_divergence(recent, last["loss"])
                    if self.step == min(IDENTITY_CHECK_STEPS, self.total_steps):
                        self._check_policy_moved(last)
                    if self.step % self.recipe.output.save_every == 0 or self.step == self.total_steps:
                        self.save_checkpoint()
                        saved_at = self.step
            self.export()
        except KeyboardInterrupt:
            self._interrupted(saved_at)
            raise
        except BaseException as exc:
            self.hooks.alignkit_on_train_error(run=self, error=exc)
            if (failure := write_failure(exc, self.output_dir)) is None:
                raise
            latest = self.store.latest()
            size = sum(f.stat().st_size for f in latest.rglob("*")) if latest else 0
            need = f" (a checkpoint takes {size_text(size)})" if latest else ""
            raise TrainingError(f"{failure}{need}; training stopped at step {self.step}; {self._last_good()}. Free "
                                "some space (or fix the folder), then continue with --resume") from None
        finally:
            metrics_log.close()
        self.backend.barrier()
        self.hooks.alignkit_after_train(run=self)
        return RunResult(self.output_dir, self.step, last)

    def _train_step(self, batches) -> dict[str, float]:
        start, generation_before = time.perf_counter(), self.micro_step.generation_s
        sums: dict[str, Tensor] = {}
        for micro in range(self.plan.accumulation_steps):
            tokens_BL, labels_B = next(batches)
            self._check_batch(tokens_BL, labels_B)
            device = self.backend.device
            out = self.micro_step(tokens_BL.to(device, non_blocking=True), labels_B.to(device, non_blocking=True),
                                  self.step, micro)
            bad = self.backend.all_reduce_max((~torch.isfinite(out.loss.detach())).float().reshape(1))
            if bad.item() > 0:
                raise TrainingError(self._non_finite_message(f"the loss is {out.loss.item()} on this process"))
            self.backend.backward(out.loss)
            for key, value in out.metrics.items():
                sums[key] = sums.get(key, 0) + value.detach().float()
        try:
            stats = self.backend.step()
        except NonFiniteError as exc:
            raise TrainingError(self._non_finite_message(str(exc))) from None
        keys = sorted(sums)
        reduced = self.backend.all_reduce_mean(torch.stack([sums[k] for k in keys]) / self.plan.accumulation_steps)
        metrics = dict(zip(keys, reduced.tolist()))
        elapsed = time.perf_counter() - start
        metrics.update(stats, images_per_s=self.plan.batch_size / elapsed, step_time_s=elapsed,
                       epoch=(self.step + 1) / self.plan.steps_per_epoch)
        if self.rounds is not None:
            generation = self.micro_step.generation_s - generation_before
            metrics.update({"round": self.step // self.rounds, "time/generation_s": generation,
                            "time/generation_share": generation / elapsed})
        return metrics

    def _last_good(self) -> str:
        latest = self.store.latest()
        return f"the last good checkpoint is {latest}" if latest else "no checkpoint had been written yet"

    def _non_finite_message(self, detail: str) -> str:
        return (f"non-finite loss at step {self.step + 1}: {detail}; the step was not applied and training "
                f"stopped; {self._last_good()}. Lower optim.lr, check the data, or use precision = 'fp32'")

    def _check_divergence(self, recent: deque[float], loss: float) -> None:
        """``optim.divergence_factor``: stop, before saving, when the loss leaves its running median."""
        factor = self.recipe.optim.divergence_factor
        median = statistics.median(recent) if recent else 0.0
        if factor is not None and median > 0 and loss > factor * median:
            raise TrainingError(f"the loss diverged at step {self.step}: {loss:.4g} is above {factor:g} × the median "
                                f"{median:.4g} of the {len(recent)} steps before (optim.divergence_factor); training "
                                f"stopped before saving; {self._last_good()}. Lower optim.lr")
        recent.append(loss)

    def _check_policy_moved(self, metrics: dict[str, float]) -> None:
        if metrics.get("lr", 0.0) <= 0 or (self.rounds is not None and self.step >= self.rounds):
            return  # (a self-play round just made the reference the policy)
        distance = self.backend.parameter_distance()
        if distance == 0.0 and self.is_main:
            message = (f"policy and reference are still identical after {self.step} optimiser steps with lr > 0: "
                       "are parameters frozen, or does a plugin replace the reference with the policy?")
            warnings.warn(message, RuntimeWarning, stacklevel=1)
            self.console.print(f"[yellow]warning: {message}[/]")

    def _interrupted(self, saved_at: int) -> None:
        if self.backend.world_size == 1 and self.step > saved_at:
            self.save_checkpoint()
            self.console.print(f"[yellow]interrupted: step {self.step} saved to {self.store.latest()}; continue "
                               "with --resume[/]")

    def _loader(self) -> DataLoader:
        workers = self.recipe.data.num_workers
        if workers is None:
            workers = 0 if self.backend.device.type == "cpu" else min(8, (os.cpu_count() or 1) // self.backend.world_size)
        # Its own generator: creating the iterator must not draw from the global stream that dropout
        # uses, or a resumed run would diverge from an uninterrupted one.
        return DataLoader(self.dataset, batch_sampler=PlanSampler(self.plan, self.step, self.total_steps),
                          collate_fn=collate, num_workers=workers, pin_memory=self.backend.device.type == "cuda",
                          generator=torch.Generator().manual_seed(self.recipe.optim.seed))

    # ------------------------------------------------------------------------------ outputs

    def save_checkpoint(self) -> Path:
        def write(folder: Path) -> None:
            self.backend.save(folder)
            rank_state: dict[str, Any] = {"sampler": self.sampler.state_dict(), "torch_rng": torch.get_rng_state()}
            if torch.cuda.is_available():
                rank_state["cuda_rng"] = torch.cuda.get_rng_state_all()
            torch.save(rank_state, folder / f"rank{self.backend.rank}.pt")
            if self.rounds is not None and self.step >= self.rounds and self.is_main:
                save_safetensors(self.reference.model.state_dict(), folder / REFERENCE_FILE)
            self.backend.barrier()
            if self.is_main:  # written last: its presence marks the folder complete
                torch.save({"step": self.step, "world_size": self.backend.world_size,
                            "plan": self._plan_signature()}, folder / "trainer.pt")

        return self.store.save(self.step, write)

    def export(self) -> None:
        """The final policy in the backbone's official layout and as safetensors, in ``<run>/final``."""
        formats = self.recipe.output.export
        if not formats:
            return
        state = self.backend.export_state_dict()
        if not self.is_main or state is None:
            return
        final = self.output_dir / "final"
        policy = self.backend.unwrapped_policy()
        if "official" in formats:
            save_torch(policy.official_checkpoint(state), final / "model.pt")
        if "safetensors" in formats:
            save_safetensors(state, final / "model.safetensors", metadata={"backbone": self.recipe.model.backbone})
        self.console.print(f"final model written to {final}")

    def _write_run_files(self) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self._keep_fitted_tokenizer()
        write_text(self.output_dir / "recipe.toml", self.recipe.to_toml())
        summary = {"recipe": str(self.recipe.path), "total_steps": self.total_steps, "world_size": self.backend.world_size,
                   "accumulation_steps": self.plan.accumulation_steps, "micro_batch_size": self.plan.micro_batch_size,
                   "num_images": self.plan.num_items, "steps_per_epoch": self.plan.steps_per_epoch}
        write_json(self.output_dir / "run.json", summary)

    def _keep_fitted_tokenizer(self) -> None:
        """A tokenizer built without weights (fitted on the data, as the bench's patch tokenizers are)
        is saved into the run folder and named in its recipe.toml: the run can then be sampled and
        resumed without the cache it was fitted into."""
        section = self.recipe.tokenizer
        if self.tokenizer is None or section is None or section.checkpoint is not None:
            return
        path = self.output_dir / "tokenizer.safetensors"
        try:
            self.tokenizer.save(path)
        except NotImplementedError:
            return
        object.__setattr__(section, "checkpoint", path)  # the recipe is otherwise immutable once validated


def check_data_fits(recipe: Recipe, policy: PolicyModel, dataset: TokenDataset) -> None:
    """Before step 1, and in ``alignkit validate``: the sequence length, and every label and token id of
    data held in memory (streamed data is checked batch by batch)."""
    where = f"{recipe.path}: data ({dataset.describe()})"
    if dataset.seq_len != policy.seq_len:
        raise TrainingError(f"{where} holds sequences of {dataset.seq_len} tokens, but model "
                            f"'{recipe.model.backbone}' expects {policy.seq_len}")
    labels_N, span = dataset.all_labels(), dataset.token_range() or (0, 0)
    labels_2 = torch.stack([labels_N.min(), labels_N.max()]) if labels_N is not None and len(labels_N) else None
    try:
        policy.check_batch(torch.tensor(span).view(2, 1).expand(2, policy.seq_len),
                           torch.zeros(2, dtype=torch.int64) if labels_2 is None else labels_2, allow_null=False)
    except AlignkitError as exc:
        raise TrainingError(f"{where} does not fit model '{recipe.model.backbone}' (before step 1): {exc}") from None


def train(recipe: Recipe, resume: bool = False, **kwargs: Any) -> RunResult:
    trainer = Trainer(recipe, resume=resume, **kwargs)
    lock = None
    try:
        lock = lock_run(recipe.output_dir) if trainer.is_main else None
        return trainer.run()
    finally:
        if lock is not None:
            os.close(lock)
        trainer.backend.close()
