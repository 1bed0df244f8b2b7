"""alignkit against the official code, side by side in one run: the CCA training step and guided
sampling of LlamaGen and VAR, as ratios (official time ÷ alignkit time; above 1 is faster), plus
alignkit's own guidance-free ÷ guided speed.

The official code is read at run time from checkouts you give by path (nothing is copied into
alignkit, nothing is downloaded): FoundationVision/LlamaGen (``autoregressive/models``) and
FoundationVision/VAR (``models``). VAR's ``models/var.py`` imports ``huggingface_hub`` only for a hub
mixin; when it is not installed a stand-in class is registered under that name.

- **The models**: the official classes, built and initialised by their own code at the sizes below
  (LlamaGen's zero-initialised output layer gets N(0, 0.02) so that logits are not all 0), saved,
  and loaded into alignkit from that file, so both sides hold the same weights. Before timing, the
  two training forwards must agree within 1e-4.
- **The CCA step** (B images: policy and reference on the 2B rows ``[c; c⁻]``, backward, clipping,
  AdamW): official, the operations of ``LlamaGen_finetune.py`` / ``VAR_CCA_trainer.train_step`` of
  thu-ml/CCA (roll negatives, 10% null rows, reference forward under no_grad, full-logit
  log-softmax and gather, the CE losses the official forwards/loggers compute, clip 1.0 / 2.0);
  alignkit, its trainer's own ``_train_step`` on the same batch, eager (the default) and with
  ``distributed.compile = true`` (a second trainer; compiled before timing; ``--no-compile`` skips
  it). Dropout off on both sides.
- **The step's ceiling**: the share of each side's step spent in matrix products and attention
  (``PRODUCTS``, the profiler's self time of one step, median of 3), and official step time ÷
  alignkit's seconds in them: the ratio a step that did nothing else would reach. Both sides run
  the same products on the same shapes, so a ratio target above this ceiling needs fewer of them.
- **Sampling**: official ``autoregressive.models.generate.generate`` (LlamaGen, cfg_scale = 1 + s)
  and ``VAR.autoregressive_infer_cfg`` (VAR, cfg = s, top-k 900, top-p 0.96, decoded to images)
  against ``PolicyModel.generate`` / ``generate_images`` with the same settings, with each of
  alignkit's token draws: ``official`` (the default; the official seeded runs bit for bit) and
  ``inverse_cdf`` (the same distribution, other tokens).

Runs alternate (official, alignkit, official, …) so that a change in machine load hits both; the
median of each is reported. On a shared 2-core machine one ratio moves by about ±15% between runs.

Both sides share the process's memory allocator. With glibc's defaults (the default here) large
freed blocks go back to the system and are page-faulted in again at the next allocation; the
official step, which allocates full B×L×V logits and their copies, pays most of that.
``--keep-freed-memory`` applies the setting the ``alignkit`` command uses (``alignkit.malloc``) to
both sides, which removes that cost from both.

    python benchmarks/official_speed.py --llamagen ~/src/LlamaGen --var ~/src/VAR
    python benchmarks/official_speed.py --llamagen ~/src/LlamaGen --var ~/src/VAR --quick
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import alignkit
from alignkit.engine.trainer import Trainer
from alignkit.malloc import keep_freed_memory
from alignkit.recipe import load_recipe

SIZES = {  # the sizes of issue 16's table
    "llamagen": {"dim": 256, "n_layer": 4, "n_head": 4, "vocab_size": 16384, "block_size": 64, "num_classes": 10},
    # num_classes 1000: VAR_CCA_trainer hard-codes the null class 1000
    "var": {"depth": 4, "patch_nums": (1, 2, 3, 4, 6, 8), "V": 4096, "Cvae": 32, "ch": 32, "num_classes": 1000},
}
GUIDANCE = {"llamagen": 3.0, "var": 2.0}
BETA, LAMBDA, UNCOND = 0.02, 10.0, 0.1


# ------------------------------------------------------------------------------ the official code


@contextlib.contextmanager
def official(root: Path, packages: tuple[str, ...]):
    """Import from ``root`` (its top-level ``packages`` shadow nothing of alignkit's), then forget them."""
    if not root.is_dir():
        sys.exit(f"error: {root} is not a folder (give a checkout of the official repository)")
    sys.path.insert(0, str(root))
    try:
        yield
    finally:
        sys.path.remove(str(root))
        for name in [n for n in sys.modules if n.split(".")[0] in packages]:
            del sys.modules[name]


def official_llamagen(root: Path):
    with official(root, ("autoregressive", "utils")):
        from autoregressive.models.generate import generate
        from autoregressive.models.gpt import ModelArgs, Transformer
    torch.manual_seed(0)
    size = SIZES["llamagen"]
    # class_dropout_prob 1e-5 as LlamaGen_finetune.py builds it: a null row, labels (almost) never dropped
    model = Transformer(ModelArgs(**size, class_dropout_prob=0.00001, token_dropout_p=0.0, attn_dropout_p=0.0,
                                  resid_dropout_p=0.0, ffn_dropout_p=0.0, drop_path_rate=0.0))
    torch.nn.init.normal_(model.output.weight, std=0.02)
    return model, generate


def official_var(root: Path):
    if "huggingface_hub" not in sys.modules:
        try:
            import huggingface_hub  # noqa: F401
        except ImportError:
            stand_in = types.ModuleType("huggingface_hub")
            stand_in.PyTorchModelHubMixin = type("PyTorchModelHubMixin", (), {})
            sys.modules["huggingface_hub"] = stand_in
    with official(root, ("models", "dist", "utils")):
        from models.var import VAR
        from models.vqvae import VQVAE
    torch.manual_seed(0)
    s = SIZES["var"]
    vae = VQVAE(vocab_size=s["V"], z_channels=s["Cvae"], ch=s["ch"], test_mode=True, share_quant_resi=4,
                v_patch_nums=s["patch_nums"])
    var = VAR(vae_local=vae, num_classes=s["num_classes"], depth=s["depth"], embed_dim=64 * s["depth"],
              num_heads=s["depth"], drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=0.0, norm_eps=1e-6,
              shared_aln=False, cond_drop_rate=0.0, attn_l2_norm=True, patch_nums=s["patch_nums"],
              flash_if_available=True, fused_if_available=True)
    var.init_weights(init_adaln=0.5, init_adaln_gamma=1e-5, init_head=0.02, init_std=-1)
    return var, vae


# ------------------------------------------------------------------------------ alignkit's side

RECIPE = """
[model]
{model}
checkpoint = "{checkpoint}"
{tokenizer}
[data]
name = "codes-npz"
path = "{codes}"

[objective]
name = "cca"
beta = {beta}
lambda_ = {lam}

[sampler]
uncond_ratio = {uncond}

[optim]
lr = 1e-5
betas = [0.9, 0.95]
weight_decay = 0.05
max_grad_norm = {clip}
batch_size = {batch}
max_steps = 1000

[distributed]
precision = "fp32"
compile = {compile}

[output]
dir = "{out}"
save_every = 100000
log_every = 100000
export = []
"""


def alignkit_trainer(backbone: str, folder: Path, batch: int, tokens_NL: np.ndarray, labels_N: np.ndarray,
                     compile: bool = False) -> Trainer:
    if backbone == "llamagen":
        model = 'backbone = "llamagen"\n' + "\n".join(f"{k} = {v}" for k, v in SIZES["llamagen"].items())
        model += "\n" + "\n".join(f"{k} = 0.0" for k in ("token_dropout_p", "attn_dropout_p", "resid_dropout_p",
                                                        "ffn_dropout_p", "drop_path_rate"))
        tokenizer, clip = "", 1.0
    else:
        s = SIZES["var"]
        model = (f'backbone = "var"\ndepth = {s["depth"]}\nembed_dim = {64 * s["depth"]}\nnum_heads = {s["depth"]}\n'
                 f'num_classes = {s["num_classes"]}\nV = {s["V"]}\nCvae = {s["Cvae"]}\nch = {s["ch"]}\n'
                 f'patch_nums = {list(s["patch_nums"])}\ndrop_path_rate = 0.0\n')
        tokenizer = (f'[tokenizer]\nname = "var-vqvae"\ncheckpoint = "{folder / "vae.pth"}"\nvocab_size = {s["V"]}\n'
                     f'z_channels = {s["Cvae"]}\nch = {s["ch"]}\nv_patch_nums = {list(s["patch_nums"])}\n')
        clip = 2.0
    np.savez(folder / "codes.npz", tokens=tokens_NL, labels=labels_N)
    name = "compiled" if compile else "eager"
    (folder / f"{name}.toml").write_text(RECIPE.format(
        model=model, checkpoint=folder / "policy.pth", tokenizer=tokenizer, codes=folder / "codes.npz", beta=BETA,
        lam=LAMBDA, uncond=UNCOND, clip=clip, batch=batch, out=folder / name, compile=str(compile).lower()))
    trainer = Trainer(load_recipe(folder / f"{name}.toml"), show_progress=False)
    trainer._build()
    return trainer


# ------------------------------------------------------------------------------ the official CCA steps


def cca_loss(gap_pos_B: torch.Tensor, gap_neg_B: torch.Tensor, null_B: torch.Tensor,
             same_B: torch.Tensor) -> torch.Tensor:
    """The official CCA loss with null rows (thu-ml/CCA), as both official trainers compute it."""
    neg_weight = null_B | same_B
    mixed_weight = torch.ones_like(neg_weight, dtype=gap_pos_B.dtype) * LAMBDA
    mixed_weight[neg_weight] = 1.0
    loss = -F.logsigmoid(gap_pos_B * BETA).mean() - (
        mixed_weight * F.logsigmoid(((neg_weight.float() * 2 - 1) * gap_neg_B) * BETA)).mean()
    return loss / max(LAMBDA, 1.0)


def gathered(logits_BLV: torch.Tensor, z_BL: torch.Tensor) -> torch.Tensor:
    return torch.gather(logits_BLV.log_softmax(-1), dim=2, index=z_BL.unsqueeze(2)).squeeze(2).sum(-1)


def official_llamagen_step(model, ref, opt, z_BL: torch.Tensor, c_B: torch.Tensor, num_classes: int) -> None:
    c_B = c_B.clone()
    c_neg_B = torch.roll(c_B, shifts=-1, dims=0)
    null_B = torch.rand(c_B.shape[0]) < UNCOND
    c_neg_B[null_B], c_B[null_B] = num_classes, num_classes
    all_c, all_z = torch.cat([c_B, c_neg_B]), torch.cat([z_BL, z_BL])
    with torch.no_grad():
        ref_all, _ = ref(cond_idx=all_c, idx=all_z[:, :-1], targets=all_z)
    all_logits, _ = model(cond_idx=all_c, idx=all_z[:, :-1], targets=all_z)
    B = z_BL.shape[0]
    gap_pos = gathered(all_logits[:B], z_BL) - gathered(ref_all[:B], z_BL)
    gap_neg = gathered(all_logits[B:], z_BL) - gathered(ref_all[B:], z_BL)
    loss = cca_loss(gap_pos, gap_neg, null_B, c_neg_B == c_B)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)


def official_var_step(var, ref, vae, opt, z_BL: torch.Tensor, label_B: torch.Tensor) -> None:
    s = SIZES["var"]
    gt_idx_Bl = list(z_BL.split([pn * pn for pn in s["patch_nums"]], dim=1))
    gt_BL = torch.cat(gt_idx_Bl, dim=1)
    x_BLCv = vae.quantize.idxBl_to_var_input(gt_idx_Bl)
    shuffle_B = torch.roll(label_B, shifts=-1, dims=0)
    null_B = torch.rand(label_B.shape[0]) < UNCOND
    label_B, shuffle_B = torch.where(null_B, 1000, label_B), torch.where(null_B, 1000, shuffle_B)
    all_label, all_x = torch.cat([label_B, shuffle_B]), torch.cat([x_BLCv, x_BLCv])
    ref.train()
    all_logits = var(all_label, all_x)
    with torch.no_grad():
        ref_all = ref(all_label, all_x)
    B, V = z_BL.shape[0], s["V"]
    gap_pos = gathered(all_logits[:B], gt_BL) - gathered(ref_all[:B], gt_BL)
    gap_neg = gathered(all_logits[B:], gt_BL) - gathered(ref_all[B:], gt_BL)
    loss = cca_loss(gap_pos, gap_neg, null_B, shuffle_B == label_B)
    with torch.no_grad():  # the trainer's logged CE losses, computed every step
        for logits in (all_logits[:B], all_logits[B:], ref_all[:B], ref_all[B:]):
            F.cross_entropy(logits.reshape(-1, V), gt_BL.reshape(-1), reduction="none").view(B, -1).mean()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(var.parameters(), 2.0)
    opt.step()
    opt.zero_grad(set_to_none=True)


def adamw(model) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=1e-5, betas=(0.9, 0.95), weight_decay=0.05)


# ------------------------------------------------------------------------------ measuring


def alternate(runs: dict[str, callable], repeats: int) -> dict[str, float]:
    """Median seconds of each callable, run in turn ``repeats`` times after one warm-up each."""
    for fn in runs.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


PRODUCTS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::_scaled_dot_product_flash_attention_for_cpu",
            "aten::_scaled_dot_product_flash_attention_for_cpu_backward")
"""The kernels both sides must run for the same step: matrix products and attention."""


def product_seconds(fn: callable) -> float:
    """Seconds one call of ``fn`` spends inside ``PRODUCTS`` (their self time, under the profiler)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return sum(e.self_cpu_time_total for e in prof.key_averages() if e.key in PRODUCTS) / 1e6


DRAWS = ("official", "inverse_cdf")
"""alignkit's token draws: the default reproduces the official seeded runs; ``inverse_cdf`` draws from
the same distribution with one random number per token (``alignkit.sample.tokens``)."""


def alignkit_steps(folder: Path, backbone: str, trainer: Trainer, tokens: np.ndarray, labels: np.ndarray,
                   compile: bool) -> dict[str, callable]:
    """alignkit's CCA step, eager (the default) and, with ``compile``, under ``distributed.compile``
    (a second trainer from the same weights; compiled before timing)."""
    z, c = torch.from_numpy(tokens), torch.from_numpy(labels)
    batches = iter(lambda: (z, c), None)
    steps = {"alignkit": lambda: trainer._train_step(batches)}
    if compile:
        compiled = alignkit_trainer(backbone, folder, len(labels), tokens, labels, compile=True)
        compiled.policy.train()
        if not isinstance(compiled.backend.forward, torch._dynamo.eval_frame.OptimizedModule):
            print("  (no compiled step: torch.compile is not available here)")
            return steps
        for _ in range(3):  # compiling happens here, not in the timed runs
            compiled._train_step(batches)
        steps["alignkit compiled"] = lambda: compiled._train_step(batches)
    return steps


def step_ratios(steps: dict[str, callable], repeats: int) -> dict[str, float]:
    """The step ratios, and the ceiling the step's matrix products and attention leave: official step
    time ÷ the seconds alignkit's step spends in ``PRODUCTS`` (what a step with no other cost would take)."""
    step = alternate(steps, repeats)
    ratios = {"CCA step ×": step["official"] / step["alignkit"]}
    if "alignkit compiled" in step:
        ratios["CCA step ×, compile = true"] = step["official"] / step["alignkit compiled"]
    products = {name: statistics.median(product_seconds(steps[name]) for _ in range(3))
                for name in ("official", "alignkit")}
    ratios["CCA step: products' share, official"] = products["official"] / step["official"]
    ratios["CCA step: products' share, alignkit"] = products["alignkit"] / step["alignkit"]
    ratios["CCA step: ceiling × (official ÷ alignkit's products)"] = step["official"] / products["alignkit"]
    return ratios


def sampling_ratios(sample: dict[str, float], guidance: float) -> dict[str, float]:
    ratios = {}
    for draw in DRAWS:
        ratios[f"guided sampling (s {guidance:g}) ×, {draw} draw"] = sample["official"] / sample[f"{draw} guided"]
    for draw in DRAWS:
        ratios[f"alignkit guidance-free ÷ guided, {draw} draw"] = (sample[f"{draw} guided"]
                                                                   / sample[f"{draw} guidance-free"])
    return ratios


def llamagen(root: Path, batch: int, repeats: int, compile: bool) -> dict[str, float]:
    model, generate = official_llamagen(root)
    size, results = SIZES["llamagen"], {}
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, size["vocab_size"], (batch, size["block_size"]))
    labels = rng.integers(0, size["num_classes"], batch)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        torch.save({"model": model.state_dict()}, folder / "policy.pth")
        trainer = alignkit_trainer("llamagen", folder, batch, tokens, labels)
        policy = trainer.policy
        z, c = torch.from_numpy(tokens), torch.from_numpy(labels)
        model.train()
        policy.train()
        with torch.no_grad():
            theirs, _ = model(cond_idx=c, idx=z[:, :-1], targets=z)
            error = (policy(z, c) - theirs).abs().max().item()
        assert error < 1e-4, f"LlamaGen logits differ from the official ones by {error}"
        results["logits max |Δ|"] = error
        ref, opt = copy.deepcopy(model).requires_grad_(False), adamw(model)
        steps = {"official": lambda: official_llamagen_step(model, ref, opt, z, c, size["num_classes"]),
                 **alignkit_steps(folder, "llamagen", trainer, tokens, labels, compile)}
        results.update(step_ratios(steps, repeats))
        model.eval()
        s = GUIDANCE["llamagen"]
        gen = torch.Generator().manual_seed(0)
        sample = alternate({
            "official": lambda: generate(model, c, size["block_size"], cfg_scale=1.0 + s, temperature=1.0, top_k=0,
                                         top_p=1.0, sample_logits=True),
            **{f"{draw} {name}": (lambda g=g, draw=draw: policy.generate(c, guidance=g, generator=gen, sampler=draw))
               for draw in DRAWS for name, g in (("guided", s), ("guidance-free", 0.0))}}, repeats)
        results.update(sampling_ratios(sample, s))
        trainer.backend.close()
    return results


def var(root: Path, batch: int, repeats: int, compile: bool) -> dict[str, float]:
    var_model, vae = official_var(root)
    s, results = SIZES["var"], {}
    L = sum(pn * pn for pn in s["patch_nums"])
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, s["V"], (batch, L))
    labels = rng.integers(0, 10, batch)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        torch.save(var_model.state_dict(), folder / "policy.pth")
        torch.save(vae.state_dict(), folder / "vae.pth")
        trainer = alignkit_trainer("var", folder, batch, tokens, labels)
        policy = trainer.policy
        z, c = torch.from_numpy(tokens), torch.from_numpy(labels)
        var_model.train()
        policy.train()
        with torch.no_grad():
            x_BLCv = vae.quantize.idxBl_to_var_input(list(z.split([pn * pn for pn in s["patch_nums"]], dim=1)))
            error = (policy(z, c) - var_model(c, x_BLCv)).abs().max().item()
        assert error < 1e-4, f"VAR logits differ from the official ones by {error}"
        results["logits max |Δ|"] = error
        ref, opt = copy.deepcopy(var_model).requires_grad_(False), adamw(var_model)
        steps = {"official": lambda: official_var_step(var_model, ref, vae, opt, z, c),
                 **alignkit_steps(folder, "var", trainer, tokens, labels, compile)}
        results.update(step_ratios(steps, repeats))
        var_model.eval()
        g = GUIDANCE["var"]
        tokenizer = trainer.tokenizer
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            sample = alternate({
                "official": lambda: var_model.autoregressive_infer_cfg(batch, c, g_seed=0, cfg=g, top_k=900, top_p=0.96),
                **{f"{draw} {name}": (lambda s=s, draw=draw: policy.generate_images(
                    c, tokenizer, guidance=s, generator=gen, top_k=900, top_p=0.96, sampler=draw))
                   for draw in DRAWS for name, s in (("guided", g), ("guidance-free", 0.0))}}, repeats)
        results.update(sampling_ratios(sample, g))
        trainer.backend.close()
    return results


TARGETS = {"CCA step ×": 1.3, "guided sampling": 1.2, "alignkit guidance-free ÷ guided": 1.9}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--llamagen", type=Path, help="checkout of FoundationVision/LlamaGen")
    parser.add_argument("--var", type=Path, help="checkout of FoundationVision/VAR")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="batch 4, 2 repeats")
    parser.add_argument("--no-compile", action="store_true", help="skip the compiled step (compiling takes a minute)")
    parser.add_argument("--keep-freed-memory", action="store_true",
                        help="raise glibc's malloc thresholds for this process first, as the alignkit command does "
                             "(alignkit.malloc), so that neither side pays page faults for re-allocated memory")
    args = parser.parse_args()
    if not (args.llamagen or args.var):
        parser.error("give --llamagen and/or --var")
    if args.quick:
        args.batch, args.repeats = 4, 2
    torch.set_num_threads(args.threads)
    if args.keep_freed_memory and not keep_freed_memory():
        sys.exit("error: --keep-freed-memory: not glibc, or MALLOC_MMAP_THRESHOLD_/MALLOC_TRIM_THRESHOLD_ already set")
    alignkit.get_plugins()
    print(f"alignkit ÷ official (official time / alignkit time; > 1 is faster), batch {args.batch}, fp32, "
          f"{args.threads} threads, median of {args.repeats} alternating runs, malloc "
          f"{'keeping freed memory (both sides)' if args.keep_freed_memory else 'as the environment sets it'}")
    for name, fn, root in (("LlamaGen", llamagen, args.llamagen), ("VAR", var, args.var)):
        if root is None:
            continue
        for figure, value in fn(root.expanduser(), args.batch, args.repeats, not args.no_compile).items():
            target = next((t for key, t in TARGETS.items() if figure.startswith(key)), None)
            verdict = "" if target is None else f"   target ≥ {target:g}: {'met' if value >= target else 'MISSED'}"
            print(f"  {name:8} {figure:52} {value:.3g}{verdict}")


if __name__ == "__main__":
    main()
