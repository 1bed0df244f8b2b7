"""The bench's fine-tunes, run by a pool of worker processes with one thread each.

Models this small gain little from a second thread (their matrix products are tiny and per-operation
overhead dominates), so two one-thread processes train about twice as many models per minute as one
two-thread process. Every fine-tune runs in a worker, whatever the pool size, so its numbers do not
depend on ``workers``: the same recipe and seed give the same model.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

from alignkit.errors import AlignkitError


@dataclass(frozen=True)
class Job:
    """One fine-tune: a recipe file and its overrides; ``key`` names it for the caller."""

    key: tuple
    recipe: Path
    overrides: tuple[str, ...]
    threads: int = 1  # more only for a job that runs alone (the base model's pretraining)


def _init(cache: str | None) -> None:
    import torch

    if cache:
        os.environ["ALIGNKIT_CACHE"] = cache
    torch.set_num_threads(1)


def _train(recipe: str, overrides: tuple[str, ...], threads: int = 1) -> tuple[str, str]:
    """Train in the worker; a failure comes back as text (exceptions with custom constructors do not
    survive pickling)."""
    import torch
    from rich.console import Console

    from alignkit.engine.trainer import train
    from alignkit.recipe import load_recipe

    torch.set_num_threads(threads)
    try:
        train(load_recipe(recipe, list(overrides), check_paths=False), console=Console(quiet=True),
              show_progress=False)
    except AlignkitError as exc:
        return "error", str(exc)
    finally:
        torch.set_num_threads(1)
    return "ok", ""


class Pool:
    """``run(jobs, done)`` trains every job and calls ``done(job)`` as each finishes (in the caller's
    process, so it may update a progress display)."""

    def __init__(self, workers: int):
        self.executor = ProcessPoolExecutor(max(1, workers), mp_context=get_context("spawn"), initializer=_init,
                                            initargs=(os.environ.get("ALIGNKIT_CACHE"),))

    def submit(self, job: Job) -> Future:
        return self.executor.submit(_train, str(job.recipe), job.overrides, job.threads)

    def run(self, jobs: Iterable[Job], done: Callable[[Job], None]) -> None:
        pending: dict[Future, Job] = {self.submit(job): job for job in jobs}
        try:
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    job = pending.pop(future)
                    check(job, future)
                    done(job)
        except BaseException:
            for future in pending:
                future.cancel()
            raise

    def close(self) -> None:
        self.executor.shutdown(cancel_futures=True)

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check(job: Job, future: Future) -> None:
    """Raise the job's failure, if it failed, as one ``AlignkitError``."""
    status, message = future.result()
    if status == "error":
        raise AlignkitError(f"bench fine-tune {'/'.join(map(str, job.key))}: {message}")
