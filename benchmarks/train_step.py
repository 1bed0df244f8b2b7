"""CCA training-step throughput and where the time goes, for a small LlamaGen and a small VAR.

Runs the real trainer (``alignkit.engine.trainer``) on random codes and times its parts by wrapping
the backend's methods: reference forward, policy forward, the log-prob reduction, backward, the
optimiser step, and everything else (pair sampler, objective, metric bookkeeping, data). Prints
images/s, the split, and peak memory (CUDA allocator peak on a GPU, process peak RSS on the CPU).

    python benchmarks/train_step.py            # both backbones, 6 timed steps each
    python benchmarks/train_step.py --quick    # a few seconds
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from alignkit.engine.trainer import Trainer
from alignkit.recipe import load_recipe

MODELS = {
    "llamagen": {
        "model": 'backbone = "llamagen"\ndim = 384\nn_layer = 6\nn_head = 6\nvocab_size = 4096\nblock_size = 256\n'
                 "num_classes = 10\nmultiple_of = 64\n",
        "tokenizer": "",
        "seq_len": 256,
        "vocab": 4096,
    },
    "llamagen-b": {  # the official GPT-B (111M) at 256 px: 256 tokens, 16,384 codes, 1,000 classes
        "model": 'backbone = "llamagen"\ndim = 768\nn_layer = 12\nn_head = 12\nvocab_size = 16384\nblock_size = 256\n'
                 "num_classes = 1000\n",
        "tokenizer": "",
        "seq_len": 256,
        "vocab": 16384,
    },
    "var": {
        "model": 'backbone = "var"\ndepth = 6\nembed_dim = 384\nnum_heads = 6\nnum_classes = 10\nV = 4096\nCvae = 32\n'
                 "ch = 32\n",
        "tokenizer": '[tokenizer]\nname = "var-vqvae"\nvocab_size = 4096\nz_channels = 32\nch = 32\n',
        "seq_len": 680,
        "vocab": 4096,
    },
}

RECIPE = """
[model]
{model}
{tokenizer}
[data]
name = "codes-npz"
path = "codes.npz"

[objective]
name = "cca"
beta = 0.02
lambda_ = 10

[sampler]
uncond_ratio = 0.1

[optim]
lr = 1e-5
batch_size = {batch}
max_steps = {steps}

[distributed]
precision = "{precision}"
compile = {compile}

[output]
dir = "{out}"
save_every = 100000
log_every = 1000
export = []
"""


class Timers:
    def __init__(self, device: torch.device):
        self.device = device
        self.totals: dict[str, float] = defaultdict(float)
        self.active = False

    def wrap(self, name: str, fn):
        def timed(*args, **kwargs):
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            if self.active:
                self.totals[name] += time.perf_counter() - start
            return out

        return timed


def run(name: str, batch: int, steps: int, precision: str, compile: bool = False, warmup: int = 1) -> dict:
    spec = MODELS[name]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rng = np.random.default_rng(0)
        n = batch * (steps + warmup)
        np.savez(folder / "codes.npz", tokens=rng.integers(0, spec["vocab"], (n, spec["seq_len"])),
                 labels=rng.integers(0, 10, n))
        (folder / "recipe.toml").write_text(RECIPE.format(model=spec["model"], tokenizer=spec["tokenizer"], batch=batch,
                                                          steps=steps + warmup, precision=precision,
                                                          compile=str(compile).lower(),
                                                          out=folder / "run"))
        trainer = Trainer(load_recipe(folder / "recipe.toml"), show_progress=False)
        timers = Timers(trainer.backend.device)
        backend = trainer.backend
        for method, label in (("reference_logps", "reference forward"), ("policy_logps", "policy forward"),
                              ("backward", "backward"), ("step", "optimiser")):
            setattr(backend, method, timers.wrap(label, getattr(backend, method)))
        step_times: list[float] = []
        original = trainer._train_step

        def train_step(batches):
            timers.active = trainer.step >= warmup  # warm-up steps: allocators, kernels, compilation
            metrics = original(batches)
            if timers.active:
                step_times.append(metrics["step_time_s"])
            return metrics

        trainer._train_step = train_step
        if backend.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        trainer.run()
        params = sum(p.numel() for p in trainer.policy.parameters())
    total = sum(step_times)
    parts = dict(timers.totals)
    parts["sampler, objective, bookkeeping"] = total - sum(parts.values())
    memory = (torch.cuda.max_memory_allocated() / 2**20 if backend.device.type == "cuda"
              else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"params": params, "images_per_s": batch * len(step_times) / total, "step_ms": 1000 * total / len(step_times),
            "parts": {k: v / total for k, v in parts.items()}, "memory_mib": memory,
            "memory_kind": "CUDA peak allocated" if backend.device.type == "cuda" else "process peak RSS"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", choices=["llamagen", "var", "both"], default="both")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=6, help="timed steps (after one warm-up step)")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="batch 4, 2 steps")
    args = parser.parse_args()
    if args.quick:
        args.batch, args.steps = 4, 2
    if args.threads:
        torch.set_num_threads(args.threads)
    names = ["llamagen", "var"] if args.backbone == "both" else [args.backbone]
    print(f"CCA step, batch {args.batch} ({2 * args.batch} sequences through policy and reference), "
          f"{args.precision}, {torch.get_num_threads()} threads, "
          f"{'cuda' if torch.cuda.is_available() else 'cpu'}")
    for name in names:
        result = run(name, args.batch, args.steps, args.precision)
        print(f"\n{name}: {result['params'] / 1e6:.1f}M parameters, {MODELS[name]['seq_len']} tokens")
        print(f"  {result['images_per_s']:.2f} images/s, {result['step_ms']:.0f} ms/step, "
              f"{result['memory_kind']} {result['memory_mib']:.0f} MiB")
        for part, share in result["parts"].items():
            print(f"  {part:<34} {100 * share:5.1f} %")


if __name__ == "__main__":
    main()
