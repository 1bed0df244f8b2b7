"""LlamaGen VQ tokenizer against the official code's outputs (tests/fixtures/llamagen, README there)."""

import json

import pytest
import torch

import alignkit
from alignkit import AlignkitError, CheckpointError

from conftest import FIXTURES

HERE = FIXTURES / "llamagen"
CKPT = HERE / "vq_tiny.pt.xz"  # the official tiny VQ file, xz-compressed
TINY = json.loads((HERE / "vq_tiny_config.json").read_text())
# The official ModelArgs plus the Encoder/Decoder constants the fixture overrides (ch 32, 1 res block).
CONFIG = {**TINY["config"], **TINY["encoder_decoder_ctor_overrides"], "image_size": 16}
IO = torch.load(HERE / "vq_tiny_io.pt", weights_only=True)


@pytest.fixture(scope="module")
def vq():
    return alignkit.load_tokenizer("llamagen-vq", checkpoint=CKPT, config=CONFIG)


def test_tiny_tokenizer_has_the_official_keys(vq):
    assert [(k, list(v.shape)) for k, v in vq.state_dict().items()] == list(TINY["state_dict_keys"].items())
    assert sum(p.numel() for p in vq.parameters()) == TINY["num_params"]
    assert (vq.vocab_size, vq.seq_len, vq.image_size) == (64, 64, 16)


def test_encode_matches_official(vq):
    with torch.no_grad():
        pre_quant = vq.pre_quant(IO["image"])
        quant, codes_BHW = vq.quantize(pre_quant)
        tokens_BL = vq.encode(IO["image"])
    torch.testing.assert_close(pre_quant, IO["pre_quant"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(quant, IO["quant"], atol=1e-6, rtol=1e-6)
    assert torch.equal(codes_BHW.flatten(), IO["indices_flat"])
    assert tokens_BL.dtype == torch.int64 and torch.equal(tokens_BL, IO["codes"])


def test_decode_matches_official(vq):
    with torch.no_grad():
        decoded = vq.decode(IO["codes"])
        decoded_from_int32 = vq.decode(IO["codes"].int())  # what the official generate() returns
        reconstruction = vq(IO["image"])
    assert decoded.shape == (2, 3, 16, 16)
    torch.testing.assert_close(decoded, IO["decoded_from_codes"], atol=1e-5, rtol=1e-5)
    assert torch.equal(decoded_from_int32, decoded)
    torch.testing.assert_close(reconstruction, IO["forward_reconstruction"], atol=1e-5, rtol=1e-5)


def test_codebook_usage_buffer_is_accepted_and_saved_back(vq, tmp_path):
    vq.save_official(tmp_path / "vq.pt")
    saved = torch.load(tmp_path / "vq.pt", weights_only=True)
    assert list(saved) == ["model"] and saved["model"]["quantize.codebook_used"].shape == (65536,)
    assert list(saved["model"]) == list(TINY["state_dict_keys"])
    without = {k: v for k, v in saved["model"].items() if k != "quantize.codebook_used"}
    torch.save({"model": without}, tmp_path / "no_usage.pt")
    for path, config in ((tmp_path / "vq.pt", CONFIG), (tmp_path / "no_usage.pt", CONFIG),
                         (tmp_path / "vq.pt", {**CONFIG, "codebook_show_usage": False})):
        reloaded = alignkit.load_tokenizer("llamagen-vq", checkpoint=path, config=config)
        assert torch.equal(reloaded.encode(IO["image"]), IO["codes"])


def test_real_vq16_state_dict_matches_the_official_manifest():
    manifest = json.loads((HERE / "real_state_dict_manifest.json").read_text())["VQ-16"]
    with torch.device("meta"):
        vq16 = alignkit.load_tokenizer("llamagen-vq-16", random_init=True)
        vq8 = alignkit.load_tokenizer("llamagen-vq-8", random_init=True)
    assert [(k, list(v.shape)) for k, v in vq16.state_dict().items()] == list(manifest.items())
    assert sum(p.numel() for p in vq16.parameters()) == 71_883_403
    assert sum(p.numel() for p in vq8.parameters()) == 70_109_835
    assert (vq16.seq_len, vq16.image_size, vq8.seq_len, vq8.image_size) == (576, 384, 1024, 256)


def test_bad_inputs_and_files_are_reported(vq, tmp_path):
    with pytest.raises(AlignkitError, match="multiples of 2"):
        vq.encode(torch.zeros(1, 3, 15, 16))
    with pytest.raises(AlignkitError, match="L a square"):
        vq.decode(torch.zeros(1, 60, dtype=torch.long))
    with pytest.raises(CheckpointError, match="a non-standard VQ tokenizer \\(ch 32, 2 levels"):
        alignkit.load_tokenizer("llamagen-vq", checkpoint=CKPT, config={**CONFIG, "num_res_blocks": 2})
    with pytest.raises(CheckpointError, match="LlamaGen GPT checkpoint, not a VQ tokenizer"):
        alignkit.load_tokenizer("llamagen-vq", checkpoint=HERE / "gpt_tiny.pt", config=CONFIG)
    with pytest.raises(AlignkitError, match="multiple of the downsampling factor 16"):
        alignkit.load_tokenizer("llamagen-vq-16", config={"image_size": 250})
