"""Int8 linears: close to fp32, each row quantised alone, and a model loads, smooths,
caches and reloads them (`central.quantized`, `load_model(weights=...)`)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from central._errors import ModelLoadError
from central.cpu_layers import fuse_llama_layers
from central.decoding import PackedLinear, new_cache, pack_linears
from central.model import AUTO_CPU_FORMAT, INT8_FORMATS, WEIGHT_FORMATS, load_model
from central.quantized import (
    INT8,
    INT8_UPPER,
    Int8Linear,
    int8_usable,
    linear_parameters_by_kind,
    linear_weight_bytes,
    load_int8,
    save_int8,
    smooth_activations,
)

pytestmark = pytest.mark.skipif(not int8_usable(), reason="fbgemm's int8 kernel is unusable here")


def _linear(rows: int, columns: int, bias: bool = True) -> nn.Linear:
    torch.manual_seed(1)
    return nn.Linear(columns, rows, bias=bias)


def test_an_int8_linear_is_close_to_fp32() -> None:
    linear = _linear(96, 80)
    x = torch.randn(5, 7, 80)
    with torch.inference_mode():
        want, got = linear(x), Int8Linear.from_linear(linear)(x)
    assert got.shape == want.shape == (5, 7, 96)
    assert float((got - want).norm() / want.norm()) < 0.02


def test_each_row_is_quantised_alone_so_batching_changes_nothing() -> None:
    # fbgemm's dynamic linear quantises its whole input with one range: without the
    # pinned range columns, the outlier row would coarsen every other row's rounding.
    quantized = Int8Linear.from_linear(_linear(64, 48))
    x = torch.randn(9, 48)
    x[4] *= 300.0
    x[7] = 0.0  # an all-zero row divides by the floor, not by zero
    with torch.inference_mode():
        batched = quantized(x)
        alone = torch.cat([quantized(x[i : i + 1]) for i in range(len(x))])
    assert torch.equal(batched, alone)
    assert torch.isfinite(batched).all()


def test_the_int8_values_round_trip() -> None:
    linear = _linear(32, 24)
    quantized = Int8Linear.from_linear(linear)
    weight, scales = quantized.int8_weight()
    assert weight.dtype == torch.int8 and weight.shape == (32, 24) and scales.shape == (32,)
    torch.testing.assert_close(weight.float() * scales[:, None], linear.weight, atol=0.01, rtol=0)
    rebuilt = Int8Linear(weight, scales, linear.bias)
    x = torch.randn(3, 24)
    with torch.inference_mode():
        assert torch.equal(rebuilt(x), quantized(x))


def test_smoothing_keeps_the_function_and_its_features(tiny_checkpoint) -> None:
    loaded = load_model(str(tiny_checkpoint), weights="dense")
    model = loaded.model
    fuse_llama_layers(model)
    before = copy.deepcopy(model)
    ids = loaded.tokenizer("A calibration sentence about the sea.")["input_ids"]
    assert smooth_activations(model, ids) == 4
    probe = torch.tensor([loaded.tokenizer("Something else entirely, 12345")["input_ids"]])
    with torch.inference_mode():
        want = before(probe, output_hidden_states=True)
        got = model(probe, output_hidden_states=True)
    for layer in range(len(want.hidden_states)):  # the states between layers are unchanged
        torch.testing.assert_close(got.hidden_states[layer], want.hidden_states[layer])
    torch.testing.assert_close(got.logits, want.logits, atol=1e-4, rtol=1e-4)
    changed = (
        model.model.layers[0].input_layernorm.weight
        != before.model.layers[0].input_layernorm.weight
    )
    assert changed.any()  # it did move range into the weights


def test_load_model_quantises_by_default_on_the_cpu(tiny_checkpoint, tmp_path: Path) -> None:
    dense = load_model(str(tiny_checkpoint), weights="dense", cache_dir=tmp_path)
    int8 = load_model(str(tiny_checkpoint), cache_dir=tmp_path)
    assert (dense.weights_format, int8.weights_format) == ("float32", INT8)
    assert int8.weights_sha256 == dense.weights_sha256  # the format is reported beside it
    assert not [m for m in int8.model.modules() if isinstance(m, nn.Linear)]
    assert any(isinstance(m, Int8Linear) for m in int8.model.modules())
    assert linear_weight_bytes(int8.model) * 3.9 < linear_weight_bytes(dense.model)
    ids = torch.tensor([dense.tokenizer("Hidden states stay close to fp32.")["input_ids"]])
    with torch.inference_mode():
        want = dense.model(ids, output_hidden_states=True).hidden_states
        got = int8.model(ids, output_hidden_states=True).hidden_states
    for layer in (1, 2, 3, 4):
        cosine = torch.nn.functional.cosine_similarity(got[layer], want[layer], dim=-1)
        assert cosine.min() > 0.98, (layer, cosine)


def test_the_prepared_weights_are_cached_and_reused(tiny_checkpoint, tmp_path: Path) -> None:
    first = load_model(str(tiny_checkpoint), cache_dir=tmp_path)
    (prepared,) = (tmp_path / "prepared").iterdir()
    assert prepared.name.endswith("-int8-v1.safetensors")
    again = load_model(str(tiny_checkpoint), cache_dir=tmp_path)
    ids = torch.tensor([first.tokenizer("the same weights, bit for bit")["input_ids"]])
    with torch.inference_mode():
        assert torch.equal(first.model(ids).logits, again.model(ids).logits)


def test_a_prepared_file_that_does_not_fit_is_ignored(tiny_checkpoint, tmp_path: Path) -> None:
    want = load_model(str(tiny_checkpoint), cache_dir=tmp_path / "fresh")
    prepared = tmp_path / "prepared" / "x.safetensors"
    prepared.parent.mkdir()
    prepared.write_bytes(b"not safetensors at all")
    dense = load_model(str(tiny_checkpoint), weights="dense")
    fuse_llama_layers(dense.model)
    assert not load_int8(dense.model, prepared)
    assert any(isinstance(m, nn.Linear) for m in dense.model.modules())  # untouched
    save_int8(want.model, prepared)
    other = load_model(str(tiny_checkpoint), weights="dense")
    assert not load_int8(other.model, prepared)  # not fused: its linears do not match
    fuse_llama_layers(other.model)
    assert load_int8(other.model, prepared)
    ids = torch.tensor([want.tokenizer("rebuilt from the file")["input_ids"]])
    with torch.inference_mode():
        assert torch.equal(other.model(ids).logits, want.model(ids).logits)


def test_a_tied_lm_head_gets_its_own_int8_copy(tiny_checkpoint) -> None:
    loaded = load_model(str(tiny_checkpoint), weights="dense")
    model = loaded.model
    model.lm_head.weight = model.get_input_embeddings().weight  # tie them, as SmolLM2 does
    table = model.get_input_embeddings().weight.detach().clone()
    from central.quantized import quantize_linears

    quantize_linears(model)
    assert isinstance(model.lm_head, Int8Linear)
    assert torch.equal(model.get_input_embeddings().weight, table)  # the table stays fp32


def test_unknown_or_impossible_formats_are_refused(tiny_checkpoint) -> None:
    with pytest.raises(ModelLoadError, match="auto, dense, int8, int8-upper"):
        load_model(str(tiny_checkpoint), weights="int4")
    for weights in (INT8, INT8_UPPER):
        with pytest.raises(ModelLoadError, match="float32"):
            load_model(str(tiny_checkpoint), weights=weights, dtype="bfloat16")
    assert load_model(str(tiny_checkpoint), dtype="bfloat16").weights_format == "bfloat16"


def test_auto_keeps_other_architectures_dense(tiny_checkpoint, tmp_path: Path, caplog) -> None:
    # Only the layers central.cpu_layers runs attend bit-identically alone or batched;
    # int8 rounding would turn other layers' rounding differences into other tokens.
    import shutil

    from transformers import Qwen2Config, Qwen2ForCausalLM

    directory = tmp_path / "tiny-qwen2"
    shutil.copytree(tiny_checkpoint, directory)
    for weights in directory.glob("*.safetensors"):
        weights.unlink()
    config = Qwen2Config(
        vocab_size=400, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
    )  # fmt: skip
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(directory)
    assert load_model(str(directory), cache_dir=tmp_path / "cache").weights_format == "float32"
    forced = load_model(str(directory), weights="int8", cache_dir=tmp_path / "cache")
    assert forced.weights_format == INT8 and "batch-invariant" in caplog.text


def _served(tiny_checkpoint: Path, weights: str, cache: Path) -> Any:
    """The tiny model as `ranker-central serve --weights <weights>` prepares it."""
    loaded = load_model(str(tiny_checkpoint), weights=weights, cache_dir=cache)
    pack_linears(loaded.model)
    return loaded


def _states(loaded: Any, ids: list[int]) -> list[torch.Tensor]:
    """Every hidden state of a prompt pass, then of one decode step (a lone row) after it."""
    cache = new_cache(loaded.model)
    with torch.inference_mode():
        prompt = loaded.model(torch.tensor([ids[:-1]]), cache=cache, output_hidden_states=True)
        step = loaded.model(torch.tensor([ids[-1:]]), cache=cache, output_hidden_states=True)
    return [*prompt.hidden_states, *step.hidden_states]


def test_int8_upper_keeps_the_dense_features_bit_for_bit(tiny_checkpoint, tmp_path: Path) -> None:
    # Below the boundary nothing is smoothed or quantised: the same fused layers run the
    # same packed fp32 kernels on the same weights in the same order, so the hidden states
    # rankers read are equal exactly, not merely close; only the layers above (and so the
    # sampling distribution) move.
    dense = _served(tiny_checkpoint, "dense", tmp_path)
    upper = _served(tiny_checkpoint, INT8_UPPER, tmp_path)
    boundary = round(0.6 * upper.num_layers)  # the default feature layer: 2 of 4
    assert upper.weights_format == f"int8-upper@{boundary}" == "int8-upper@2"
    assert upper.weights_sha256 == dense.weights_sha256
    layers = upper.model.model.layers
    below = [m for layer in layers[:boundary] for m in layer.modules()]
    above = [m for layer in layers[boundary:] for m in layer.modules()]
    assert sum(isinstance(m, PackedLinear) for m in below) == 4 * boundary
    assert not any(isinstance(m, Int8Linear) for m in below)
    assert sum(isinstance(m, Int8Linear) for m in above) == 4 * (4 - boundary)
    assert isinstance(upper.model.lm_head, Int8Linear)
    ids = dense.tokenizer("The features below the boundary are the dense ones.")["input_ids"]
    want, got = _states(dense, ids), _states(upper, ids)
    per_pass = upper.num_layers + 1
    for index, (a, b) in enumerate(zip(want, got, strict=True)):
        layer = index % per_pass
        assert torch.equal(a, b) == (layer <= boundary), layer
    assert linear_weight_bytes(upper.model) < linear_weight_bytes(dense.model)
    kinds, total = linear_parameters_by_kind(upper.model), linear_weight_bytes(dense.model) // 4
    assert set(kinds) == {"int8", "dense"} and sum(kinds.values()) == total
    assert linear_weight_bytes(upper.model) == 4 * kinds["dense"] + kinds["int8"]


def test_each_format_has_its_own_prepared_file(tiny_checkpoint, tmp_path: Path) -> None:
    upper = load_model(str(tiny_checkpoint), weights=INT8_UPPER, cache_dir=tmp_path)
    int8 = load_model(str(tiny_checkpoint), weights=INT8, cache_dir=tmp_path)
    names = sorted(p.name for p in (tmp_path / "prepared").iterdir())
    stem = f"{upper.name}-{upper.weights_sha256[:16]}"  # keyed on the weights and the format
    assert names == [f"{stem}-int8-upper@2-v1.safetensors", f"{stem}-int8-v1.safetensors"]
    upper_file, int8_file = (tmp_path / "prepared" / name for name in names)
    # the dense layers are left to the checkpoint: the file holds less than the int8 one
    assert upper_file.stat().st_size < int8_file.stat().st_size
    again = load_model(str(tiny_checkpoint), weights=INT8_UPPER, cache_dir=tmp_path)
    ids = torch.tensor([upper.tokenizer("read back from the cache")["input_ids"]])
    with torch.inference_mode():
        assert torch.equal(again.model(ids).logits, upper.model(ids).logits)
        assert not torch.equal(again.model(ids).logits, int8.model(ids).logits)
    other = load_model(str(tiny_checkpoint), weights="dense")
    fuse_llama_layers(other.model)
    assert not load_int8(other.model, upper_file)  # an int8-upper file is not int8 weights
    assert load_int8(other.model, upper_file, from_layer=2)


def test_the_torch_free_format_lists_spell_the_quantised_formats() -> None:
    assert INT8_FORMATS == (INT8, INT8_UPPER)
    assert set(INT8_FORMATS) < set(WEIGHT_FORMATS) and AUTO_CPU_FORMAT in INT8_FORMATS


def test_auto_picks_the_cpu_format(tiny_checkpoint, tmp_path: Path) -> None:
    loaded = load_model(str(tiny_checkpoint), cache_dir=tmp_path)
    want = INT8 if AUTO_CPU_FORMAT == INT8 else f"{AUTO_CPU_FORMAT}@2"
    assert loaded.weights_format == want
