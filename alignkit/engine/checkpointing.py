"""Checkpoint folders that are never seen half-written.

Each checkpoint is a folder ``step-00001234`` inside ``<run>/checkpoints``. It is written as
``.tmp-step-00001234`` (every process writes its own files there), then renamed by the main process
once all writers are done; ``latest`` (a one-line file, replaced atomically) names the newest one.
A crash at any moment leaves the previous checkpoints intact; stale ``.tmp-*`` folders are removed
at the next save.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

from alignkit.files import atomic_write

_STEP = re.compile(r"^step-(\d{8})$")
COMPLETE_MARKER = "trainer.pt"


class CheckpointStore:
    def __init__(self, root: Path, keep_last: int, is_main: bool, barrier: Callable[[], None]):
        self.root = Path(root)
        self.keep_last = keep_last
        self.is_main = is_main
        self.barrier = barrier

    @staticmethod
    def name(step: int) -> str:
        return f"step-{step:08d}"

    def save(self, step: int, write: Callable[[Path], None]) -> Path:
        """Run ``write(folder)`` on every process, then publish the folder as ``step-<step>``."""
        tmp = self.root / f".tmp-{self.name(step)}"
        final = self.root / self.name(step)
        if self.is_main:
            self.root.mkdir(parents=True, exist_ok=True)
            for stale in self.root.glob(".tmp-step-*"):
                shutil.rmtree(stale, ignore_errors=True)
            tmp.mkdir()
        self.barrier()
        write(tmp)
        self.barrier()
        if self.is_main:
            if final.exists():  # re-saving a step after a resume: replace it whole
                shutil.rmtree(final)
            tmp.rename(final)
            atomic_write(self.root / "latest", lambda p: p.write_text(final.name + "\n"))
            self._prune()
        self.barrier()
        return final

    def _prune(self) -> None:
        for old in self.completed()[: -self.keep_last]:
            shutil.rmtree(old, ignore_errors=True)

    def completed(self) -> list[Path]:
        """Published checkpoints, oldest first."""
        if not self.root.is_dir():
            return []
        found = [p for p in self.root.iterdir() if _STEP.match(p.name) and (p / COMPLETE_MARKER).is_file()]
        return sorted(found, key=lambda p: p.name)

    def latest(self) -> Path | None:
        pointer = self.root / "latest"
        if pointer.is_file():
            candidate = self.root / pointer.read_text().strip()
            if (candidate / COMPLETE_MARKER).is_file():
                return candidate
        completed = self.completed()
        return completed[-1] if completed else None

    @staticmethod
    def step_of(folder: Path) -> int:
        match = _STEP.match(folder.name)
        if not match:
            raise ValueError(f"not a checkpoint folder: {folder}")
        return int(match.group(1))
