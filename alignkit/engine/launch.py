"""Start the worker processes of a multi-process run with ``torch.distributed.run`` (torchrun),
called from code: rendezvous, multi-node runs and per-rank error files come with it."""

from __future__ import annotations

import logging
import os
import sys


def launch_workers(args: list[str], nproc_per_node: int, nnodes: int = 1, rdzv_endpoint: str | None = None) -> int:
    """Run ``python -m alignkit.cli ARGS`` as ``nproc_per_node`` ranks on this node (of ``nnodes``,
    which meet at ``rdzv_endpoint``); return the first failing worker's exit code (0 if none)."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc_per_node)))
    rendezvous = ["--standalone"] if nnodes == 1 else ["--rdzv-backend=c10d", f"--rdzv-endpoint={rdzv_endpoint}",
                                                       "--rdzv-id=alignkit"]
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)  # the workers say what failed
    try:
        run(get_args_parser().parse_args([f"--nnodes={nnodes}", f"--nproc-per-node={nproc_per_node}", *rendezvous,
                                          "--module", "alignkit.cli", *args]))
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        if failure.exitcode != 2:  # 2: an AlignkitError, already one line from rank 0
            where = f"; its error file: {failure.error_file}" if os.path.isfile(failure.error_file) else ""
            print(f"error: worker rank {rank} failed with exit code {failure.exitcode}{where}", file=sys.stderr)
        return failure.exitcode if failure.exitcode > 0 else 128 - failure.exitcode
    return 0
