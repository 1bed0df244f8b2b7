"""LlamaGen GPT backbone against the official code's outputs (tests/fixtures/llamagen, README there).

Official ``cfg_scale`` = 1 + ``guidance``. Tolerances: logits 1e-5, token sequences exact.
"""

import json
import subprocess
import sys
import warnings

import pytest
import torch
import torch.nn.functional as F

import alignkit
from alignkit import AlignkitError, CheckpointError, sequence_logps
from alignkit.sample.tokens import filter_logits
from alignkit_llamagen.config import GPT_PRESETS, GPTConfig
from alignkit_llamagen.io import official_layout

from conftest import FIXTURES

HERE = FIXTURES / "llamagen"
CKPT = HERE / "gpt_tiny.pt"
CONFIG = json.loads((HERE / "gpt_tiny_config.json").read_text())["config"]
FORWARD = torch.load(HERE / "gpt_tiny_forward.pt", weights_only=True)
GENERATE = torch.load(HERE / "gpt_tiny_generate.pt", weights_only=True)
RUNS = [name for name in GENERATE if name != "sample_fn"]

# Parameter counts of the paper / official GPT_models (c2i, V = 16384, 1001-row class table).
PARAMS = {"B": 110_888_448, "L": 342_910_976, "XL": 774_699_520, "XXL": 1_410_972_672,
          "XXXL": 3_893_027_840, "1B": 1_199_616_000, "3B": 3_096_659_200, "7B": 6_614_589_440}


def tiny(checkpoint=CKPT, **overrides):
    """The fixture GPT (the official ModelArgs dict, verbatim) with its official weights."""
    return alignkit.load_policy("llamagen", checkpoint=checkpoint, config={**CONFIG, **overrides})


@pytest.fixture(scope="module")
def model():
    return tiny()


def generate_like_official(model, run, **extra):
    kw = run["kwargs"]
    return model.generate(run["cond"], guidance=kw["cfg_scale"] - 1.0, cfg_interval=kw["cfg_interval"],
                          temperature=kw["temperature"], top_k=kw["top_k"], top_p=kw["top_p"],
                          greedy=not kw["sample_logits"], **extra)


class Recorder:
    """Forward hooks on the real modules: labels entering the class table, rows leaving the head."""

    def __init__(self, model):
        self.labels, self.logits = [], []
        self.handles = [
            model.cls_embedding.register_forward_hook(lambda m, args, out: self.labels.append(args[0].clone())),
            model.output.register_forward_hook(lambda m, args, out: self.logits.append(out.detach().clone())),
        ]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()


# ---------------------------------------------------------------------------- forward


def test_rope_table_is_official_with_zero_class_rows(model):
    assert torch.equal(model.freqs_cis, FORWARD["freqs_cis"])
    assert not model.freqs_cis[0].any()


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_teacher_forcing_logits_match_official(model, mode):
    model.train(mode == "train")
    with torch.no_grad():
        logits_BLV = model(FORWARD["tokens"], FORWARD["labels"])  # PolicyModel.forward is logits
    assert logits_BLV.dtype == torch.float32 and logits_BLV.shape == (4, 16, 64)
    torch.testing.assert_close(logits_BLV, FORWARD["train_logits"], atol=1e-5, rtol=1e-5)
    loss = F.cross_entropy(logits_BLV.reshape(-1, 64), FORWARD["tokens"].reshape(-1))
    torch.testing.assert_close(loss, FORWARD["train_loss"], atol=1e-6, rtol=1e-6)


def test_full_length_eval_forward_matches_official(model):
    model.eval()
    with torch.no_grad():
        logits = model.full_logits(FORWARD["tokens"], FORWARD["labels"])
    torch.testing.assert_close(logits, FORWARD["eval_full_logits"], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="exceed block_size"):
        model.full_logits(torch.zeros(1, 17, dtype=torch.long), torch.zeros(1, dtype=torch.long))


def test_cca_log_probs_match_official_trainer():
    """Summed token log-probs of the official CCA block (policy and reference, both in train mode)."""
    fixture = torch.load(HERE / "cca_loss.pt", weights_only=True)
    reference = tiny().train()
    policy = tiny().train()
    with torch.no_grad():
        policy.output.weight.mul_(1.25)  # fixture["policy_transform"]
        policy.cls_embedding.embedding_table.weight.mul_(2.0)
    tokens = fixture["tokens"]
    for v in fixture["variants"][:2]:
        with torch.no_grad():
            for net, pos, neg in ((policy, "img_logps", "negative_img_logps"),
                                  (reference, "img_ref_logps", "negative_img_ref_logps")):
                torch.testing.assert_close(sequence_logps(net.logits(tokens, v["c_indices"]), tokens), v[pos],
                                           atol=1e-4, rtol=1e-5)
                torch.testing.assert_close(sequence_logps(net.logits(tokens, v["shuffled_c_indices"]), tokens),
                                           v[neg], atol=1e-4, rtol=1e-5)


def test_dropout_only_in_train_mode():
    model = tiny(token_dropout_p=0.1, resid_dropout_p=0.1, ffn_dropout_p=0.1, drop_path_rate=0.1)
    args = FORWARD["tokens"], FORWARD["labels"]
    with torch.no_grad():
        model.eval()
        torch.testing.assert_close(model(*args), FORWARD["train_logits"], atol=1e-5, rtol=1e-5)
        model.train()
        assert not torch.allclose(model(*args), model(*args))


@pytest.mark.parametrize("recompute", [True, "selective"])
def test_activation_checkpointing_gives_the_same_gradients_bit_for_bit(recompute):
    """Recomputation replays the same kernels with the same dropout and drop-path masks."""
    grads = []
    for mode in (False, recompute):
        model = tiny(activation_checkpointing=mode, resid_dropout_p=0.1, ffn_dropout_p=0.1, drop_path_rate=0.2).train()
        torch.manual_seed(5)
        sequence_logps(model(FORWARD["tokens"], FORWARD["labels"]), FORWARD["tokens"]).sum().backward()
        grads.append({name: p.grad for name, p in model.named_parameters()})
    assert grads[0]["layers.0.feed_forward.w1.weight"].abs().max() > 0
    for name, grad in grads[0].items():
        assert torch.equal(grads[1][name], grad), name


# ---------------------------------------------------------------------------- generation


@pytest.mark.parametrize("run", RUNS)
def test_generation_reproduces_official_sequences_and_step_logits(model, run):
    official = GENERATE[run]
    generator = torch.Generator().manual_seed(1234) if "seed" in run else None
    with Recorder(model) as rec:
        tokens_BL = generate_like_official(model, official, generator=generator)
    assert tokens_BL.dtype == torch.int64
    assert torch.equal(tokens_BL, official["seq"].long())
    if "step_logits" in official:
        assert len(rec.logits) == 16
        for step, (ours, theirs) in enumerate(zip(rec.logits, official["step_logits"])):
            # after cfg_interval the unconditional rows are no longer computed (officially they are, unused)
            torch.testing.assert_close(ours, theirs[: ours.shape[0]], atol=1e-5, rtol=1e-5, msg=f"step {step}")


def test_sample_fn_probabilities_match_official():
    fixture = GENERATE["sample_fn"]
    logits_BV = fixture["logits"][:, -1, :]
    for name, case in fixture.items():
        if name == "logits":
            continue
        kw = case["kwargs"]
        probs = torch.softmax(filter_logits(logits_BV / max(kw["temperature"], 1e-5), kw["top_k"], kw["top_p"]), -1)
        assert torch.equal(probs, case["probs"]), name
        assert torch.equal(probs.argmax(-1, keepdim=True), case["argmax_idx"]), name


def test_guidance_free_sampling_never_evaluates_the_null_class(model):
    labels = torch.tensor([2, 5, 9])
    with Recorder(model) as rec:
        model.generate(labels, guidance=0.0, greedy=True)
    assert len(rec.labels) == 1 and torch.equal(rec.labels[0], labels)
    assert {out.shape[0] for out in rec.logits} == {3}
    with Recorder(model) as rec:
        model.generate(labels, guidance=3.0, greedy=True)
    assert torch.equal(rec.labels[0], torch.tensor([2, 5, 9, 10, 10, 10]))
    assert {out.shape[0] for out in rec.logits} == {6}
    with Recorder(model) as rec:
        model.generate(labels, guidance=3.0, cfg_interval=5, greedy=True)
    assert [out.shape[0] for out in rec.logits] == [6] * 7 + [3] * 9


def test_generate_leaves_no_cache_and_restores_the_mode(model):
    keys = list(model.state_dict())
    model.train()
    model.generate(torch.tensor([1, 2]), guidance=1.0)
    assert model.training and list(model.state_dict()) == keys
    with torch.no_grad():
        torch.testing.assert_close(model(FORWARD["tokens"], FORWARD["labels"]), FORWARD["train_logits"],
                                   atol=1e-5, rtol=1e-5)


def test_generation_is_batch_independent_and_seeded(model):
    nocfg = GENERATE["nocfg_greedy"]["seq"].long()
    assert torch.equal(model.generate(torch.tensor([5]), greedy=True), nocfg[1:2])
    labels = torch.tensor([2, 5, 9, 0, 3])
    a = model.generate(labels, guidance=1.5, top_k=20, top_p=0.9, generator=torch.Generator().manual_seed(7))
    b = model.generate(labels, guidance=1.5, top_k=20, top_p=0.9, generator=torch.Generator().manual_seed(7))
    assert a.shape == (5, 16) and torch.equal(a, b)
    assert int(a.min()) >= 0 and int(a.max()) < 64
    with pytest.raises(AlignkitError, match="null class 10"):
        model.generate(torch.tensor([11]))


def test_linear_schedule_starts_unguided_and_ends_guided(model):
    tokens = model.generate(torch.tensor([2, 5, 9]), guidance=3.0, schedule="linear", greedy=True)
    assert torch.equal(tokens[:, 0], GENERATE["nocfg_greedy"]["seq"][:, 0].long())
    assert not torch.equal(tokens, GENERATE["cfg4_greedy"]["seq"].long())


def test_kv_cache_with_grouped_query_attention_agrees_with_teacher_forcing():
    config = {**CONFIG, "n_head": 4, "n_kv_head": 2}
    model = alignkit.load_policy("llamagen", config=config).eval()
    torch.nn.init.normal_(model.output.weight, std=0.5)  # the official init zeroes the head
    assert model.layers[0].attention.wqkv.weight.shape == (64 + 2 * 2 * 16, 64)
    labels = torch.tensor([1, 4, 10])
    tokens = model.generate(labels, greedy=True)
    with torch.no_grad():
        assert torch.equal(model(tokens, labels).argmax(-1), tokens)


# ---------------------------------------------------------------------------- checkpoints


def _logits(model):
    model.eval()
    with torch.no_grad():
        return model(FORWARD["tokens"], FORWARD["labels"])


@pytest.mark.parametrize("layout", ["module", "state_dict", "raw", "stray_keys", "safetensors", "xz"])
def test_official_wrappings_load(tmp_path, layout):
    state = torch.load(CKPT, weights_only=True)["model"]
    path = tmp_path / "c2i.pt"
    if layout == "safetensors":
        path = tmp_path / "c2i.safetensors"
        tiny().save_safetensors(path)
    elif layout == "xz":
        import lzma

        path = tmp_path / "c2i.pt.xz"
        path.write_bytes(lzma.compress(CKPT.read_bytes()))
    elif layout == "stray_keys":  # what official code paths leave in files
        torch.save({"model": {**state, "freqs_cis": FORWARD["freqs_cis"],
                              "layers.0.attention.kv_cache.k_cache": torch.zeros(2, 4, 24, 16),
                              "layers.0.attention.kv_cache.v_cache": torch.zeros(2, 4, 24, 16)}}, path)
    else:
        torch.save(state if layout == "raw" else {layout: state}, path)
    torch.testing.assert_close(_logits(tiny(path)), FORWARD["train_logits"], atol=1e-5, rtol=1e-5)


def test_round_trip_through_a_fresh_process(tmp_path):
    model = tiny()
    model.save_official(tmp_path / "ft.pt")
    model.save_safetensors(tmp_path / "ft.safetensors")
    saved = torch.load(tmp_path / "ft.pt", weights_only=True)
    assert list(saved) == ["model"]  # a B/L/XL-like size: the layout official samplers read
    assert list(saved["model"]) == list(torch.load(CKPT, weights_only=True)["model"])
    script = (
        "import json, sys, torch, alignkit\n"
        "config = json.loads(sys.argv[1]); out = {}\n"
        "fw = torch.load(sys.argv[2], weights_only=True)\n"
        "for name in ('ft.pt', 'ft.safetensors'):\n"
        "    m = alignkit.load_policy('llamagen', checkpoint=sys.argv[3] + '/' + name, config=config).eval()\n"
        "    with torch.no_grad(): out[name] = m(fw['tokens'], fw['labels'])\n"
        "torch.save(out, sys.argv[3] + '/logits.pt')\n")
    subprocess.run([sys.executable, "-c", script, json.dumps(CONFIG), str(HERE / "gpt_tiny_forward.pt"),
                    str(tmp_path)], check=True, timeout=120)
    fresh = torch.load(tmp_path / "logits.pt", weights_only=True)
    expected = _logits(model)
    for name, logits in fresh.items():
        assert torch.equal(logits, expected), name


def test_layouts_follow_the_official_samplers(tmp_path):
    assert {name: official_layout(GPTConfig(**preset)) for name, preset in GPT_PRESETS.items()} == {
        "B": "wrapped", "L": "wrapped", "XL": "wrapped", "XXL": "raw", "XXXL": "raw", "1B": "raw",
        "3B": "raw", "7B": "raw"}
    with pytest.warns(UserWarning, match="XXL"):
        tiny().save_official(tmp_path / "tiny.pt", layout="raw")
    assert "model" not in torch.load(tmp_path / "tiny.pt", weights_only=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tiny().save_official(tmp_path / "c2i_XXL_tiny.pt", layout="raw")
    torch.testing.assert_close(_logits(tiny(tmp_path / "c2i_XXL_tiny.pt")), FORWARD["train_logits"],
                               atol=1e-5, rtol=1e-5)


def test_html_and_truncated_files_are_reported(tmp_path):
    html = tmp_path / "c2i_B_384.pt"
    html.write_text("<!DOCTYPE html><html><body>Repository not found</body></html>")
    with pytest.raises(CheckpointError, match="HTML"):
        alignkit.load_policy("llamagen-B", checkpoint=html)
    truncated = tmp_path / "c2i_L_384.pt"
    truncated.write_bytes(CKPT.read_bytes()[:200_000])
    with pytest.raises(CheckpointError, match="truncated"):
        alignkit.load_policy("llamagen-L", checkpoint=truncated)


def test_a_checkpoint_of_another_size_names_its_probable_size(tmp_path):
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in alignkit.load_policy("llamagen-B").state_dict().items()}
    path = tmp_path / "c2i_B_384.pt"  # GPT-B shapes from a 1-element storage: a few kB on disk
    torch.save({"model": {k: torch.zeros(()).expand(shape) for k, shape in shapes.items()}}, path)
    with pytest.raises(CheckpointError) as info:
        alignkit.load_policy("llamagen-L", checkpoint=path)
    message = str(info.value)
    assert "missing: layers.12.attention.wqkv.weight" in message and "shape mismatch" in message
    assert "GPT-B checkpoint (dim 768, 12 layers" in message and "'llamagen-B'" in message
    with pytest.raises(CheckpointError, match=r"unexpected: .*non-standard GPT \(dim 64, 2 layers"):
        tiny(n_layer=1)
    with pytest.raises(CheckpointError, match="VQ tokenizer checkpoint, not a GPT"):
        tiny(HERE / "vq_tiny.pt.xz")


# ---------------------------------------------------------------------------- configs and sizes


@pytest.mark.parametrize("size", list(GPT_PRESETS))
def test_parameter_counts_match_the_paper(size):
    with torch.device("meta"):
        model = alignkit.load_policy(f"llamagen-{size}")
    assert sum(p.numel() for p in model.parameters()) == PARAMS[size]


def test_real_gpt_b_state_dict_matches_the_official_manifest():
    manifest = json.loads((HERE / "real_state_dict_manifest.json").read_text())["GPT-B_384_c2i"]
    with torch.device("meta"):
        model = alignkit.load_policy("llamagen-B")
    assert [(k, list(v.shape)) for k, v in model.official_state_dict().items()] == list(manifest.items())
    assert (model.seq_len, model.num_classes, model.null_label, model.vocab_size) == (576, 1000, 1000, 16384)
    assert model.freqs_cis.shape == (577, 32, 2)


def test_gpt_b_builds_without_a_checkpoint_with_the_official_init():
    model = alignkit.load_policy("llamagen-B")
    assert not model.output.weight.any()
    assert bool((model.norm.weight == 1).all())
    assert abs(float(model.tok_embeddings.weight.detach().std()) - 0.02) < 1e-3
    no_decay = [name for name, p in model.named_parameters() if not model.decays(name, p)]
    assert no_decay and all(name.endswith("norm.weight") for name in no_decay)


@pytest.mark.parametrize("config, problem", [
    ({"block_size": 17}, "block_size 17 must be a perfect square"),
    ({"dim": 100, "n_head": 3}, "divisible by n_head"),
    ({"dim": 96, "n_head": 16}, "multiple of 4"),
    ({"n_head": 12, "n_kv_head": 5}, "multiple of n_kv_head 5"),
    ({"cls_token_num": 120}, "cls_token_num must be 1"),
    ({"model_type": "t2i"}, "model_type"),
    ({"n_layers": 3}, "n_layers"),
])
def test_invalid_configs_are_reported(config, problem):
    with pytest.raises(AlignkitError, match=problem):
        alignkit.load_policy("llamagen-B", config=config)
