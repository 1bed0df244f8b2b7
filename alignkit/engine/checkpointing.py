"""Checkpoint folders that are never seen half-written.

Each checkpoint is a folder ``step-00001234`` inside ``<run>/checkpoints``. It is written as
``.tmp-step-00001234`` (every process writes its own files there), then renamed by the main process
once all writers are done and ``checksums.json`` (size, SHA-256 of each file) is written; ``latest``
(a one-line file, replaced atomically) names the newest one. A crash or a full disk at any moment
leaves the previous checkpoints intact; stale ``.tmp-*`` folders are removed at the next save.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import socket
import time
from collections.abc import Callable
from pathlib import Path

from alignkit.errors import AlignkitError
from alignkit.files import atomic_write, file_sha256, write_json

_STEP = re.compile(r"^step-(\d{8})$")
COMPLETE_MARKER = "trainer.pt"
CHECKSUMS = "checksums.json"


def lock_run(folder: Path) -> int:
    """An exclusive ``flock`` on ``<run>/.lock`` (the OS drops it when the process ends, SIGKILL too),
    holding the holder's pid and host; ``os.close`` the returned descriptor to release it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise AlignkitError(f"output.dir: cannot use {folder} as the run folder: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        time.sleep(0.2)  # the holder writes its name right after locking
        raise AlignkitError(f"{folder} is in use by another training run ({(folder / '.lock').read_text().strip()}); "
                            "wait for it to end, or set output.dir to another folder") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()} on host {socket.gethostname()}".encode())
    return fd


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
        try:
            write(tmp)
            self.barrier()
            if self.is_main:
                write_json(tmp / CHECKSUMS, {str(f.relative_to(tmp)): [f.stat().st_size, file_sha256(f)]
                                             for f in sorted(tmp.rglob("*")) if f.is_file()})
        except BaseException:
            if self.is_main:  # free what a full disk took
                shutil.rmtree(tmp, ignore_errors=True)
            raise
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
    def damage(folder: Path) -> str | None:
        """What its checksums say is wrong with a checkpoint (sizes first: cheap), or ``None``."""
        try:
            expected = json.loads((folder / CHECKSUMS).read_text())
        except FileNotFoundError:  # written before checksums were
            return None
        except ValueError:
            return f"{CHECKSUMS} is unreadable"
        for name, (size, _) in expected.items():
            if not (folder / name).is_file() or (folder / name).stat().st_size != size:
                return f"{name} is missing or not the {size} bytes written"
        return next((f"{n} does not match its SHA-256" for n, (_, h) in expected.items()
                     if file_sha256(folder / n) != h), None)

    @staticmethod
    def step_of(folder: Path) -> int:
        match = _STEP.match(folder.name)
        if not match:
            raise ValueError(f"not a checkpoint folder: {folder}")
        return int(match.group(1))
