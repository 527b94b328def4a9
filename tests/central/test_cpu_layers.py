"""Fused Llama layers compute what Hugging Face's compute, and a decode step's row is bit
for bit what it is alone, whatever else shares the batch (`central.cpu_layers`)."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from central.batch import DecodeBatch, Joining
from central.cpu_layers import fusable, fuse_llama_layers
from central.decoding import full_cache, new_cache
from central.forward import Forward, cache_argument
from central.model import INT8_FORMATS, load_model


def _pair(tiny_checkpoint):
    stock = load_model(str(tiny_checkpoint), weights="dense")
    fused = load_model(str(tiny_checkpoint), weights="dense")
    assert fuse_llama_layers(fused.model) == 4
    return stock, fused


def test_fused_layers_equal_hugging_faces_on_prefill_and_decode(tiny_checkpoint) -> None:
    stock, fused = _pair(tiny_checkpoint)
    assert not hasattr(fused.model.model.layers[0].self_attn, "q_proj")  # one copy of each
    ids = torch.tensor([stock.tokenizer("The fused layer computes the same.")["input_ids"]] * 3)
    step = torch.tensor([[5], [6], [7]])
    outputs = []
    with torch.inference_mode():
        for model in (stock.model, fused.model):
            cache = new_cache(model)
            name = cache_argument(model)  # past_key_values or cache, per transformers version
            prefill = model(ids, **{name: cache})
            outputs.append((prefill, model(step, **{name: cache}, output_hidden_states=True)))
    (want_prefill, want), (got_prefill, got) = outputs
    torch.testing.assert_close(got_prefill.logits, want_prefill.logits, atol=1e-5, rtol=1e-4)
    for layer in range(len(want.hidden_states)):
        torch.testing.assert_close(got.hidden_states[layer], want.hidden_states[layer])
    torch.testing.assert_close(got.logits, want.logits, atol=1e-5, rtol=1e-4)


def _padded_step(model, rows: list[list[int]], fed: list[int]) -> torch.Tensor:
    """Prefills `rows` right-aligned behind left padding, then one step; the last logits."""
    width = max(len(r) for r in rows)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    ids = torch.tensor([[0] * (width - len(r)) + r for r in rows])
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    cache = {cache_argument(model): new_cache(model)}
    model(input_ids=ids, attention_mask=mask, position_ids=positions, **cache)
    out = model(
        input_ids=torch.tensor([[t] for t in fed]),
        attention_mask=torch.cat([mask, torch.ones(len(rows), 1, dtype=torch.long)], 1),
        position_ids=torch.tensor([[len(r)] for r in rows]),
        **cache,
    )
    return out.logits[:, -1]


def test_a_decode_step_is_the_same_alone_and_beside_longer_rows(tiny_checkpoint) -> None:
    # int8 linears round every input to 1/127 of its range, so a float-rounding difference
    # in attention would grow into a different token; the fused step has none, whatever
    # padding the longer rows put before ours.
    loaded = load_model(str(tiny_checkpoint))
    ours = loaded.tokenizer("a short prompt")["input_ids"]
    with torch.inference_mode():
        alone = _padded_step(loaded.model, [ours, ours], [9, 9])
        for extra in range(1, 40, 3):
            longer = ours + list(range(20, 20 + extra))
            beside = _padded_step(loaded.model, [longer, ours, ours, ours[:3]], [4, 9, 9, 8])
            assert torch.equal(beside[1], alone[0]) and torch.equal(beside[2], alone[1]), extra


def _joined_step(loaded, requests: list[tuple[list[int], int]]) -> list[torch.Tensor]:
    """As the engine runs them: each request (prompt, rows) prefilled alone, then all join
    one `DecodeBatch` and take a step (each row fed token 9). Returns what each layer's
    attention computed in that step (the input of its output projection), then the logits,
    each by row: int8 linears round small differences in the attention away, mostly."""
    forward, batch, joining = Forward(loaded), DecodeBatch(loaded), []
    for prompt, rows in requests:
        cache = full_cache(loaded.model)
        forward(torch.tensor([prompt]), cache)
        joining.append(Joining(cache, len(prompt), rows, [9] * rows))
    batch.join(joining)
    attended: list[torch.Tensor] = []
    hooks = [
        layer.self_attn.o_proj.register_forward_pre_hook(
            lambda _, args: attended.append(args[0][:, -1].clone())
        )
        for layer in loaded.model.model.layers
    ]
    try:
        out, _ = batch.step(forward)
    finally:
        for hook in hooks:
            hook.remove()
    assert out.logits is not None
    return [*attended, out.logits]


@pytest.mark.parametrize("weights", ["dense", *INT8_FORMATS])
def test_rows_sharing_an_attention_call_are_the_same_alone_on_two_threads(
    served_tiny, two_torch_threads, weights
) -> None:
    # Our rows and another request's, histories of one length, attend in one call. PyTorch's
    # CPU attention gives each thread a scratch slice whose alignment MKL rounds by, so on
    # two threads a row's bits depended on how many rows shared its call (and which thread
    # took it); odd history lengths misalign the slices at the tiny model's shapes.
    loaded = served_tiny(weights)
    ours = loaded.tokenizer("a short prompt")["input_ids"]
    with torch.inference_mode():
        for extra in range(1, 16, 2):
            mine = ours + list(range(20, 20 + extra))
            theirs = [(t + 7) % 300 + 3 for t in mine]  # another request, as long as ours
            longer = [*theirs, 5, 6, 7]  # starts earlier: ours is not the batch's first column
            for k in (1, 3):
                alone = _joined_step(loaded, [(mine, k)])
                beside = _joined_step(loaded, [(longer, 1), (mine, k), (theirs, 2)])
                for layer, (got, want) in enumerate(zip(beside, alone, strict=True)):
                    assert torch.equal(got[1 : 1 + k], want), (weights, extra, k, layer)


def test_a_fused_model_can_be_copied(tiny_checkpoint) -> None:
    _, fused = _pair(tiny_checkpoint)
    twin = copy.deepcopy(fused.model)
    ids = torch.tensor([fused.tokenizer("copies compute alike")["input_ids"]])
    with torch.inference_mode():
        assert torch.equal(twin(ids).logits, fused.model(ids).logits)


def test_other_attention_kernels_keep_hugging_faces_layers() -> None:
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        attn_implementation="eager",
    )
    model = LlamaForCausalLM(config).eval()
    assert not fusable(model)
    assert fuse_llama_layers(model) == 0
