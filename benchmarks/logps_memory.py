"""Activation memory of a CCA step's log-probs: the full logits (``log_softmax`` of ``B×L×V`` fp32, what
the official CCA trainers and alignkit before the fusion compute) against the fused projection +
log-softmax + gather of ``alignkit.logprobs`` (logits one chunk at a time; at this size, above
``KEEP_ELEMENTS``, the backward recomputes them).

One CCA micro-batch of LlamaGen-B (111M, 576 tokens, V = 16,384) on the CPU in fp32: the reference's
forward on the 2B rows without gradients, then the policy's forward and backward. Each variant runs
in its own process, twice: once for the process's peak RSS minus its RSS just before the step (the
models, their gradients and the batch are allocated and touched first), and once under the profiler's
allocation records for the peak of live tensor bytes over the step less those alive at its start. The
first is what this CPU process costs, glibc's free-but-kept heap included; the second is what a GPU's
``torch.cuda.max_memory_allocated`` would count (its caching allocator's own slack aside).

Each path runs under the three ``activation_checkpointing`` settings: off (the default), ``"selective"``
(the blocks keep their matrix products' and attention's outputs and recompute the element-wise ops
between them) and ``true`` (each block recomputed whole). The issue's target compares the full logits
without checkpointing (the official trainers) with each fused variant.

    python benchmarks/logps_memory.py                    # LlamaGen-B, micro-batch 8 (16 rows)
    python benchmarks/logps_memory.py --quick            # a small model, seconds
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

PATHS = ("full logits", "fused")
MODES = {"": False, ", selective": "selective", ", checkpointed": True}
"""The two log-prob paths under each ``activation_checkpointing`` setting (by variant-name suffix)."""
VARIANTS = tuple(path + suffix for suffix in MODES for path in PATHS)


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def tensor_peak_mib(step) -> float:
    """Peak of the CPU allocator's live bytes while ``step()`` runs, over those at its start (MiB).

    The profiler's memory records carry the allocator's running total of what was allocated since
    profiling began, net of what of it was freed: its maximum is the step's peak. (Freeing a tensor
    from before the step would not lower the total, so the figure can only err high.)"""
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    peak, nodes = 0, list(prof.profiler.kineto_results.experimental_event_tree())
    while nodes:
        node = nodes.pop()
        nodes.extend(node.children)
        if node.typed[0] == _EventType.Allocation and node.typed[1].device.type == "cpu":
            peak = max(peak, node.typed[1].total_allocated)
    return peak / 2**20


def one(variant: str, backbone: str, config: dict, batch: int, threads: int, measure: str) -> dict:
    import copy

    import alignkit
    from alignkit.logprobs import token_logps

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    mode = MODES[next((suffix for suffix in MODES if suffix and variant.endswith(suffix)), "")]
    policy = alignkit.load_policy(backbone, config={**config, "activation_checkpointing": mode})
    policy.train()
    reference = copy.deepcopy(policy).requires_grad_(False)
    rows = 2 * batch  # every image under its positive and its negative label
    tokens = torch.randint(0, policy.vocab_size, (rows, policy.seq_len))
    labels = torch.randint(0, policy.num_classes, (rows,))
    for p in policy.parameters():  # the gradients exist before the step, as in training after step 1
        p.grad = torch.zeros_like(p)

    def logps(model):
        if variant.startswith("fused"):
            return model(tokens, labels, token_logps=True).sum(-1)
        return token_logps(model(tokens, labels), tokens).sum(-1)

    def step() -> torch.Tensor:
        with torch.no_grad():
            ref = logps(reference)
        logp = logps(policy)
        r_pos, r_neg = (logp - ref).chunk(2)
        loss = -(torch.nn.functional.logsigmoid(0.02 * r_pos) + torch.nn.functional.logsigmoid(-0.02 * r_neg)).mean()
        loss.backward()
        return loss

    if measure == "tensors":
        return {"tensor_mib": tensor_peak_mib(step)}
    before = rss_mib()
    start = time.perf_counter()
    loss = step()
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"variant": variant, "activation_mib": peak - before, "seconds": seconds,
            "params_m": sum(p.numel() for p in policy.parameters()) / 1e6, "loss": loss.item()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8, help="micro-batch (images); 2× rows go through each model")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--quick", action="store_true", help="a 4-layer 256-wide LlamaGen with 256 tokens")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--measure", choices=("rss", "tensors"), default="rss", help=argparse.SUPPRESS)
    args = parser.parse_args()
    backbone, config = "llamagen-B", {}
    if args.quick:
        backbone, config = "llamagen", {"dim": 256, "n_layer": 4, "n_head": 4, "vocab_size": 16384,
                                        "block_size": 256, "num_classes": 10}
    if args.child:
        print(json.dumps(one(args.child, backbone, config, args.batch, args.threads, args.measure)))
        return
    results = {}
    for variant in VARIANTS:
        results[variant] = {}
        for measure in ("rss", "tensors"):
            out = subprocess.run([sys.executable, __file__, "--child", variant, "--batch", str(args.batch),
                                  "--threads", str(args.threads), "--measure", measure,
                                  *(["--quick"] if args.quick else [])],
                                 capture_output=True, text=True, check=True)
            results[variant].update(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"  ({variant}: {json.dumps(results[variant])})", flush=True)  # kept if a later variant fails
    print(f"CCA step log-probs, {backbone} ({results['fused']['params_m']:.0f}M), micro-batch {args.batch} "
          f"({2 * args.batch} rows through policy and reference), fp32, CPU, {args.threads} threads")
    for r in results.values():
        print(f"  {r['variant']:>25}: activation peak RSS {r['activation_mib']:7.0f} MiB, live tensors "
              f"{r['tensor_mib']:7.0f} MiB, step {r['seconds']:6.1f} s, loss {r['loss']:.6f}")
    baseline = results["full logits"]
    for suffix in MODES:
        full, fused = results["full logits" + suffix], results["fused" + suffix]
        setting = {False: "false", True: "true", "selective": '"selective"'}[MODES[suffix]]
        print(f"  fused, activation_checkpointing = {setting} (step time ×{fused['seconds'] / baseline['seconds']:.2f} "
              f"of full logits without checkpointing):")
        for key, what in (("activation_mib", "RSS"), ("tensor_mib", "live tensors")):
            ratio = baseline[key] / max(fused[key], 1e-9)
            verdict = "target met" if ratio >= 2 else "TARGET MISSED"
            print(f"    {what:>12}: ×{ratio:.2f} less than full logits without checkpointing (target ≥ ×2: {verdict}); "
                  f"the fusion alone at this setting ×{full[key] / max(fused[key], 1e-9):.2f}")


if __name__ == "__main__":
    main()
