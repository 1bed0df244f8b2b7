"""Experiment trackers besides ``metrics.jsonl`` (which always stays): TensorBoard and Weights & Biases,
chosen with ``[output] report_to = ["tensorboard", "wandb"]`` and installed as optional extras
(``pip install 'alignkit[tensorboard]'``, ``'alignkit[wandb]'``). A tracker asked for but not installed
is a warning on every run, never skipped silently.

They log on the main process at the steps ``metrics.jsonl`` logs (``output.log_every`` and the last).
A resumed run continues the same TensorBoard log (events past the checkpoint are purged) and the
same W&B run (its id is kept in ``<run>/wandb_id.txt``; project from ``WANDB_PROJECT``, default
``alignkit``).
"""

from __future__ import annotations

import json
import os
from typing import Any

from alignkit import hookimpl
from alignkit.files import write_text


class TensorBoard:
    package = "tensorboard"

    def __init__(self, run: Any):
        from torch.utils.tensorboard import SummaryWriter  # ImportError without the tensorboard package

        self.writer = SummaryWriter(str(run.output_dir / "tensorboard"), purge_step=run.step + 1)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        self.writer.close()


class WandB:
    package = "wandb"

    def __init__(self, run: Any):
        import wandb

        id_file = run.output_dir / "wandb_id.txt"
        run_id = id_file.read_text().strip() if id_file.is_file() else wandb.util.generate_id()
        write_text(id_file, run_id + "\n")
        sections = ("model", "tokenizer", "data", "objective", "sampler", "reference", "optim", "distributed")
        config = {name: run.recipe.settings(name) for name in sections if getattr(run.recipe, name) is not None}
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "alignkit"), name=run.recipe.name, id=run_id,
                              resume="allow", dir=str(run.output_dir), config=json.loads(json.dumps(config, default=str)))

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self.run.log(metrics, step=step)

    def close(self) -> None:
        self.run.finish()


TRACKERS = {"tensorboard": TensorBoard, "wandb": WandB}
_open: dict[int, list[Any]] = {}  # id(run) -> its trackers


@hookimpl
def alignkit_before_train(run: Any) -> None:
    if not run.backend.is_main:
        return
    trackers = []
    for name in run.recipe.output.report_to:
        try:
            trackers.append(TRACKERS[name](run))
        except ImportError:
            run.console.print(f"[yellow]warning: output.report_to asks for {name}, but the {TRACKERS[name].package} "
                              f"package is not installed (pip install 'alignkit\\[{name}]'): not logging to {name}[/]")
    _open[id(run)] = trackers


@hookimpl
def alignkit_after_step(run: Any, step: int, metrics: dict[str, float]) -> None:
    if step % run.recipe.output.log_every == 0 or step == run.total_steps:
        for tracker in _open.get(id(run), ()):
            tracker.log(step, metrics)


@hookimpl
def alignkit_after_train(run: Any) -> None:
    for tracker in _open.pop(id(run), ()):
        tracker.close()


@hookimpl
def alignkit_on_train_error(run: Any, error: BaseException) -> None:
    alignkit_after_train(run)
