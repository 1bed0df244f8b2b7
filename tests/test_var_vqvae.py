"""The multi-scale VQVAE tokenizer against the official outputs (``vae_io.pt``, ``quant10.pt``)."""

from __future__ import annotations

import pytest
import torch

import alignkit
from alignkit.errors import AlignkitError, CheckpointError
from alignkit_var import VQVAE, VQVAEConfig
from alignkit_var.quant import MultiScaleQuantizer, phi_index_per_scale, phi_ticks

from var_support import VAE_CONFIG, VAE_TINY, fixture, images, max_error, one_thread, vqvae  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")


def test_encoder_ids_and_fhat_are_the_official_ones():
    vae, io = vqvae(), fixture("vae_io.pt")
    latent = vae.latent(images())
    assert max_error(latent, io["f_BChw"]) <= 1e-5
    ids, f_hat = vae.quantize.quantize(latent)
    assert len(ids) == 4 and all(torch.equal(a, b) for a, b in zip(ids, io["idx_Bl"]))
    assert max_error(f_hat, io["fhat_BChw"]) <= 1e-5
    assert all(torch.equal(a, b) for a, b in zip(vae.encode_per_scale(images()), io["idx_Bl"]))
    tokens_BL = vae.encode(images())
    assert tokens_BL.dtype == torch.int64 and torch.equal(tokens_BL, torch.cat(io["idx_Bl"], dim=1))


def test_decoding_reproduces_the_official_reconstruction():
    vae, io = vqvae(), fixture("vae_io.pt")
    recon = vae.decode(torch.cat(io["idx_Bl"], dim=1))
    assert recon.shape == (4, 3, 64, 64) and max_error(recon, io["recon_B3HW"]) <= 1e-5
    assert float(recon.abs().max()) <= 1.0  # the official clamp
    assert torch.equal(vae.decode(io["idx_Bl"]), recon)
    assert max_error(vae.decode_fhat(io["fhat_BChw"]), io["recon_B3HW"]) <= 1e-5


def test_ten_scale_quantiser_reproduces_the_official_outputs():
    q10 = fixture("quant10.pt")
    quantizer = MultiScaleQuantizer(32, 8, tuple(q10["patch_nums"]))
    weights = {k.removeprefix("quantize."): v for k, v in vqvae().state_dict().items()
               if k.startswith("quantize.") and "ema_vocab_hit_SV" not in k}
    quantizer.load_state_dict({**weights, "ema_vocab_hit_SV": torch.zeros(10, 32)})
    assert quantizer.quant_resi.index_per_scale == tuple(q10["phi_index_per_si"]) == (0, 0, 1, 1, 1, 2, 2, 3, 3, 3)
    ids, f_hat = quantizer.quantize(q10["f_BChw"])
    assert [tuple(i.shape) for i in ids] == [(2, pn * pn) for pn in q10["patch_nums"]]
    assert all(torch.equal(a, b) for a, b in zip(ids, q10["idx_Bl"]))
    assert max_error(f_hat, q10["fhat_BChw"]) <= 1e-5
    x = quantizer.var_input(q10["idx_Bl"])
    assert x.shape == (2, 679, 8) and max_error(x, q10["x_BLCv_wo_first_l"]) <= 1e-5
    assert max_error(quantizer.fhat_from_ids(q10["idx_Bl"]), q10["fhat_BChw"]) <= 1e-5


def test_phi_index_table_is_the_official_float64_argmin():
    table = fixture("phi_index_table.json")
    for name, entry in table.items():
        K = int(name.removeprefix("K="))
        assert phi_ticks(K).tolist() == entry["ticks"]
        for num_scales, expected in entry["SN_to_index"].items():
            assert list(phi_index_per_scale(K, int(num_scales))) == expected, (K, num_scales)


@pytest.mark.parametrize("share, keys", [(4, ["qresi_ls.0.weight", "qresi_ls.3.bias"]), (1, ["qresi.weight"]),
                                         (0, ["0.weight", "3.bias"])])
def test_phi_sharing_modes_use_the_official_key_layouts(share, keys):
    quantizer = MultiScaleQuantizer(16, 8, (1, 2, 3, 4), share_quant_resi=share)
    names = [k.removeprefix("quant_resi.") for k in quantizer.state_dict() if k.startswith("quant_resi.")]
    assert set(keys) <= set(names)
    assert len(names) == (2 if share == 1 else 8)
    assert list(MultiScaleQuantizer(16, 8, (1, 2, 3, 4), quant_resi=0.0).state_dict()) == \
        ["ema_vocab_hit_SV", "embedding.weight"]


def test_full_size_vqvae_keys_and_shapes_are_the_official_ones():
    with torch.device("meta"):
        vae = VQVAE(VQVAEConfig())
    expected = fixture("full_model_keys.json")["vae_ch160v4096z32"]
    state = vae.state_dict()
    assert {k: [list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in state.items()} == expected
    assert list(state) == list(expected) and len(state) == 324
    assert sum(p.numel() for p in vae.parameters()) == 108_948_355
    assert vae.seq_len == 680 and vae.image_size == 256 and vae.vocab_size == 4096
    assert not any(p.requires_grad for p in vae.parameters()) and not vae.training


def test_other_scale_count_substitutes_the_usage_buffer_and_saves_back(tmp_path):
    config = {**VAE_CONFIG, "v_patch_nums": (1, 2, 4)}
    vae = alignkit.load_tokenizer("var-vqvae", checkpoint=VAE_TINY, config=config)
    assert vae.quantize.ema_vocab_hit_SV.shape == (3, 32) and vae.seq_len == 21
    vae.save_official(tmp_path / "vae.pth")
    vae.save_safetensors(tmp_path / "vae.safetensors")
    reference = vqvae()
    for name in ("vae.pth", "vae.safetensors"):
        again = alignkit.load_tokenizer("var-vqvae", checkpoint=tmp_path / name, config=VAE_CONFIG)
        assert list(again.state_dict()) == list(reference.state_dict())
        assert torch.equal(again.encode(images()), reference.encode(images()))
    saved = torch.load(tmp_path / "vae.pth", weights_only=True)
    assert type(saved).__name__ == "OrderedDict" and len(saved) == 324


def test_mismatched_vqvae_checkpoint_and_images_are_reported(tmp_path):
    with pytest.raises(CheckpointError, match="vocab_size=32, z_channels=8, ch=32"):
        alignkit.load_tokenizer("var-vqvae", checkpoint=VAE_TINY, config={**VAE_CONFIG, "ch": 64})
    with pytest.raises(ValueError, match="64x64"):
        vqvae().encode(torch.zeros(1, 3, 32, 32))
    with pytest.raises(AlignkitError, match="strictly increasing"):
        alignkit.load_tokenizer("var-vqvae", config={"v_patch_nums": (1, 3, 2)})
    with pytest.raises(AlignkitError, match="multiple of 32"):
        alignkit.load_tokenizer("var-vqvae", config={"ch": 48})
