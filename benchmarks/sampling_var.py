"""Sampling speed of VAR: guidance-free (CCA) vs classifier-free guided, same batch.

Guided next-scale sampling runs the conditional and the unconditional branch (2B rows through the
transformer at every scale), guidance-free sampling only the conditional one (B rows). The token
draw itself (top-k/top-p filter and VAR's multinomial over the whole vocabulary at every position)
costs the same in both modes, so the speed-up stays below ×2 by that share. This measures images
and image tokens generated per second with the KV-cached sampler, with CCA's sampling filters
(``VAR_sample.py``: top-k 900, top-p 0.96) and without filters, and prints the ratios. The VQVAE
decode is not timed (it is the same for both modes and independent of the transformer).

    python benchmarks/sampling_var.py              # VAR depth 8 (width 512, 41M parameters), 680 tokens, batch 8
    python benchmarks/sampling_var.py --quick      # a few seconds
    python benchmarks/sampling_var.py --threads 1  # stable numbers while other processes share the cores
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import alignkit

PATCH_NUMS = {"256": (1, 2, 3, 4, 5, 6, 8, 10, 13, 16), "quick": (1, 2, 3, 4, 5, 6, 8)}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small model and a short pyramid (a few seconds)")
    parser.add_argument("--depth", type=int, default=8, help="VAR depth (width 64·depth, depth heads)")
    parser.add_argument("--vocab-size", type=int, default=4096)
    parser.add_argument("--patch-nums", choices=sorted(PATCH_NUMS), default="256")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--guidance", type=float, default=1.5, help="s of the guided run (VAR's cfg, linear ramp)")
    parser.add_argument("--top-k", type=int, default=900, help="the filtered runs' top-k (CCA's VAR_sample.py)")
    parser.add_argument("--top-p", type=float, default=0.96, help="the filtered runs' top-p (CCA's VAR_sample.py)")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per mode (the median is reported)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.quick:
        args.depth, args.vocab_size, args.patch_nums, args.batch, args.repeats = 4, 1024, "quick", 4, 1
    return args


def timed_generate(model, labels_B: torch.Tensor, modes: dict, repeats: int) -> dict:
    """Median wall-clock and process-CPU seconds of one ``generate`` call per mode (after one
    untimed warm-up round).

    The modes alternate within every repeat, so that a change of background load on a shared
    machine hits all of them alike; CPU seconds are reported too because they barely move when
    other processes compete for the cores.
    """
    times: dict = {name: [] for name in modes}
    for i in range(repeats + 1):
        for name, options in modes.items():
            generator = torch.Generator(labels_B.device).manual_seed(i)
            if labels_B.device.type == "cuda":
                torch.cuda.synchronize()
            wall, cpu = time.perf_counter(), time.process_time()
            model.generate(labels_B, generator=generator, **options)
            if labels_B.device.type == "cuda":
                torch.cuda.synchronize()
            if i:  # the first round warms up allocators and kernels
                times[name].append((time.perf_counter() - wall, time.process_time() - cpu))
    return {name: tuple(statistics.median(t[j] for t in runs) for j in (0, 1)) for name, runs in times.items()}


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = {"depth": args.depth, "V": args.vocab_size, "patch_nums": PATCH_NUMS[args.patch_nums]}
    model = alignkit.load_policy("var", config=config).to(args.device).eval()
    params = sum(p.numel() for p in model.parameters())
    labels_B = torch.randint(0, 1000, (args.batch,), device=args.device)

    filters = {f"top-k {args.top_k}, top-p {args.top_p:g}": {"top_k": args.top_k, "top_p": args.top_p},
               "no filter": {"top_k": 0, "top_p": 0.0}}
    guidances = {"guidance-free (CCA)": 0.0, f"guided (s={args.guidance:g})": args.guidance}
    modes = {(f, g): {"guidance": s, **options} for f, options in filters.items() for g, s in guidances.items()}
    seconds = timed_generate(model, labels_B, modes, args.repeats)

    print(f"VAR: depth {args.depth}, width {model.config.width}, {model.config.heads} heads, vocab {args.vocab_size}, "
          f"{params / 1e6:.1f}M parameters; {len(model.patch_nums)} scales, {model.seq_len} tokens per image; "
          f"batch {args.batch}; {torch.get_num_threads()} threads on {args.device}; median of {args.repeats}")
    print(f"{'filter':<22} {'mode':<22} {'rows/step':>9} {'seconds':>8} {'cpu-s':>7} {'images/s':>8} {'tokens/s':>9}")
    for (f, g), options in modes.items():
        rows = args.batch * (2 if options["guidance"] else 1)
        wall, cpu = seconds[(f, g)]
        print(f"{f:<22} {g:<22} {rows:>9} {wall:>8.3f} {cpu:>7.2f} {args.batch / wall:>8.2f} "
              f"{args.batch * model.seq_len / wall:>9.1f}")
    for f in filters:
        (free, free_cpu), (guided, guided_cpu) = (seconds[(f, g)] for g in guidances)
        print(f"speed-up of guidance-free sampling, {f}: x{guided / free:.2f} wall-clock, x{guided_cpu / free_cpu:.2f} "
              "CPU time (the paper's claim: x2; target >= 1.8)")


if __name__ == "__main__":
    main()
