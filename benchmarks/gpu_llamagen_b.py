"""LlamaGen-B (111M) on one CUDA GPU: the CCA training step, eager and compiled, and sampling, guided and
guidance-free; bf16 autocast with fp32 weights. Prints absolute figures (images/s, peak memory).

The step runs the real trainer (``benchmarks/train_step.py``: policy and reference on 2B rows, backward,
AdamW) with ``distributed.compile`` off and on; compiled runs get extra warm-up steps, which compile.
Sampling uses ``generate`` with the official multinomial draw at 256 tokens (256 px); decoding is not
compiled (alignkit offers no compiled decode yet).

    python benchmarks/gpu_llamagen_b.py              # batch 32, about 3 minutes on an H100-class GPU
    python benchmarks/gpu_llamagen_b.py --quick      # batch 8, a few steps
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

import alignkit

sys.path.insert(0, str(Path(__file__).parent))
from train_step import MODELS, run  # noqa: E402


def sampling(batch: int, guidance: float, repeats: int) -> dict[float, float]:
    """Images/s of guidance-free and guided sampling (median of ``repeats`` after one warm-up)."""
    torch.manual_seed(0)
    model = alignkit.load_policy("llamagen", config={"dim": 768, "n_layer": 12, "n_head": 12, "vocab_size": 16384,
                                                     "block_size": 256, "num_classes": 1000}).cuda().eval()
    torch.nn.init.normal_(model.output.weight, std=0.02)  # the official init zeroes the head: flat samples
    labels_B = torch.randint(0, 1000, (batch,), device="cuda")
    rates: dict[float, float] = {}
    for s in (0.0, guidance):
        times = []
        for repeat in range(repeats + 1):
            generator = torch.Generator("cuda").manual_seed(repeat)
            torch.cuda.synchronize()
            start = time.perf_counter()
            with torch.autocast("cuda", dtype=torch.bfloat16):
                model.generate(labels_B, guidance=s, generator=generator)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        rates[s] = batch / sorted(times[1:])[len(times[1:]) // 2]
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32, help="images per CCA step and per sampling call")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps")
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("gpu_llamagen_b.py: needs a CUDA device (train_step.py and sampling_llamagen.py measure the CPU)",
              file=sys.stderr)
        raise SystemExit(2)
    if args.quick:
        args.batch, args.steps = 8, 3
    print(f"{torch.cuda.get_device_name()}; torch {torch.__version__}; LlamaGen-B, 256 tokens, bf16")
    for compile in (False, True):
        result = run("llamagen-b", args.batch, args.steps, "bf16", compile=compile, warmup=3 if compile else 1)
        print(f"CCA step, batch {args.batch}, {'compiled' if compile else 'eager':>8}: "
              f"{result['images_per_s']:8.1f} images/s, {result['step_ms']:7.1f} ms/step, "
              f"peak {result['memory_mib']:,.0f} MiB allocated ({result['params'] / 1e6:.0f}M parameters)")
        torch.cuda.reset_peak_memory_stats()
    rates = sampling(args.batch, args.guidance, repeats=1 if args.quick else 3)
    print(f"sampling, batch {args.batch}: guidance-free {rates[0.0]:.1f} images/s, guided (s {args.guidance:g}) "
          f"{rates[args.guidance]:.1f} images/s, ratio ×{rates[0.0] / rates[args.guidance]:.2f}")
    print(f"({MODELS['llamagen-b']['seq_len']} tokens per image; peak memory: CUDA allocator)")


if __name__ == "__main__":
    main()
