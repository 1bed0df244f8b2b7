"""Official VAR checkpoints in and out: wrappings, round trips and the errors users meet."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import OrderedDict

import pytest
import torch

import alignkit
from alignkit.errors import AlignkitError, CheckpointError

from var_support import TINY, VAE_TINY, VAR_TINY, fixture, max_error, one_thread, tiny, vqvae  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")


def reference_logits(model) -> torch.Tensor:
    forward = fixture("var_train_forward.pt")
    with torch.no_grad():
        return model.eval().logits(forward["gt_BL"], forward["label_B"])


def official_state() -> OrderedDict:
    return fixture("var_tiny.pth")


@pytest.mark.parametrize("layout", ["plain", "var_trainer", "cca_trainer", "compiled", "safetensors"])
def test_official_wrappings_load_strictly(tmp_path, layout):
    state = official_state()
    path = tmp_path / "ckpt.pth"
    if layout == "plain":
        torch.save(state, path)
    elif layout == "var_trainer":  # train.py's ar-ckpt-last.pth
        torch.save({"epoch": 3, "iter": 10, "args": {"depth": 2},
                    "trainer": {"config": {"pg": 0.0}, "var_wo_ddp": state, "vae_local": vqvae().official_state_dict(),
                                "var_opt": {"optimizer": {"state": {}, "param_groups": [{"lr": 1e-4}]}}}}, path)
    elif layout == "cca_trainer":  # CCA's trainer state_dict() is the VAR state_dict itself
        torch.save({"epoch": 0, "iter": 10, "trainer": state, "args": {"beta": 0.02}}, path)
    elif layout == "compiled":
        torch.save({f"_orig_mod.{k}": v for k, v in state.items()}, path)
    else:
        path = tmp_path / "ckpt.safetensors"
        tiny().save_safetensors(path)
    assert max_error(reference_logits(tiny(path)), fixture("var_train_forward.pt")["logits_BLV"]) <= 1e-5


def test_round_trip_through_a_fresh_process(tmp_path):
    model = tiny()
    with torch.no_grad():  # make the weights ours, so the test sees them saved
        model.head.bias.add_(0.25)
    model.save_official(tmp_path / "ft.pth")
    model.save_safetensors(tmp_path / "ft.safetensors")
    saved = torch.load(tmp_path / "ft.pth", weights_only=True)
    assert isinstance(saved, OrderedDict) and list(saved) == list(official_state())
    assert all(v.device.type == "cpu" for v in saved.values())
    script = (
        "import json, sys, torch, alignkit\n"
        "config = json.loads(sys.argv[1]); out = {}\n"
        "fw = torch.load(sys.argv[2], weights_only=True)\n"
        "vae = alignkit.load_tokenizer('var-vqvae', checkpoint=sys.argv[3],\n"
        "                              config=dict(vocab_size=32, z_channels=8, ch=32, v_patch_nums=(1, 2, 3, 4)))\n"
        "for name in ('ft.pth', 'ft.safetensors'):\n"
        "    m = alignkit.load_policy('var', checkpoint=sys.argv[4] + '/' + name, tokenizer=vae, config=config)\n"
        "    with torch.no_grad(): out[name] = m.eval().logits(fw['tokens'], fw['labels'])\n"
        "torch.save(out, sys.argv[4] + '/logits.pt')\n")
    forward = fixture("var_train_forward.pt")
    torch.save({"tokens": forward["gt_BL"], "labels": forward["label_B"]}, tmp_path / "batch.pt")
    subprocess.run([sys.executable, "-c", script, json.dumps(TINY), str(tmp_path / "batch.pt"), str(VAE_TINY),
                    str(tmp_path)], check=True, timeout=120)
    fresh = torch.load(tmp_path / "logits.pt", weights_only=True)
    expected = reference_logits(model)
    for name, logits in fresh.items():
        assert torch.equal(logits, expected), name


def test_tokenizer_given_as_a_path_or_object(tmp_path):
    by_path = tiny(tokenizer=VAE_TINY)
    assert torch.equal(reference_logits(by_path), reference_logits(tiny()))
    with pytest.raises(AlignkitError, match="does not match the VAR config"):
        tiny(config={**TINY, "patch_nums": (1, 2, 4)})
    with pytest.raises(AlignkitError, match="pass tokenizer="):
        alignkit.load_policy("var", checkpoint=VAR_TINY, config=TINY)


def test_html_and_truncated_files_are_reported(tmp_path):
    html = tmp_path / "var_d16.pth"
    html.write_text("<!DOCTYPE html><html><body>Not Found</body></html>")
    with pytest.raises(CheckpointError, match="HTML"):
        tiny(html)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(_torch_bytes(official_state())[:5000])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        tiny(truncated)


def _torch_bytes(obj) -> bytes:
    import io

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def test_a_checkpoint_of_another_depth_names_its_probable_size(tmp_path):
    deeper = alignkit.load_policy("var", config={**TINY, "depth": 3}, tokenizer=vqvae())
    deeper.save_official(tmp_path / "d3.pth")
    with pytest.raises(CheckpointError, match=r"unexpected: blocks\.2\..*VAR-d3 checkpoint.*depth=3, embed_dim=64"):
        tiny(tmp_path / "d3.pth")
    with pytest.raises(CheckpointError, match="a VQVAE checkpoint: pass it as the tokenizer"):
        tiny(VAE_TINY)
    d20_like = {k.replace("blocks.1.", "blocks.19."): v for k, v in official_state().items()}
    torch.save(d20_like, tmp_path / "d20.pth")
    with pytest.raises(CheckpointError, match="VAR-d20 checkpoint"):
        tiny(tmp_path / "d20.pth")


def test_other_patch_nums_with_the_same_length_are_refused(tmp_path):
    state = dict(official_state())
    state["lvl_1L"] = state["lvl_1L"].flip(-1)
    torch.save(state, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="other patch_nums"):
        tiny(tmp_path / "other.pth")


def test_load_policy_with_a_preset_builds_the_official_config():
    policy = alignkit.load_policy("var-d36", config={"depth": 2, "embed_dim": 64, "num_heads": 4, "V": 32, "Cvae": 8})
    assert policy.config.shared_aln and policy.config.patch_nums[-1] == 32 and policy.seq_len == 2240
    assert policy.num_classes == 1000 and policy.vocab_size == 32
    with pytest.raises(AlignkitError, match="divisible"):
        alignkit.load_policy("var", config={"depth": 2, "embed_dim": 100, "num_heads": 3})
    assert json.dumps(policy.config.model_dump())  # configs stay plain data
