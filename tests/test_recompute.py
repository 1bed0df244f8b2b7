"""Selective activation checkpointing (``alignkit.recompute``): what it keeps is in tests/test_plan.py
(measured against ``ModelShape``); here, that its backward runs no matrix product again."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import alignkit

MATMULS = {torch.ops.aten.mm.default, torch.ops.aten.addmm.default, torch.ops.aten.bmm.default}


class CountMatmuls(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls += func in MATMULS
        return func(*args, **(kwargs or {}))


SMALL = {"llamagen": {"dim": 64, "n_layer": 2, "n_head": 4, "vocab_size": 128, "block_size": 16, "num_classes": 10,
                      "multiple_of": 32},
         "var": {"depth": 2, "embed_dim": 64, "num_heads": 4, "num_classes": 10, "V": 128, "Cvae": 8, "ch": 32}}


def build(family: str, mode):
    torch.manual_seed(0)
    model = alignkit.load_policy(family, config={**SMALL[family], "activation_checkpointing": mode})
    if family == "llamagen":
        torch.nn.init.normal_(model.output.weight, std=0.02)  # the official init zeroes the head
    return model.train()


@pytest.mark.parametrize("family", ["llamagen", "var"])
def test_selective_backward_recomputes_no_matrix_product_and_full_recomputes_them_all(family):
    counts, grads = {}, {}
    for mode in (False, "selective", True):
        model = build(family, mode)
        tokens = torch.randint(0, model.vocab_size, (3, model.seq_len))
        labels = torch.randint(0, 10, (3,))
        loss = model(tokens, labels).logsumexp(-1).sum()
        with CountMatmuls() as counter:
            loss.backward()
        counts[mode] = counter.calls
        grads[mode] = [p.grad for p in model.parameters() if p.grad is not None]
    assert counts["selective"] == counts[False]
    assert counts[True] > counts[False]  # the counter sees recomputation when there is some
    assert all(torch.equal(a, b) for a, b in zip(grads[False], grads["selective"]))


@pytest.mark.parametrize("family", ["llamagen", "var"])
def test_the_setting_reads_like_toml_and_a_bad_one_is_one_clear_error(family):
    with pytest.raises(alignkit.AlignkitError) as error:
        alignkit.load_policy(family, config={"activation_checkpointing": "sel"})
    assert str(error.value).count("activation_checkpointing") == 1
    assert 'expected true, false or "selective"' in str(error.value)
    for value, expected in ((True, True), ("false", False), ("selective", "selective")):
        model = build(family, value)
        assert model.config.activation_checkpointing == expected
        assert model.shape().checkpointing == expected
