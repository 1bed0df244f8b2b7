"""Start the worker processes of a multi-process run on this machine (what torchrun does, minus
its tracebacks): one child per rank with the usual environment, all stopped when one fails."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_workers(args: list[str], num_processes: int) -> int:
    """Run ``python -m alignkit.cli ARGS`` as ``num_processes`` ranks; return the first failing exit code."""
    port = free_port()
    threads = max(1, (os.cpu_count() or 1) // num_processes)
    children = []
    for rank in range(num_processes):
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
               "LOCAL_RANK": str(rank), "WORLD_SIZE": str(num_processes), "LOCAL_WORLD_SIZE": str(num_processes)}
        env.setdefault("OMP_NUM_THREADS", str(threads))
        children.append(subprocess.Popen([sys.executable, "-m", "alignkit.cli", *args], env=env))
    code = 0
    try:
        while children:
            for child in list(children):
                status = child.poll()
                if status is None:
                    continue
                children.remove(child)
                if status != 0 and code == 0:
                    code = status
                    for other in children:  # the others would wait forever in a collective
                        other.send_signal(signal.SIGTERM)
            time.sleep(0.2)
    except KeyboardInterrupt:
        for child in children:
            child.send_signal(signal.SIGINT)
        for child in children:
            child.wait()
        raise
    return code
