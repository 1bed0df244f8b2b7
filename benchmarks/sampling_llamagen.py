"""Sampling speed of a LlamaGen GPT: guidance-free (CCA) vs classifier-free guided, same batch.

Guided sampling runs the conditional and the unconditional branch (2B rows per step), guidance-free
sampling only the conditional one (B rows), so CCA's claim is a ×2 speed-up. This measures image
tokens generated per second for both with the KV-cached sampler and prints their ratio, for the
official multinomial draw, the fast exact draw (``sampler="inverse_cdf"``: the same distribution,
other tokens) and greedy decoding (no draw: the model's share alone). Runs of the six settings are
interleaved, so that a change in machine load affects them alike.

    python benchmarks/sampling_llamagen.py            # ~27M-parameter GPT, batch 16, 256 tokens
    python benchmarks/sampling_llamagen.py --quick    # a few seconds
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import alignkit

DRAWS = ("multinomial", "inverse_cdf", "greedy")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small model and short sequences (a few seconds)")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--n-layer", type=int, default=8)
    parser.add_argument("--n-head", type=int, default=6)
    parser.add_argument("--vocab-size", type=int, default=16384)
    parser.add_argument("--tokens", type=int, default=256, help="image tokens per sample (a perfect square)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--guidance", type=float, default=3.0, help="s of Eq. 2 for the guided runs")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per setting (the median is reported)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.quick:
        args.dim, args.n_layer, args.n_head, args.tokens, args.batch, args.repeats = 256, 4, 4, 64, 8, 1
    return args


def timed_generate(model, labels_B: torch.Tensor, guidance: float, draw: str, seed: int) -> float:
    """Wall-clock seconds of one full ``generate`` call."""
    synchronize = torch.cuda.synchronize if labels_B.device.type == "cuda" else (lambda: None)
    generator = torch.Generator(labels_B.device).manual_seed(seed)
    synchronize()
    start = time.perf_counter()
    model.generate(labels_B, guidance=guidance, greedy=draw == "greedy", generator=generator,
                   sampler="inverse_cdf" if draw == "inverse_cdf" else "official")
    synchronize()
    return time.perf_counter() - start


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = {"dim": args.dim, "n_layer": args.n_layer, "n_head": args.n_head, "vocab_size": args.vocab_size,
              "num_classes": 1000, "block_size": args.tokens}
    model = alignkit.load_policy("llamagen", config=config).to(args.device)
    torch.nn.init.normal_(model.output.weight, std=0.02)  # the official init zeroes the head: flat samples
    params = sum(p.numel() for p in model.parameters())
    labels_B = torch.randint(0, 1000, (args.batch,), device=args.device)

    settings = [(draw, guidance) for draw in DRAWS for guidance in (0.0, args.guidance)]
    timed_generate(model, labels_B, args.guidance, "multinomial", seed=0)  # warm-up: threads, allocator, kernels
    seconds: dict[tuple[str, float], list[float]] = {setting: [] for setting in settings}
    for repeat in range(args.repeats):
        for draw, guidance in settings:
            seconds[draw, guidance].append(timed_generate(model, labels_B, guidance, draw, repeat))

    print(f"LlamaGen GPT: dim {args.dim}, {args.n_layer} layers, {args.n_head} heads, vocab {args.vocab_size}, "
          f"{params / 1e6:.1f}M parameters; batch {args.batch} x {args.tokens} tokens; "
          f"{torch.get_num_threads()} threads on {args.device}; median of {args.repeats}")
    print(f"{'draw':<12} {'mode':<20} {'rows/step':>9} {'seconds':>9} {'tokens/s':>10} {'speed-up':>9}")
    for draw in DRAWS:
        rates = {}
        for guidance in (0.0, args.guidance):
            median = statistics.median(seconds[draw, guidance])
            rates[guidance] = args.batch * args.tokens / median
            mode = "guidance-free (CCA)" if guidance == 0.0 else f"guided (s={guidance:g})"
            rows = args.batch * (2 if guidance else 1)
            ratio = f"x{rates[0.0] / rates[guidance]:.2f}" if guidance else ""
            print(f"{draw:<12} {mode:<20} {rows:>9} {median:>9.3f} {rates[guidance]:>10.1f} {ratio:>9}")
    print("speed-up = guidance-free tokens/s / guided tokens/s (the paper's claim: x2; target >= 1.8)")


if __name__ == "__main__":
    main()
