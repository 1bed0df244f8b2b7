"""The memory planner: DeepSpeed's estimators reproduced, its own terms checked, the shipped recipes'
settings, and ``alignkit plan``."""

import io
import json
import re
from contextlib import redirect_stdout
from pathlib import Path

import pytest
import torch
from deepspeed.runtime.zero.stage3 import (estimate_zero3_model_states_mem_needs,
                                           estimate_zero3_model_states_mem_needs_all_cold)
from deepspeed.runtime.zero.stage3 import model_to_params as deepspeed_zero3_params
from deepspeed.runtime.zero.stage_1_and_2 import (estimate_zero2_model_states_mem_needs,
                                                  estimate_zero2_model_states_mem_needs_all_cold)
from torch.autograd.graph import saved_tensors_hooks
from typer.testing import CliRunner

import alignkit
from alignkit.cli.main import app
from alignkit.errors import AlignkitError
from alignkit_backends.memory import (GiB, PlannedModel, Setting, Workload, activation_bytes, memory, model_shape,
                                      model_states)
from alignkit_backends.plan import plan
from alignkit.recipe import load_recipe

from conftest import MINIMAL_RECIPE

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
SIZES = {"llamagen-B": "llamagen_b_cca", "llamagen-L": "llamagen_l_cca", "llamagen-XL": "llamagen_xl_cca",
         "llamagen-XXL": "llamagen_xxl_cca", "llamagen-3B": "llamagen_3b_cca", "var-d16": "var_d16_cca",
         "var-d30": "var_d30_cca"}
CLUSTERS = [(1, 1), (8, 8), (16, 16), (16, 8)]  # (GPUs, GPUs per node)


def recipe(name: str, *overrides: str):
    return load_recipe(RECIPES / f"{name}.toml", list(overrides), check_paths=False)


@pytest.fixture(scope="module")
def shapes() -> dict[str, PlannedModel]:
    return {size: model_shape(recipe(name)) for size, name in SIZES.items()}


def work(shape: PlannedModel, gpus: int, per_node: int, precision: str = "bf16") -> Workload:
    return Workload(shape=shape, rows=4, reference=True, precision=precision, gpus=gpus, gpus_per_node=per_node)


def gpu_states(setting: Setting, w: Workload, **kwargs) -> tuple[int, int]:
    params, grads, optimizer, cpu = model_states(setting, w, **kwargs)
    return params + grads + optimizer, cpu


# ------------------------------------------------------------------------------ DeepSpeed's estimators


def test_parameter_counts_are_the_backbones(shapes):
    assert shapes["llamagen-3B"].params == 3_096_659_200 and shapes["var-d30"].params == 2_010_020_356
    assert all(s.trainable == s.params for s in shapes.values())
    assert shapes["llamagen-3B"].largest_layer == 16384 * 3200  # the token embedding (= the output head)


def test_largest_layer_is_counted_as_deepspeed_counts_it(tmp_path):
    model = alignkit.load_policy("llamagen", config={"dim": 64, "n_layer": 2, "n_head": 4, "vocab_size": 300,
                                                      "block_size": 16, "num_classes": 10, "multiple_of": 32})
    path = tmp_path / "tiny.toml"
    path.write_text('[model]\nbackbone = "llamagen"\ndim = 64\nn_layer = 2\nn_head = 4\nvocab_size = 300\n'
                    'block_size = 16\nnum_classes = 10\nmultiple_of = 32\n[objective]\nname = "cca"\n')
    shape = model_shape(load_recipe(path))
    assert (shape.params, shape.largest_layer) == deepspeed_zero3_params(model)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("gpus,per_node", CLUSTERS)
def test_zero2_model_states_are_deepspeeds(shapes, size, gpus, per_node):
    shape = shapes[size]
    for offload in (False, True):
        cpu, gpu = estimate_zero2_model_states_mem_needs(shape.params, per_node, gpus // per_node, offload, 1.5)
        ours_gpu, ours_cpu = gpu_states(Setting(2, offload), work(shape, gpus, per_node))
        assert abs(ours_gpu - gpu) <= 2
        if gpus == per_node:  # DeepSpeed's ZeRO-2 offload figure uses all GPUs, not those of one node
            assert abs(ours_cpu - cpu) <= 1


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("gpus,per_node", CLUSTERS)
def test_zero3_model_states_are_deepspeeds(shapes, size, gpus, per_node):
    shape = shapes[size]
    for offload, offload_params in ((False, False), (True, False), (True, True)):
        for zero_init in (False, True):
            cpu, gpu, _ = estimate_zero3_model_states_mem_needs(shape.params, shape.largest_layer, per_node,
                                                                gpus // per_node, offload, offload_params, zero_init,
                                                                1.5)
            ours_gpu, ours_cpu = gpu_states(Setting(3, offload, offload_params), work(shape, gpus, per_node),
                                            zero_init=zero_init)
            assert abs(ours_gpu - gpu) <= 2 and abs(ours_cpu - cpu) <= 1


def printed(estimator, *args) -> list[tuple[float, float, dict[str, bool]]]:
    """The (CPU GiB, GPU GiB, options) lines an ``..._all_cold`` estimator prints; an option is on
    unless it reads 'none' or 0 (DeepSpeed prints 'offload_param=OffloadDeviceEnum.cpu', 'zero_init=1')."""
    out = io.StringIO()
    with redirect_stdout(out):
        estimator(*args)
    lines = re.findall(r"^\s*([\d.]+)GB \|\s*([\d.]+)GB \| (.*)$", out.getvalue(), re.M)
    return [(float(cpu), float(gpu), {k.strip(): v.strip() not in ("none", "0") for k, v in
                                      (item.split("=") for item in options.split(","))})
            for cpu, gpu, options in lines]


@pytest.mark.parametrize("size", ["llamagen-B", "llamagen-3B", "var-d30"])
@pytest.mark.parametrize("gpus", [1, 8, 16])
def test_the_printed_all_cold_tables_match(shapes, size, gpus):
    shape, w = shapes[size], work(shapes[size], gpus, gpus)
    zero2 = printed(estimate_zero2_model_states_mem_needs_all_cold, shape.params, gpus, 1)
    assert len(zero2) == 2
    for cpu, gpu, options in zero2:
        ours_gpu, ours_cpu = gpu_states(Setting(2, options["offload_optimizer"]), w)
        assert (ours_cpu / GiB, ours_gpu / GiB) == pytest.approx((cpu, gpu), abs=0.0051)
    zero3 = printed(estimate_zero3_model_states_mem_needs_all_cold, shape.params, shape.largest_layer, gpus, 1)
    assert len(zero3) == 6
    for cpu, gpu, options in zero3:
        setting = Setting(3, options["offload_optimizer"], options["offload_param"])
        ours_gpu, ours_cpu = gpu_states(setting, w, zero_init=options["zero_init"])
        assert (ours_cpu / GiB, ours_gpu / GiB) == pytest.approx((cpu, gpu), abs=0.0051)


# ------------------------------------------------------------------------------ the planner's own terms


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("gpus", [1, 2, 8, 16])
def test_model_states_per_gpu_do_not_grow_with_the_stage(shapes, size, gpus):
    w = work(shapes[size], gpus, min(gpus, 8))
    states = [memory(Setting(stage), w).model_states for stage in range(4)]
    assert states == sorted(states, reverse=True)
    if gpus > 1:
        assert states[0] > states[1] > states[2] > states[3]


@pytest.mark.parametrize("size", ["llamagen-B", "llamagen-3B", "var-d30"])
@pytest.mark.parametrize("stage", [1, 2, 3])
def test_offload_moves_the_optimizer_states_to_the_cpu(shapes, size, stage):
    shape = shapes[size]
    for gpus in (2, 8):
        w = work(shape, gpus, gpus)
        kept, offloaded = memory(Setting(stage), w), memory(Setting(stage, True), w)
        assert kept.optimizer == 12 * shape.params // gpus and offloaded.optimizer == 0
        assert offloaded.model_states < kept.model_states
        assert offloaded.cpu >= 1.5 * 16 * shape.params  # fp32 master, gradient, m and v of the node's GPUs
    two = work(shape, 2, 2)
    assert memory(Setting(stage, True), two).cpu > memory(Setting(stage), two).cpu
    params_too = memory(Setting(3, True, True), two)
    optimizer_only = memory(Setting(3, True), two)
    assert params_too.params < optimizer_only.params and params_too.cpu > optimizer_only.cpu


def test_fp32_keeps_no_16_bit_copies(shapes):
    shape = shapes["llamagen-B"]
    bf16, fp32 = (memory(Setting(3), work(shape, 2, 2, precision)) for precision in ("bf16", "fp32"))
    assert fp32.params == 2 * bf16.params and fp32.reference == 2 * bf16.reference
    assert fp32.optimizer == bf16.optimizer  # DeepSpeed clones an fp32 partition as the master in both modes


@pytest.mark.parametrize("name", ["llamagen_3b_cca", "var_d30_cca"])
def test_activation_checkpointing_lowers_activations(name):
    plain = plan(recipe(name), 8, 80)
    recomputed = plan(recipe(name, "model.activation_checkpointing=true"), 8, 80)
    selective = plan(recipe(name, "model.activation_checkpointing=selective"), 8, 80)
    assert recomputed.shape.checkpointing is True and not plain.shape.checkpointing
    assert selective.shape.checkpointing == "selective"
    ratio = recomputed.rows[0].memory.activations / plain.rows[0].memory.activations
    assert ratio < 0.3
    assert ratio < selective.rows[0].memory.activations / plain.rows[0].memory.activations < 0.75


def test_activations_grow_with_the_micro_batch_and_count_the_reference_once(shapes):
    shape = shapes["llamagen-3B"]
    assert shape.fused_head  # the logits exist one chunk at a time: a fixed part plus a part per row
    from alignkit_backends.memory import KEEP_ELEMENTS

    first = KEEP_ELEMENTS // (shape.shape.seq_len * shape.shape.vocab) + 1  # past the kept probabilities
    step = activation_bytes(shape, first + 4, "bf16") - activation_bytes(shape, first, "bf16")
    assert activation_bytes(shape, first + 8, "bf16") - activation_bytes(shape, first + 4, "bf16") == step > 0
    assert activation_bytes(shape, 4, "bf16", reference=False) == activation_bytes(shape, 4, "bf16")
    assert activation_bytes(shape, 4, "fp32") > 1.7 * activation_bytes(shape, 4, "bf16")


def test_fused_log_probs_shrink_the_planned_activations(shapes):
    """LlamaGen-B at 256 tokens and V = 16,384: the head's fp32 logits, log-softmax and gradients
    are 12V bytes a position unfused, against its 12 blocks' saved activations."""
    import dataclasses

    shape = shapes["llamagen-B"]
    unfused = dataclasses.replace(shape, fused_head=False)
    assert activation_bytes(unfused, 8, "bf16") > 1.2 * activation_bytes(shape, 8, "bf16")
    assert activation_bytes(unfused, 8, "fp32") > 1.05 * activation_bytes(shape, 8, "fp32")  # the blocks weigh more


def test_planned_activations_count_the_kept_probabilities(shapes, monkeypatch):
    """Up to ``KEEP_ELEMENTS`` the fused head keeps the policy's fp32 softmax for the backward: 4V
    bytes a position that a recomputing head does not hold."""
    from alignkit_backends import memory as planner

    model = shapes["llamagen-B"]
    rows, L, V = 4, model.shape.seq_len, model.shape.vocab
    assert rows * L * V <= planner.KEEP_ELEMENTS
    kept = activation_bytes(model, rows, "bf16")
    monkeypatch.setattr(planner, "KEEP_ELEMENTS", rows * L * V - 1)
    assert kept - activation_bytes(model, rows, "bf16") == rows * L * 4 * V


def saved_bytes_per_layer(build, dtype: torch.dtype) -> tuple[float, int]:
    """Bytes the blocks save for backward per row and position, measured (a 3-layer minus a 2-layer
    model, storages counted once, parameters excluded), and the model's sequence length."""
    totals = []
    for layers in (2, 3):
        model = build(layers).to(dtype).train()
        params = {p.untyped_storage().data_ptr() for p in model.parameters()}
        storages: dict[int, int] = {}

        def pack(t):
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        rows = 4
        with saved_tensors_hooks(pack, lambda t: t):
            model(torch.randint(0, model.vocab_size, (rows, model.seq_len)), torch.randint(0, 10, (rows,)))
        totals.append(sum(n for ptr, n in storages.items() if ptr not in params))
    return (totals[1] - totals[0]) / (rows * model.seq_len), model.seq_len


def layered(family: str, checkpointing=False):
    """A 256-wide backbone of ``family`` with V = 512, as a function of its number of blocks."""
    def build(layers):
        if family == "llamagen":
            return alignkit.load_policy("llamagen", config={
                "dim": 256, "n_layer": layers, "n_head": 4, "vocab_size": 512, "block_size": 64, "num_classes": 10,
                "multiple_of": 64, "activation_checkpointing": checkpointing})
        return alignkit.load_policy("var", config={"depth": layers, "embed_dim": 256, "num_heads": 4, "num_classes": 10,
                                                    "V": 512, "Cvae": 8, "ch": 32,
                                                    "activation_checkpointing": checkpointing})
    return build


@pytest.mark.parametrize("family", ["llamagen", "var"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_the_layer_formula_matches_the_tensors_saved_for_backward(family, dtype):
    build = layered(family)
    measured, seq_len = saved_bytes_per_layer(build, dtype)
    shape = build(1).shape()  # what the backbone says of itself, as the planner reads it
    assert shape.seq_len == seq_len and shape.width == 256 and shape.vocab == 512
    predicted = shape.block_activation_bytes(2 if dtype == torch.bfloat16 else 4)
    assert predicted == pytest.approx(measured, rel=0.02)


def kept_bytes_per_layer(build, dtype: torch.dtype) -> float:
    """Bytes still allocated after the forward pass per row, position and block, measured by the
    profiler's allocation records (a 3-layer minus a 2-layer model): under checkpointing autograd's
    saved tensors are not all there is, so count the memory itself."""
    from torch.profiler import ProfilerActivity, profile

    totals = []
    for layers in (2, 3):
        torch.manual_seed(0)
        model = build(layers).to(dtype).train()
        rows = 16  # enough that the per-block RNG state a checkpoint keeps (5 KB) is under 1%
        tokens, labels = torch.randint(0, model.vocab_size, (rows, model.seq_len)), torch.randint(0, 10, (rows,))
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            logits = model(tokens, labels)
        totals.append(sum(event.self_cpu_memory_usage for event in prof.key_averages()))
        del logits
    return (totals[1] - totals[0]) / (rows * model.seq_len)


@pytest.mark.parametrize("mode", [False, True, "selective"])
@pytest.mark.parametrize("family", ["llamagen", "var"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_checkpointed_blocks_keep_what_the_shape_says(family, mode, dtype):
    """Selective checkpointing keeps the block's input and its matrix products' and attention's outputs:
    about half of a block's saved bytes; full checkpointing only the input."""
    build = layered(family, mode)
    measured, shape = kept_bytes_per_layer(build, dtype), build(1).shape()
    c = 2 if dtype == torch.bfloat16 else 4
    assert shape.block_kept_bytes(c) == pytest.approx(measured, rel=0.02)
    if mode == "selective":
        assert shape.block_kept_bytes(c) < 0.55 * shape.block_activation_bytes(c)


# ------------------------------------------------------------------------------ the shipped recipes


@pytest.mark.parametrize("path", sorted(RECIPES.glob("*.toml")), ids=lambda p: p.stem)
def test_every_shipped_recipe_fits_eight_80_gib_gpus_with_its_own_setting(path):
    r = load_recipe(path, check_paths=False)
    result = plan(r, 8, 80)
    assert result.recipe_setting is not None and result.row(result.recipe_setting).fits
    if path.stem.startswith(("llamagen_3b", "var_d30")):
        assert result.recipe_setting == result.recommended
        assert result.recommended_micro_batch_size == r.optim.micro_batch_size


def test_recommendations_step_down_when_memory_is_short():
    r = recipe("llamagen_3b_cca")
    assert plan(r, 8, 80).recommended == Setting(1)
    short = plan(r, 4, 24)
    assert short.recommended == Setting(3, True) and short.recommended_micro_batch_size == 2
    tight = plan(r, 8, 11)
    assert tight.recommended is not None and tight.recommended_micro_batch_size == 1
    nothing = plan(r, 8, 2)
    assert nothing.recommended is None and nothing.recommended_micro_batch_size is None
    assert not any(row.fits for row in nothing.rows)
    cpu_bound = plan(r, 8, 80, cpu_memory_gib=64)
    assert cpu_bound.recommended is None  # every process holds the fp32 model and its reference copy at load


# ------------------------------------------------------------------------------ alignkit plan

runner = CliRunner()


def test_cli_prints_the_table_and_the_recommendation():
    result = runner.invoke(app, ["plan", str(RECIPES / "var_d30_cca.toml"), "--gpus", "8", "--gpu-memory", "80"])
    assert result.exit_code == 0, result.output
    assert "var-d30: 2,010M parameters, micro-batch 2" in result.output
    assert "cheapest setting that fits: ZeRO-1" in result.output
    assert len(re.findall(r"^\s+[0-3]\s+(-|opt|opt\+params)\s+", result.output, re.M)) == 8


def test_cli_json_holds_every_part_of_every_setting():
    result = runner.invoke(app, ["plan", str(RECIPES / "llamagen_3b_cca.toml"), "--gpu-memory", "40",
                                 "--cpu-memory", "1024", "--micro-batch-size", "1", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert {"recipe", "backbone", "params", "largest_layer", "gpus", "gpus_per_node", "gpu_memory_gib",
            "cpu_memory_gib", "micro_batch_size", "safety_margin", "settings", "recipe_setting",
            "recommended"} <= set(data)
    assert data["gpus"] == 8 and data["micro_batch_size"] == 1 and len(data["settings"]) == 8
    assert set(data["settings"][0]) == {"zero_stage", "offload_optimizer", "offload_params", "label", "params_gib",
                                        "grads_gib", "optimizer_gib", "model_states_gib", "reference_gib",
                                        "activations_gib", "buffers_gib", "total_gib", "cpu_gib_per_node", "fits",
                                        "max_micro_batch_size"}
    assert data["recommended"] == {"zero_stage": 1, "offload_optimizer": False, "offload_params": False,
                                   "label": "ZeRO-1", "micro_batch_size": 1}


@pytest.mark.parametrize("args,message", [
    (["--gpus", "0", "--gpu-memory", "80"], "--gpus must be at least 1"),
    (["--gpu-memory", "-1"], "--gpu-memory must be a positive number"),
    (["--gpu-memory", "80", "--cpu-memory", "0"], "--cpu-memory must be a positive number"),
    (["--gpus", "3", "--gpu-memory", "80"], "does not split over 3 GPUs"),
    (["--gpu-memory", "80", "--micro-batch-size", "3"], "not a multiple of micro-batch 3"),
    (["--gpus", "8", "--gpus-per-node", "3", "--gpu-memory", "80"], "--gpus-per-node must divide"),
    (["--gpu-memory", "80", "optim.batch_size=0"], "optim.batch_size"),
    (["--gpu-memory", "80", "distributed.offload_params=true"], "offload_params needs zero_stage = 3"),
])
def test_cli_user_errors_are_one_line_and_exit_2(args, message):
    result = runner.invoke(app, ["plan", str(RECIPES / "llamagen_b_cca.toml"), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_a_missing_recipe_and_a_failing_backbone_are_user_errors(recipe_dir):
    result = runner.invoke(app, ["plan", str(recipe_dir / "missing.toml"), "--gpu-memory", "80"])
    assert result.exit_code == 2 and "recipe file not found" in result.output
    (recipe_dir / "toy.toml").write_text(MINIMAL_RECIPE)  # its backbone's factory raises
    with pytest.raises(AlignkitError, match=r"backbone 'toy' \(plugin 'inline:.*'\) failed to build: RuntimeError: "
                                            "the toy backbone is for recipe validation only"):
        plan(load_recipe(recipe_dir / "toy.toml"), 1, 80)
