"""A serving model keeps one copy of each linear weight: oneDNN's packed one."""

from __future__ import annotations

import torch
from torch import nn

from central.decoding import PackedLinear, pack_linears
from central.forward import Forward
from central.model import load_model


def test_packed_linears_compute_what_the_dense_ones_did(tiny_checkpoint) -> None:
    dense = load_model(str(tiny_checkpoint), weights="dense")
    packed = load_model(str(tiny_checkpoint), weights="dense")  # packing rewrites its modules
    dense_bytes = sum(p.numel() * p.element_size() for p in packed.model.parameters())
    replaced = pack_linears(packed.model)
    linears = [m for m in packed.model.modules() if isinstance(m, nn.Linear)]
    assert replaced == sum(isinstance(m, PackedLinear) for m in packed.model.modules()) > 0
    assert linears == []  # the tiny model's LM head is not tied: every linear is packed
    kept_bytes = sum(p.numel() * p.element_size() for p in packed.model.parameters())
    assert kept_bytes < dense_bytes / 2  # the dense weights are gone, not kept beside

    ids = torch.tensor([dense.tokenizer("one copy of the weights")["input_ids"]])
    with torch.inference_mode():
        want = Forward(dense, [2])(ids, None, logits="all")
        got = Forward(packed, [2])(ids, None, logits="all")
    torch.testing.assert_close(got.hidden[2], want.hidden[2], atol=1e-5, rtol=1e-4)
    assert want.logits is not None and got.logits is not None
    torch.testing.assert_close(got.logits, want.logits, atol=1e-5, rtol=1e-4)


def test_a_weight_shared_with_the_embeddings_stays_dense(tiny_checkpoint) -> None:
    loaded = load_model(str(tiny_checkpoint), weights="dense")
    model = loaded.model
    model.lm_head.weight = model.get_input_embeddings().weight  # tie them, as SmolLM2 does
    pack_linears(model)
    assert type(model.lm_head) is nn.Linear
    assert model.lm_head.weight is model.get_input_embeddings().weight


def test_a_lone_row_gets_the_bits_it_gets_in_a_batch() -> None:
    # oneDNN computes a single row of some shapes (SmolLM2's down projection, 1536 -> 576)
    # by a gemv kernel that rounds otherwise than its batched one; int8 layers above would
    # turn that into other tokens for a K=1 request alone and batched.
    torch.manual_seed(3)
    linear = PackedLinear(nn.Linear(1536, 576))
    rows = torch.randn(5, 1, 1536)
    with torch.inference_mode():
        batched = linear(rows)
        for i in range(len(rows)):
            assert torch.equal(linear(rows[i : i + 1]), batched[i : i + 1])
