"""ZeRO-3 at scale on this machine: a real CCA step of LlamaGen-B (111M, 384 px: 576 tokens, V = 16384)
on two CPU processes against the same step on one, with what each process holds.

Both runs go through ``alignkit train`` (DeepSpeed ZeRO-3, gloo, fp32: the CPU runs bf16 slowly) on
random codes with the same global batch (2 images) and the same micro-batch per process (1 image,
so 2 sequences: positive and negative condition); the one-process run accumulates two micro-batches.
An inline plugin beside the recipe records, per process: the policy's and the reference's parameter
elements held (``ds_tensor`` shards under ZeRO-3), the optimiser's states (fp32 master partition, m,
v), the resident memory once the run is set up and the peak resident memory (``ru_maxrss``) before
and after the step. It prints those numbers and their ratio to one process; it asserts nothing.

    python benchmarks/zero_scale.py               # LlamaGen-B, 1 step (a few minutes on 2 cores)
    python benchmarks/zero_scale.py --quick       # B's width at 4 layers and 256 tokens (54M)

The step's end-of-run checkpoint is not part of what is measured: the plugin ends each process
right after its last step (a run always checkpoints its last step).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

STATS_PLUGIN = '''
import json, os, resource
from alignkit import hookimpl


def held(module):
    """(elements this process holds, their bytes, elements of the whole module)."""
    tensors = [getattr(p, "ds_tensor", p) for p in module.parameters()]
    full = sum(getattr(p, "ds_numel", p.numel()) for p in module.parameters())
    return sum(t.numel() for t in tensors), sum(t.numel() * t.element_size() for t in tensors), full


def resident_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def write(run, **values):
    path = os.path.join(os.environ["ZERO_SCALE_OUT"], f"rank{run.backend.rank}.json")
    stats = json.load(open(path)) if os.path.exists(path) else {}
    stats.update(values)
    with open(path, "w") as f:
        json.dump(stats, f)


@hookimpl
def alignkit_before_train(run):
    reference = run.reference.model
    write(run, world_size=run.backend.world_size, policy=held(run.backend.unwrapped_policy()),
          reference=held(getattr(reference, "module", reference)), setup_rss=resident_bytes(),
          setup_peak_rss=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)


@hookimpl
def alignkit_after_step(run, step, metrics):
    zero3 = run.backend.optimizer  # DeepSpeed's ZeRO-3 optimizer; .optimizer is the AdamW it steps
    master = sum(t.numel() * t.element_size() for t in zero3.fp32_partitioned_groups_flat)
    moments = sum(v.numel() * v.element_size() for state in zero3.optimizer.state.values() for v in state.values()
                  if hasattr(v, "numel") and v.dim() > 0)
    write(run, optimizer_bytes=master + moments, loss=metrics["loss"], step_time_s=metrics["step_time_s"],
          step_peak_rss=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    if step == run.total_steps:
        os._exit(0)  # skip the end-of-run checkpoint: it is not part of the step
'''

RECIPE = """
description = "zero_scale benchmark: {name}, ZeRO-3, {processes} process(es)"

[model]
backbone = "llamagen"
{model}

[data]
name = "codes-npz"
path = "codes.npz"

[objective]
name = "cca"
beta = 0.02
lambda_ = 1000

[optim]
lr = 1e-5
batch_size = {batch}
micro_batch_size = 1
max_steps = {steps}

[distributed]
backend = "deepspeed"
num_processes = {processes}
zero_stage = 3
precision = "fp32"

[output]
dir = "run-{processes}"
log_every = 1
export = []
"""

MODELS = {
    "LlamaGen-B": {"dim": 768, "n_layer": 12, "n_head": 12, "vocab_size": 16384, "block_size": 576},
    "LlamaGen-B, 4 layers, 256 tokens": {"dim": 768, "n_layer": 4, "n_head": 12, "vocab_size": 16384,
                                         "block_size": 256},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(folder: Path, name: str, processes: int, steps: int) -> list[dict]:
    """Train ``steps`` steps on ``processes`` processes; the per-rank statistics the plugin wrote."""
    out = folder / f"stats-{processes}"
    out.mkdir()
    model = "\n".join(f"{k} = {v}" for k, v in MODELS[name].items())
    recipe = folder / f"zero3_{processes}.toml"
    # global batch 2: one image per process and micro-batch either way
    recipe.write_text(RECIPE.format(name=name, model=model, processes=processes, batch=2, steps=steps))
    env = {**os.environ, "ZERO_SCALE_OUT": str(out)}
    if processes == 1:  # DeepSpeed with a world of one: the environment a launcher would give
        env.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(free_port()))
        env.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    result = subprocess.run([sys.executable, "-m", "alignkit.cli", "train", str(recipe)], cwd=folder, env=env,
                            capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"alignkit train on {processes} process(es) failed:\n{result.stderr[-4000:]}")
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(processes)]


def planned(recipe: Path, processes: int) -> tuple[int, int]:
    """alignkit plan's figures for this run: policy (and reference) elements and optimiser bytes per process."""
    from alignkit_backends.memory import Setting, model_states
    from alignkit_backends.plan import workload
    from alignkit.recipe import load_recipe

    r = load_recipe(recipe)
    work = workload(r, processes, 1, processes)
    return work.shape.params // processes, model_states(Setting(3), work)[2]


ROWS = (("policy held", lambda s: s["policy"][0], 1e6, "M"),
        ("reference held", lambda s: s["reference"][0], 1e6, "M"),
        ("optimizer", lambda s: s["optimizer_bytes"], 2**20, "MiB"),
        ("RSS after setup", lambda s: s["setup_rss"], 2**20, "MiB"),
        ("peak RSS by setup", lambda s: s["setup_peak_rss"], 2**20, "MiB"),
        ("peak RSS by step end", lambda s: s["step_peak_rss"], 2**20, "MiB"))
"""Per-process measurements: column, value, unit scale, unit."""


def report(name: str, steps: int, results: dict[int, list[dict]], plans: dict[int, tuple[int, int]]) -> None:
    from rich.console import Console
    from rich.table import Table

    one = results[1][0]
    table = Table(title=f"{name}: {one['policy'][2] / 1e6:.1f}M parameters, DeepSpeed ZeRO-3, fp32, CPU (gloo), "
                        f"micro-batch 1 (2 sequences) per process, global batch 2, {steps} step(s); "
                        "per process, (ratio to one process)", title_justify="left")
    for column in ("processes", "rank", *(row[0] for row in ROWS), "loss", "step s"):
        table.add_column(column, justify="right")
    for processes, ranks in sorted(results.items()):
        for rank, stats in enumerate(ranks):
            cells = [f"{get(stats) / scale:.1f} {unit} ({get(stats) / get(one):.2f})" for _, get, scale, unit in ROWS]
            table.add_row(str(processes), str(rank), *cells, f"{stats['loss']:.3f}", f"{stats['step_time_s']:.0f}")
    console = Console(width=200)
    console.print(table)
    console.print("held: parameter elements in the process's ds_tensor shards; optimizer: DeepSpeed's fp32 "
                  "partition and AdamW's m and v; RSS from /proc and ru_maxrss")
    for processes, (params, optimizer) in sorted(plans.items()):
        console.print(f"alignkit plan for {processes} process(es): policy and reference {params / 1e6:.1f}M "
                      f"elements each, optimizer {optimizer / 2**20:.1f} MiB per process")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1, help="optimiser steps per run")
    parser.add_argument("--quick", action="store_true", help="B's width at 4 layers and 256 tokens")
    args = parser.parse_args()
    name = "LlamaGen-B, 4 layers, 256 tokens" if args.quick else "LlamaGen-B"
    config = MODELS[name]
    with tempfile.TemporaryDirectory(prefix="zero_scale_") as tmp:
        folder = Path(tmp)
        (folder / "alignkit_plugins.py").write_text(STATS_PLUGIN)
        rng = np.random.default_rng(0)
        items = 2 * args.steps
        np.savez(folder / "codes.npz", tokens=rng.integers(0, config["vocab_size"], (items, config["block_size"])),
                 labels=rng.integers(0, 1000, items))
        results, plans = {}, {}
        for processes in (1, 2):  # one DeepSpeed run at a time
            print(f"running {name} on {processes} process(es) …", flush=True)
            results[processes] = run(folder, name, processes, args.steps)
            plans[processes] = planned(folder / f"zero3_{processes}.toml", processes)
    report(name, args.steps, results, plans)


if __name__ == "__main__":
    main()
