"""The VAR transformer: sizes, official keys, teacher-forcing logits and the CCA log-probs."""

from __future__ import annotations

import pytest
import torch

import alignkit
from alignkit_var import VAR, VARConfig
from alignkit_var.config import VAR_PRESETS
from alignkit_var.quant import MultiScaleQuantizer

from var_support import (TINY, TINY_SALN, VAR_TINY_SALN, fixture, images, max_error, one_thread,  # noqa: F401
                         tiny, vqvae)

pytestmark = pytest.mark.usefixtures("one_thread")

# build_vae_var's numbers: VAR parameters and state_dict keys (buffers included).
SIZES = {"d16": (310_283_520, 220), "d20": (600_917_136, 272), "d24": (1_033_399_360, 324),
         "d30": (2_010_020_356, 402), "d36": (2_353_893_904, 446)}


def meta_model(preset: str) -> VAR:
    config = VARConfig(**VAR_PRESETS[preset])
    quantizer = MultiScaleQuantizer(config.V, config.Cvae, config.patch_nums)
    with torch.device("meta"):
        return VAR(config, quantizer)


@pytest.mark.parametrize("preset", list(SIZES))
def test_parameter_counts_and_keys_match_the_official_factory(preset):
    model = meta_model(preset)
    params, keys = SIZES[preset]
    assert sum(p.numel() for p in model.parameters()) == params
    assert len(model.official_state_dict()) == keys
    depth = int(preset[1:])
    assert (model.config.width, model.config.heads) == (64 * depth, depth)
    assert model.config.max_drop_path == pytest.approx(0.1 * depth / 24)
    assert [b.drop_path.p for b in model.blocks][-1] == pytest.approx(0.1 * depth / 24)
    assert model.blocks[0].drop_path.p == 0.0


@pytest.mark.parametrize("preset", ["d16", "d36"])
def test_full_size_keys_and_shapes_are_the_official_ones(preset):
    state = meta_model(preset).official_state_dict()
    expected = {k: v for k, v in fixture("full_model_keys.json")[f"var_{preset}"].items() if k != "__note__"}
    listed = {k: [list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in state.items()
              if not k.startswith("blocks.") or k.startswith("blocks.0.")}
    assert listed == expected and list(listed) == list(expected)
    depth = int(preset[1:])
    assert {k.replace(f"blocks.{depth - 1}.", "blocks.0.") for k in state if k.startswith(f"blocks.{depth - 1}.")} \
        == {k for k in expected if k.startswith("blocks.0.")}


def test_training_forward_logits_match_official():
    forward = fixture("var_train_forward.pt")
    model = tiny()
    x = model.teacher_forcing_input(forward["gt_BL"])
    assert max_error(x, forward["x_BLCv_wo_first_l"]) <= 1e-5
    with torch.no_grad():
        logits = model.logits(forward["gt_BL"], forward["label_B"])
        assert logits.dtype == torch.float32 and logits.shape == (4, 30, 32)
        assert max_error(logits, forward["logits_BLV"]) <= 1e-5
        for smoothing in ("0", "0.1"):
            ce_BL = torch.nn.functional.cross_entropy(logits.transpose(1, 2), forward["gt_BL"], reduction="none",
                                                      label_smoothing=float(smoothing))
            assert max_error(ce_BL, forward[f"ce_BL_ls{smoothing}"]) <= 1e-5
            assert max_error(ce_BL.mean(), forward[f"loss_ls{smoothing}"]) <= 1e-5
        # a prefix of scales (progressive training) equals the prefix of the full logits
        prefix = forward["prog_si2"]
        assert max_error(model.teacher_forcing_input(forward["gt_BL"])[:, :13], prefix["x_BLCv_wo_first_l"]) <= 1e-5
        prefix_logits = model.forward_var_input(forward["label_B"], prefix["x_BLCv_wo_first_l"])
        assert max_error(prefix_logits, prefix["logits_BLV"]) <= 1e-5
        with pytest.raises(ValueError, match="whole number of scales"):
            model.forward_var_input(forward["label_B"], prefix["x_BLCv_wo_first_l"][:, :5])


def test_shared_adaln_without_l2_attention_matches_official():
    forward = fixture("var_train_forward.pt")
    model = tiny(VAR_TINY_SALN, TINY_SALN)
    assert model.null_label == 10 and "shared_ada_lin.1.weight" in model.official_state_dict()
    with torch.no_grad():
        logits = model.logits(forward["gt_BL"], forward["saln"]["label_B"])
    assert max_error(logits, forward["saln"]["logits_BLV"]) <= 1e-5


def test_cca_log_probs_match_the_official_trainer():
    cca = fixture("cca_loss.pt")
    reference, policy = tiny(), tiny()
    policy.load_state_dict({**policy.official_state_dict(), **cca["policy_overrides"]})
    tokens_BL = vqvae().encode(images())
    assert torch.equal(tokens_BL, torch.cat(cca["gt_idx_Bl"], dim=1))
    tokens_2BL = torch.cat((tokens_BL, tokens_BL))
    for name, run in cca["runs"].items():
        labels_2B = torch.cat((run["label_B_after_mask"], run["shuffle_label_B_after_mask"]))
        with torch.no_grad():
            policy_2B = alignkit.sequence_logps(policy.logits(tokens_2BL, labels_2B), tokens_2BL)
            ref_2B = alignkit.sequence_logps(reference.logits(tokens_2BL, labels_2B), tokens_2BL)
        for got, key in ((policy_2B[:4], "img_logps"), (policy_2B[4:], "negative_img_logps"),
                         (ref_2B[:4], "img_ref_logps"), (ref_2B[4:], "negative_img_ref_logps")):
            assert max_error(got, run[key]) <= 1e-4, (name, key)


def test_duplicated_rows_share_one_teacher_forcing_input():
    model = tiny()
    tokens_BL = fixture("var_train_forward.pt")["gt_BL"]
    calls = []
    handle = model.quantizer.embedding.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    x = model.teacher_forcing_input(torch.cat((tokens_BL, tokens_BL)))
    handle.remove()
    assert set(calls) == {4} and torch.equal(x, torch.cat((model.teacher_forcing_input(tokens_BL),) * 2))


def test_quantiser_is_frozen_outside_the_state_dict_and_follows_the_device():
    model = tiny()
    names = [n for n, _ in model.named_parameters()]
    assert not any("quant" in n or "embedding.weight" == n for n in names)
    assert list(model.official_state_dict()) == list(fixture("var_tiny.pth"))
    assert not any(p.requires_grad for p in model.quantizer.parameters())
    model.double()
    assert model.pos_1LC.dtype == torch.float64 and model.quantizer.embedding.weight.dtype == torch.float32
    model.to("meta")
    assert model.quantizer.embedding.weight.device.type == "meta"


def test_official_weight_decay_rule():
    model = tiny(config=TINY)
    decayed = {n for n, p in model.named_parameters() if model.decays(n, p)}
    assert {"class_emb.weight", "word_embed.weight", "head.weight", "blocks.0.attn.mat_qkv.weight",
            "blocks.1.ada_lin.1.weight", "head_nm.ada_lin.1.weight"} <= decayed
    assert not decayed & {"pos_start", "pos_1LC", "lvl_embed.weight", "blocks.0.attn.scale_mul_1H11",
                          "blocks.0.attn.q_bias", "blocks.0.attn.v_bias", "head.bias"}
    saln = tiny(VAR_TINY_SALN, TINY_SALN)
    assert saln.decays("shared_ada_lin.1.weight", saln.shared_ada_lin[1].weight)
    assert not saln.decays("blocks.0.ada_gss", saln.blocks[0].ada_gss)


def test_drop_path_acts_in_train_mode_only_and_checkpointing_keeps_gradients():
    config = {**TINY, "depth": 3, "drop_path_rate": 0.5}
    forward = fixture("var_train_forward.pt")
    tokens_BL, labels_B = forward["gt_BL"], forward["label_B"]
    model = alignkit.load_policy("var", config=config, tokenizer=vqvae())
    with torch.no_grad():
        model.eval()
        assert torch.equal(model.logits(tokens_BL, labels_B), model.logits(tokens_BL, labels_B))
        model.train()
        assert not torch.equal(model.logits(tokens_BL, labels_B), model.logits(tokens_BL, labels_B))
    grads = []
    for checkpointing in (False, True, "selective"):
        model.config.activation_checkpointing = checkpointing
        model.zero_grad()
        torch.manual_seed(3)  # the same drop-path masks, recomputed identically under checkpointing
        model.logits(tokens_BL, labels_B).logsumexp(-1).sum().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    assert all(torch.equal(a, b) and torch.equal(a, c) for a, b, c in zip(*grads))


def test_frozen_reference_gets_its_own_quantiser_and_the_same_log_probs():
    from alignkit.reference import FrozenReference

    policy, forward = tiny(), fixture("var_train_forward.pt")
    reference = FrozenReference.copy_of(policy, train_mode=True)
    assert reference.model.quantizer is not policy.quantizer
    assert torch.equal(reference.model.quantizer.embedding.weight, policy.quantizer.embedding.weight)
    with torch.no_grad():
        expected_B = alignkit.sequence_logps(policy(forward["gt_BL"], forward["label_B"]), forward["gt_BL"])
    # the reference takes the fused path (projection + log-softmax by chunks): equal up to rounding
    torch.testing.assert_close(reference.sequence_logps(forward["gt_BL"], forward["label_B"]), expected_B,
                               rtol=1e-6, atol=1e-5)


def test_bf16_weights_as_deepspeed_casts_them_keep_fp32_logits_and_quantiser():
    forward = fixture("var_train_forward.pt")
    model = tiny().to(torch.bfloat16)
    assert model.quantizer.embedding.weight.dtype == torch.float32
    with torch.no_grad():
        logits = model.logits(forward["gt_BL"], forward["label_B"])
    assert logits.dtype == torch.float32 and max_error(logits, forward["logits_BLV"]) < 0.1
    assert model.generate(torch.tensor([1, 2]), guidance=1.0, greedy=True).shape == (2, 30)
