"""What a run shows and records: a rich progress bar and metrics as JSON lines (trackers are plugins)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from alignkit.files import atomic_write


class MetricsLog:
    """``metrics.jsonl`` in the run folder, one object per logged step (``step`` first).

    On resume, lines past the resumed step (logged after the last checkpoint) are dropped so the
    file describes one consistent run, and so is a line torn by a crash or a full disk.
    """

    def __init__(self, output_dir: Path, enabled: bool = True, resume_step: int = 0):
        self.enabled = enabled
        self.path = output_dir / "metrics.jsonl"
        if not enabled:
            return
        output_dir.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            lines = self.path.read_text(errors="replace").splitlines()
            if torn := sum(_step(line) is None for line in lines):
                print(f"note: {self.path}: dropped {torn} torn line(s) (a crash or a full disk)", file=sys.stderr)
            kept = [line for line in lines if (step := _step(line)) is not None and step <= resume_step]
            atomic_write(self.path, lambda p: p.write_text("".join(f"{line}\n" for line in kept)))
        self.file = open(self.path, "a")

    def write(self, step: int, metrics: dict[str, Any]) -> None:
        if self.enabled:
            self.file.write(json.dumps({"step": step, **metrics, "time": time.time()}) + "\n")
            self.file.flush()

    def close(self) -> None:
        if self.enabled:
            try:
                self.file.close()
            except OSError:  # a full disk: the failed write was already reported
                pass


def _step(line: str) -> float | None:
    """The step of a metrics line; ``None`` for a torn one (dropped)."""
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return None


class ProgressDisplay:
    """A live bar (step, loss, reward margin, images/s, ETA) on a terminal; on other outputs (CI logs,
    files) a plain line every tenth of the run."""

    def __init__(self, console: Console, total: int, start: int, enabled: bool = True, live: bool | None = None):
        self.console, self.total, self.enabled = console, total, enabled
        self.live = console.is_terminal if live is None else live
        self.every = max(1, total // 10)
        self.progress: Progress | None = None
        if enabled and self.live:
            self.progress = Progress(
                TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}  margin {task.fields[margin]}  {task.fields[speed]} img/s"),
                TimeRemainingColumn(), console=console, transient=False)
            self.task = self.progress.add_task("train", total=total, completed=start, loss="…", margin="…", speed="…")

    def __enter__(self) -> ProgressDisplay:
        if self.progress is not None:
            self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.progress is not None:
            self.progress.__exit__(*exc)

    def update(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        loss = f"{metrics.get('loss', float('nan')):.4f}"
        margin = f"{metrics['rewards/margins']:.4f}" if "rewards/margins" in metrics else "–"
        speed = f"{metrics.get('images_per_s', 0.0):.1f}"
        if self.progress is not None:
            self.progress.update(self.task, completed=step, loss=loss, margin=margin, speed=speed)
        elif step % self.every == 0 or step == self.total:
            self.console.print(f"step {step}/{self.total}  loss {loss}  margin {margin}  {speed} img/s", highlight=False)
