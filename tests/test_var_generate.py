"""Next-scale sampling against the official ``autoregressive_infer_cfg`` runs (``var_infer.pt``)."""

from __future__ import annotations

import pytest
import torch

from alignkit.errors import AlignkitError
from alignkit_var import sample_stages

from var_support import fixture, max_error, one_thread, tiny, vqvae  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")
RUNS = ["greedy_cfg0", "greedy_cfg1", "greedy_cfg2", "sample_k8_p0.9_cfg1.5_seed1234", "smooth_k8_p0.9_cfg1.5_seed5"]


def official_run(model, name: str):
    """Our stages for one fixture run, with the official arguments (``cfg`` is our ``guidance``)."""
    kw = fixture("var_infer.pt")[name]["kwargs"]
    generator = torch.Generator().manual_seed(kw["g_seed"])
    return list(sample_stages(model, torch.tensor(kw["label_B"]), guidance=kw["cfg"], schedule="linear",
                              top_k=kw["top_k"], top_p=kw["top_p"], more_smooth=kw["more_smooth"],
                              generator=generator))


@pytest.mark.parametrize("name", RUNS)
def test_stages_reproduce_the_official_run(name):
    model, run = tiny(), fixture("var_infer.pt")[name]
    stages = official_run(model, name)
    assert max_error([s.logits_BlV for s in stages], run["logits_cfg_per_stage"]) <= 1e-5
    assert all(torch.equal(s.ids_Bl, ids) for s, ids in zip(stages, run["idx_per_stage"], strict=True))
    assert max_error(stages[-1].f_hat_BChw, run["f_hat"]) <= 1e-5
    if not run["kwargs"]["more_smooth"]:  # the next scale's input is the teacher-forcing input of the ids
        x = model.teacher_forcing_input(torch.cat(run["idx_per_stage"], dim=1))
        recorded = torch.cat([m.flatten(2).transpose(1, 2) for m in run["next_token_map_per_stage"]], dim=1)
        assert max_error(x, recorded) <= 1e-5
    if "img_B3HW_01" in run:
        _, images = model.generate_images(torch.tensor(run["kwargs"]["label_B"]), vqvae(), guidance=run["kwargs"]["cfg"],
                                          top_k=1, generator=torch.Generator().manual_seed(0))
        assert max_error(images.add(1).mul(0.5), run["img_B3HW_01"]) <= 1e-5


def test_generate_returns_the_flat_tokens_and_the_smooth_fhat():
    model, run = tiny(), fixture("var_infer.pt")["smooth_k8_p0.9_cfg1.5_seed5"]
    tokens_BL, f_hat = model.generate(torch.tensor([7, 1000]), guidance=1.5, top_k=8, top_p=0.9, more_smooth=True,
                                      generator=torch.Generator().manual_seed(5), return_fhat=True)
    assert tokens_BL.dtype == torch.int64 and torch.equal(tokens_BL, torch.cat(run["idx_per_stage"], dim=1))
    assert max_error(f_hat, run["f_hat"]) <= 1e-5
    # the soft f_hat is not the reconstruction of the sampled ids
    assert max_error(model.quantizer.fhat_from_ids(model.quantizer.split(tokens_BL)), f_hat) > 1e-3


class Recorder:
    """Labels seen by the class embedding and rows entering the first block during generation."""

    def __init__(self, model):
        self.model, self.labels, self.rows = model, [], []

    def __enter__(self):
        self.handles = [
            self.model.class_emb.register_forward_hook(lambda m, i, o: self.labels.append(i[0].clone())),
            self.model.blocks[0].register_forward_pre_hook(lambda m, i: self.rows.append(i[0].shape[0]))]
        return self

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()


def test_guidance_free_sampling_never_evaluates_the_null_class():
    model, labels_B = tiny(), torch.tensor([3, 7, 999])
    with Recorder(model) as rec:
        model.generate(labels_B, guidance=0.0, greedy=True)
    assert len(rec.labels) == 1 and torch.equal(rec.labels[0], labels_B) and rec.rows == [3] * 4
    with Recorder(model) as rec:
        model.generate(labels_B, guidance=2.0, greedy=True)
    assert torch.equal(rec.labels[0], torch.tensor([3, 7, 999, 1000, 1000, 1000])) and rec.rows == [6] * 4


def test_kv_cached_logits_equal_teacher_forcing_on_the_sampled_tokens():
    model, labels_B = tiny(), torch.tensor([5, 17, 1000])
    stages = list(sample_stages(model, labels_B, top_k=8, generator=torch.Generator().manual_seed(11)))
    tokens_BL = torch.cat([s.ids_Bl for s in stages], dim=1)
    with torch.no_grad():
        teacher_BLV = model.logits(tokens_BL, labels_B)
    assert max_error(torch.cat([s.logits_BlV for s in stages], dim=1), teacher_BLV) <= 2e-6


def test_generation_leaves_no_state_restores_the_mode_and_is_seeded():
    model = tiny()
    keys, labels_B = list(model.state_dict()), torch.tensor([1, 2])
    model.train()
    a = model.generate(labels_B, guidance=1.5, top_k=8, top_p=0.9, generator=torch.Generator().manual_seed(7))
    assert model.training and list(model.state_dict()) == keys
    assert not any(isinstance(v, torch.Tensor) for m in model.modules() for v in vars(m).values())
    b = model.generate(labels_B, guidance=1.5, top_k=8, top_p=0.9, generator=torch.Generator().manual_seed(7))
    assert a.shape == (2, 30) and torch.equal(a, b) and int(a.max()) < 32


def test_schedules_temperature_and_errors():
    model, labels_B = tiny(), torch.tensor([7, 42])
    greedy_cfg2 = torch.cat(fixture("var_infer.pt")["greedy_cfg2"]["idx_per_stage"], dim=1)
    linear = model.generate(labels_B, guidance=2.0, schedule="linear", greedy=True)
    constant = model.generate(labels_B, guidance=2.0, schedule="constant", greedy=True)
    assert torch.equal(linear, greedy_cfg2) and not torch.equal(constant, linear)
    cold = model.generate(labels_B, temperature=1e-4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(cold, model.generate(labels_B, greedy=True))
    with pytest.raises(ValueError, match="schedule"):
        model.generate(labels_B, schedule="cosine")
    with pytest.raises(AlignkitError, match="null class 1000"):
        model.generate(torch.tensor([1001]))


def test_top_k_then_top_p_keeps_what_the_full_sort_keeps():
    """The shared filter's fast path (nucleus cut from top-k's sorted survivors) against the same
    filter applied in two passes, the second sorting the whole vocabulary."""
    from alignkit.sample.tokens import filter_logits

    generator = torch.Generator().manual_seed(0)
    logits_NV = torch.randn(512, 4096, generator=generator) * 2
    for top_k, top_p in ((900, 0.96), (8, 0.9), (1, 0.5), (4095, 0.3)):
        two_pass_NV = filter_logits(filter_logits(logits_NV, top_k), 0, top_p)
        assert torch.equal(filter_logits(logits_NV, top_k, top_p), two_pass_NV), (top_k, top_p)
    tied_NV = (logits_NV * 2).round()  # ties at the k-th value: the slow path, same result
    kept_fast = torch.isfinite(filter_logits(tied_NV, 900, 0.96)).sum(-1)
    assert torch.equal(kept_fast, torch.isfinite(filter_logits(filter_logits(tied_NV, 900), 0, 0.96)).sum(-1))
