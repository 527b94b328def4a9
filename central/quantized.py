"""Int8 linears: the weight format a CPU decodes fastest (CPU only).

A decode step reads every weight of the model once, whatever K, so at the
K an interactive app asks for (1-8) a step costs about as long as that read:
SmolLM2-135M holds 538 MB of fp32 linear weights (its LM head included), 135
MB in int8. The ``int8`` format stores each linear's weight as int8, one
scale per output channel (symmetric, absmax / 127), and quantises each input
row on the fly with its own scale, so the products run as int8 x int8 -> int32
in fbgemm, the kernel PyTorch's dynamic quantisation uses (written for AVX2,
with AVX-512 paths). Embeddings, norms, attention, the KV cache and every
feature stay fp32.

Why these choices, measured on one thread of this machine (AMD EPYC,
AVX-512), per linear of SmolLM2's shapes:

- fbgemm's int8 product is 2-3x faster than oneDNN's packed fp32 one at every
  batch size from 1 to 64 rows, the LM head (49152 x 576) included;
- torch's weight-only int8/int4 kernels (``_weight_int8pack_mm``,
  ``_weight_int4pack_mm_for_cpu``) are vectorised for bf16 inputs only (fp32
  inputs run 10-30x slower than fp32 oneDNN), and even in bf16 they fall
  behind fp32 oneDNN from ~16 rows up; oneDNN's ``qlinear_pointwise`` ran
  a reference path here (250x slower); fp8 ``_scaled_mm`` ~100x slower;
- fbgemm's dynamic linear quantises its whole input with one range, which
  would make a row's result depend on the other rows of the batch (a seeded
  request must get the same tokens whatever shares the decode step). So each
  row is scaled to [-127, 127] by its own absmax and handed to fbgemm's
  linear with a fixed input scale (1) and zero point: every row is quantised
  alone, and the integer products are exact, so a row's output is
  bit-identical alone or batched, on any number of threads (`Int8Linear`
  checks this once per process before it is used). It is also 10-30%
  faster than the dynamic linear, which spends a pass finding the range.

Quantising activations costs more accuracy than quantising weights, because a
few hidden channels carry values ~100x the others and set each row's scale.
`smooth_activations` first moves that range from the activations into the
weights (SmoothQuant, arXiv 2211.10438, alpha 0.5): each input channel c of a
linear is divided by s_c and its weight column multiplied by s_c, with the
division folded into what produces the input (the RMS norm's weight before
q/k/v and gate/up, v's rows before o, up's rows before down), so nothing is
added at run time and the hidden states between layers, where features are
read, are unchanged. On SmolLM2-135M (a greedy continuation of 80 tokens),
against fp32: plain int8 gave feature-layer cosine 0.9977 and next-token
KL 0.037; smoothed, 0.9990 and 0.015 (weights alone in int8: 0.9998, 0.003;
all of it in bf16: 0.99994, 0.001). The scales are rounded to powers of two,
so the fold is exact and a slightly different calibration pass (another
thread count, another CPU) rarely changes one.

The ``int8-upper`` format (`INT8_UPPER`) quantises only the decoder layers
from the feature layer B up and the LM head: the layers below are the dense
format's (fused, oneDNN-packed fp32, not smoothed), so every hidden state a
ranker reads at layer B or below is the dense one bit for bit, and a step
reads 326 MB of SmolLM2's weights (255 fp32 + 71 int8) instead of 538 or 135.

The kernel comes from ``torch.ao`` quantisation, which PyTorch has marked for
removal in favour of torchao (whose CPU wheel has no such kernel yet);
`int8_usable` probes it, and ``--weights auto`` falls back to dense weights,
with a log line, where it is missing or wrong.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .cpu_layers import decoder_layers, is_fused
from .decoding import PackedLinear

__all__ = [
    "CALIBRATION_TEXT",
    "INT8",
    "INT8_UPPER",
    "PREPARED_VERSION",
    "Int8Linear",
    "int8_upper_format",
    "int8_usable",
    "linear_parameters_by_kind",
    "linear_weight_bytes",
    "linear_weights",
    "load_int8",
    "quantize_linears",
    "save_int8",
    "smooth_activations",
]

log = logging.getLogger(__name__)

INT8 = "int8"  # the format's name, as Info reports it (central.model.LoadedModel.weights_format)
# Int8 only above the feature layer: layers 0..B-1 (and so the hidden states 0..B rankers
# read) stay dense fp32, the layers from B up and the LM head are int8. Reported with its
# boundary B (`int8_upper_format`), since a deeper layer's features are partly int8.
INT8_UPPER = "int8-upper"
# Version of what `save_int8` writes: bump it when the calibration text, the smoothing or
# the quantisation changes, so that int8 weights prepared before are not reused.
PREPARED_VERSION = 1

_ROW_LIMIT = 127.0  # each row is scaled so that its largest magnitude is this
_ZERO_POINT = 128  # fbgemm's inputs are uint8: a scaled row's 0 is 128, its -127..127 are 1..255
_TINY = 1e-30  # floor of a row's absmax, so an all-zero row divides by something

_USABLE: bool | None = None  # probed once: does the int8 kernel exist and behave here?


def int8_upper_format(boundary: int) -> str:
    """The `INT8_UPPER` format whose first `boundary` decoder layers, and so hidden states
    0..`boundary`, are dense: "int8-upper@18"."""
    return f"{INT8_UPPER}@{boundary}"


@contextmanager
def _quiet_deprecation() -> Iterator[None]:
    # torch warns that quantized tensor types are deprecated (pytorch#184982) each time
    # one is created; we create one per linear at load, and say so in the docstring.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*quantize_per_channel.*", category=UserWarning)
        warnings.filterwarnings("ignore", message=".*quantized tensor.*", category=UserWarning)
        yield


class Int8Linear(nn.Module):
    """An `nn.Linear` with int8 weights (one scale per output channel) and int8 inputs
    (one scale per row), computed by fbgemm; the output is fp32.

    Holds only the packed int8 weight (a quarter of the fp32 bytes) and the
    bias. Inference only: it has no gradient and no weight parameter; its
    int8 values are read back with `int8_weight`.
    """

    def __init__(
        self, weight: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None
    ) -> None:
        """`weight` (out, in) int8, `scales` (out,) fp32: W = weight * scales[:, None]."""
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.packed = _pack(weight, scales)
        self.bias = None if bias is None else nn.Parameter(bias.detach().float().clone(), False)

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> Int8Linear:
        """The int8 form of `linear`: symmetric, absmax / 127 per output channel."""
        weight = linear.weight.detach().float()
        scales = weight.abs().amax(dim=1).clamp_min(_TINY) / 127.0
        quantized = torch.round(weight / scales[:, None]).clamp_(-127, 127).to(torch.int8)
        return cls(quantized, scales, linear.bias)

    def int8_weight(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(weight (out, in) int8, scales (out,) fp32), as given to the constructor."""
        with _quiet_deprecation():
            quantized, _ = torch.ops.quantized.linear_unpack(self.packed)
            weight = quantized.int_repr()
            scales = quantized.q_per_channel_scales().float()
        return weight, scales

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features).float()
        absmax = rows.abs().amax(dim=-1, keepdim=True).clamp_min_(_TINY)
        # fbgemm rounds (row / absmax) / (1 / 127) + 128 to uint8: each row its own scale
        y = _linear_op()(rows / absmax, 1 / _ROW_LIMIT, _ZERO_POINT, self.packed)
        y.mul_(absmax)
        if self.bias is not None:
            y.add_(self.bias)
        return y.view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        shape = f"in_features={self.in_features}, out_features={self.out_features}"
        return f"{shape}, bias={self.bias is not None}, int8"


_LINEAR_OP: Any = None  # the fbgemm op's overload, looked up once (see _linear_op)


def _linear_op() -> Any:
    """fbgemm's linear on fp32 inputs quantised with a given scale and zero point, fp32 out.

    The overload itself: calling it through ``torch.ops.quantized`` (the
    overload packet) checks every argument for fake script objects in Python
    first, a few microseconds on each of a step's ~120 calls.
    """
    global _LINEAR_OP
    if _LINEAR_OP is None:
        _LINEAR_OP = torch.ops.quantized.linear_with_input_q_dq_qweight_dq_output_fp32.default
    return _LINEAR_OP


def _pack(weight: torch.Tensor, scales: torch.Tensor) -> Any:
    """fbgemm's packed form of int8 `weight` (out, in) with its per-row scales."""
    zero_points = torch.zeros(weight.shape[0], dtype=torch.long)
    with _quiet_deprecation():
        quantized = torch._make_per_channel_quantized_tensor(
            weight.contiguous(), scales.double(), zero_points, 0
        )
        return torch.ops.quantized.linear_prepack(quantized, None)


def int8_usable() -> bool:
    """True when the int8 kernel exists here, is close to fp32 and batch-invariant.

    Probed once per process on random data: the product must be within 3% of
    fp32 (relative norm) and each row's output must be bit-identical alone and
    batched with a row 100x larger.
    """
    global _USABLE
    if _USABLE is None:
        _USABLE = _probe()
        if not _USABLE:
            log.info("int8 linears are unusable here (fbgemm's dynamic linear); dense weights")
    return _USABLE


def _probe() -> bool:
    generator = torch.Generator().manual_seed(0)
    try:
        with torch.inference_mode():
            linear = nn.Linear(64, 48)
            linear.weight.copy_(torch.randn(48, 64, generator=generator))
            quantized = Int8Linear.from_linear(linear)
            x = torch.randn(6, 64, generator=generator)
            x[2] *= 100.0
            want, got = linear(x), quantized(x)
            close = float((got - want).norm() / want.norm()) < 0.03
            alone = torch.cat([quantized(x[i : i + 1]) for i in range(len(x))])
            return close and torch.equal(alone, got)
    except (AttributeError, NotImplementedError, RuntimeError):
        return False


def quantize_linears(model: nn.Module, from_layer: int = 0) -> int:
    """Replaces each fp32 CPU `nn.Linear` of `model` by an `Int8Linear`; returns how many.

    The linears of decoder layers below `from_layer` stay dense (the
    `INT8_UPPER` format); those of the layers above, the LM head and any
    other linear are quantised. A weight shared with an embedding (an LM head
    tied to the input embeddings) is quantised into the head's own int8 copy
    and the embedding keeps its fp32 table: the head is read whole every step
    (113 MB of SmolLM2's 538 in fp32), the embedding only one row per token.
    The model is then for inference only (see `Int8Linear`). Subclasses of
    `nn.Linear` (adapters, say) are left alone.
    """
    dense = _lower_layer_modules(model, from_layer)
    replaced = 0
    for name, module in list(model.named_modules()):
        if type(module) is not nn.Linear or module.weight.device.type != "cpu":
            continue
        if module.weight.dtype != torch.float32 or id(module) in dense:
            continue
        parent, _, attribute = name.rpartition(".")
        setattr(model.get_submodule(parent), attribute, Int8Linear.from_linear(module))
        replaced += 1
    if replaced:
        _untie(model)
    return replaced


def _lower_layer_modules(model: nn.Module, from_layer: int) -> set[int]:
    """The ids of every module inside the decoder layers below `from_layer`."""
    return {id(m) for layer in decoder_layers(model)[:from_layer] for m in layer.modules()}


def _untie(model: Any) -> None:
    """Records that the LM head no longer shares the embedding's weight.

    Hugging Face re-ties `lm_head.weight` to the embeddings when asked
    (`tie_weights`); with an `Int8Linear` head there is nothing to tie.
    """
    config = getattr(model, "config", None)
    if config is not None and getattr(config, "tie_word_embeddings", False):
        config.tie_word_embeddings = False


def linear_weights(model: nn.Module) -> Iterator[tuple[str, int, int]]:
    """(kind, weights, bytes per weight) of each linear of `model`, as a decode step reads it.

    The kind is "int8" for an `Int8Linear` (one byte a weight; its scales and
    range columns are under 2% more) and "dense" for the others: a packed fp32
    linear (`central.decoding.PackedLinear`) 4 bytes a weight, a plain one its
    element size.
    """
    for module in model.modules():
        if isinstance(module, Int8Linear):
            yield "int8", module.in_features * module.out_features, 1
        elif isinstance(module, PackedLinear):
            yield "dense", module.in_features * module.out_features, 4
        elif isinstance(module, nn.Linear):
            yield "dense", module.weight.numel(), module.weight.element_size()


def linear_weight_bytes(model: nn.Module) -> int:
    """Bytes of linear weights one decode step reads: each linear once, in its format."""
    return sum(weights * size for _, weights, size in linear_weights(model))


def linear_parameters_by_kind(model: nn.Module) -> dict[str, int]:
    """The linears' weights by kind ("int8", "dense"), kinds the model has only."""
    counts: dict[str, int] = {}
    for kind, weights, _ in linear_weights(model):
        counts[kind] = counts.get(kind, 0) + weights
    return counts


# What `smooth_activations` runs through the model to find each channel's range: a
# little of each kind of text the service sees (chat, reasoning, code, reviews, JSON).
# Part of the int8 format: changing it changes the weights, so it is fixed.
CALIBRATION_TEXT = (
    "<|im_start|>user\nWhich number is larger, 47 or 74? Reply with only the number.<|im_end|>\n"
    "<|im_start|>assistant\n74<|im_end|>\n"
    "<|im_start|>user\nA shop sells pens at 3 dollars each. How much do 12 pens cost? Think "
    "step by step.<|im_end|>\n<|im_start|>assistant\nEach pen costs 3 dollars, so 12 pens "
    "cost 12 * 3 = 36 dollars. The answer is 36.<|im_end|>\n"
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + "
    "fibonacci(n - 2)\n\n"
    'Review: "The plot was slow, but the acting was wonderful and the ending moved me." '
    "Sentiment: positive.\n"
    '{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}\n'
    "The sea was calm that morning. Gulls circled over the harbour while the fishing boats "
    "returned, their decks heavy with the night's catch."
)
_SMOOTHING_ALPHA = 0.5  # SmoothQuant's migration strength: half the range moves to the weights


def smooth_activations(model: Any, calibration_ids: list[int], from_layer: int = 0) -> int:
    """Folds SmoothQuant scales into a fused Llama model's weights; returns the layers smoothed.

    Runs `calibration_ids` through the model once (fp32) to find each
    linear's largest input per channel, then rescales as the module
    docstring says, in the decoder layers from `from_layer` up (those
    below keep their weights bit for bit). The model computes the same
    function afterwards (up to float rounding); only its int8 rounding
    improves. The layers must have been fused (`cpu_layers.fuse_llama_layers`);
    other models are left alone (0).
    """
    layers = [layer for layer in decoder_layers(model) if is_fused(layer)]
    if not layers or len(layers) != len(decoder_layers(model)):
        return 0
    layers = layers[from_layer:]
    if not layers:
        return 0
    ranges = _input_ranges(model, layers, calibration_ids)
    with torch.no_grad():
        for layer in layers:
            attention, mlp = layer.self_attn, layer.mlp
            qkv, gate_up, down = attention.qkv_proj, mlp.gate_up_proj, mlp.down_proj
            _fold(qkv, _scales(ranges[qkv], qkv.weight), layer.input_layernorm)
            _fold(gate_up, _scales(ranges[gate_up], gate_up.weight), layer.post_attention_layernorm)
            up_rows = slice(down.in_features, None)  # gate_up's rows: gate, then up
            _fold(down, _scales(ranges[down], down.weight), gate_up, rows=up_rows)
            _smooth_output_projection(attention, ranges[attention.o_proj])
    return len(layers)


def _input_ranges(
    model: Any, layers: list[Any], calibration_ids: list[int]
) -> dict[nn.Module, torch.Tensor]:
    """The largest |input| per channel each of the layers' linears saw on the calibration text."""
    ranges: dict[nn.Module, torch.Tensor] = {}

    def record(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        seen = args[0].detach().abs().reshape(-1, args[0].shape[-1]).amax(dim=0).float()
        ranges[module] = torch.maximum(ranges[module], seen) if module in ranges else seen

    handles = []
    for layer in layers:
        attention, mlp = layer.self_attn, layer.mlp
        for linear in (attention.qkv_proj, attention.o_proj, mlp.gate_up_proj, mlp.down_proj):
            handles.append(linear.register_forward_pre_hook(record))
    try:
        with torch.inference_mode():
            model(input_ids=torch.tensor([calibration_ids]), use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    return ranges


def _scales(input_range: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """One scale per input channel of `weight` (out, in)."""
    return _power_of_two_scale(input_range, weight.abs().amax(dim=0))


def _power_of_two_scale(input_range: torch.Tensor, weight_range: torch.Tensor) -> torch.Tensor:
    """SmoothQuant's s = range^a / max|W|^(1-a), rounded to the nearest power of two."""
    ratio = input_range.clamp_min(1e-5) ** _SMOOTHING_ALPHA
    ratio = ratio / weight_range.float().clamp_min(1e-5) ** (1 - _SMOOTHING_ALPHA)
    return torch.exp2(torch.round(torch.log2(ratio.clamp_min(1e-5))))


def _fold(linear: Any, scale: torch.Tensor, into: Any, rows: slice | None = None) -> None:
    """Multiplies the linear's input columns by `scale` and divides what feeds them by it.

    `into` is the RMS norm before the linear (its weight, one value per
    channel), or the linear whose output rows `rows` it reads.
    """
    _set(linear, "weight", linear.weight * scale.to(linear.weight.dtype))
    if rows is None:
        _set(into, "weight", into.weight / scale.to(into.weight.dtype))
    else:
        _fold_rows(into, scale, rows)


def _set(module: Any, name: str, value: torch.Tensor) -> None:
    # New tensors rather than in-place updates: loaded weights may view a read-only mapping.
    setattr(module, name, nn.Parameter(value.detach(), requires_grad=False))


def _smooth_output_projection(attention: Any, input_range: torch.Tensor) -> None:
    """Smooths o_proj's input (the attention output) through the value rows of qkv_proj.

    Attention mixes the values linearly, so dividing value channel (kv head i,
    dim j) by s scales the output of every query head of group i at dim j by
    1/s, which o_proj's matching columns undo; one scale per value channel,
    shared by the heads of its group.
    """
    qkv, o_proj = attention.qkv_proj, attention.o_proj
    dim = int(attention.head_dim)
    query_width = o_proj.in_features  # query heads x dim, also o_proj's input
    kv_width = (qkv.out_features - query_width) // 2
    kv_heads = kv_width // dim
    groups = query_width // kv_width
    per_value = input_range.view(kv_heads, groups, dim).amax(dim=1)
    weight_range = o_proj.weight.abs().amax(dim=0).view(kv_heads, groups, dim).amax(dim=1)
    scale = _power_of_two_scale(per_value, weight_range)  # (kv_heads, dim)
    expanded = scale[:, None, :].expand(kv_heads, groups, dim).reshape(-1)
    _set(o_proj, "weight", o_proj.weight * expanded.to(o_proj.weight.dtype))
    value_rows = slice(query_width + kv_width, None)  # qkv's rows: queries, keys, values
    _fold_rows(qkv, scale.reshape(-1), value_rows)


def _fold_rows(linear: Any, divisor: torch.Tensor, rows: slice) -> None:
    """Divides the output rows `rows` of `linear` (and their bias) by `divisor`."""
    weight = linear.weight.clone()
    weight[rows] /= divisor.to(weight.dtype)[:, None]
    _set(linear, "weight", weight)
    if linear.bias is not None:
        bias = linear.bias.clone()
        bias[rows] /= divisor.to(bias.dtype)
        _set(linear, "bias", bias)


def _format_name(from_layer: int) -> str:
    return INT8 if from_layer == 0 else int8_upper_format(from_layer)


def save_int8(model: Any, path: Path, from_layer: int = 0) -> None:
    """Writes what `load_int8` needs to rebuild the prepared int8 `model` (safetensors).

    Each `Int8Linear`'s int8 weight, scales and bias, and every other
    parameter but the input embedding and the decoder layers below
    `from_layer` (which preparing never changes and the dense checkpoint
    already holds): 135 MB for SmolLM2-135M in int8, 71 MB in int8-upper@18.
    Written to a temporary file and renamed, so a reader never sees half of it.
    """
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    for name, module in model.named_modules():
        if isinstance(module, Int8Linear):
            weight, scales = module.int8_weight()
            tensors[f"{name}.int8_weight"], tensors[f"{name}.int8_scales"] = weight, scales
    kept = _kept_parameters(model, from_layer)
    for name, parameter in model.named_parameters():
        if id(parameter) not in kept:
            tensors[name] = parameter.detach().contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        metadata = {"format": _format_name(from_layer), "version": str(PREPARED_VERSION)}
        save_file(tensors, str(staging), metadata=metadata)
        staging.replace(path)
    finally:
        staging.unlink(missing_ok=True)


def load_int8(model: Any, path: Path, from_layer: int = 0) -> bool:
    """Turns dense `model` into the int8 model `save_int8` wrote to `path`; False if it cannot.

    `model` must be the dense model, fused as it was when saved
    (`cpu_layers.fuse_llama_layers`). Nothing is changed unless the file is
    readable, of this version and format (`from_layer` as saved), and names
    exactly the model's linears and parameters with their shapes; then each
    linear from `from_layer` up becomes an `Int8Linear` (packing ~1 s for
    SmolLM2, against ~4 s to calibrate and quantise again).
    """
    from safetensors import SafetensorError
    from safetensors.torch import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            if metadata.get("version") != str(PREPARED_VERSION):
                return False
            if metadata.get("format", INT8) != _format_name(from_layer):
                return False
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    except (OSError, SafetensorError, ValueError, RuntimeError):
        return False
    plan = _plan_int8(model, tensors, from_layer)
    if plan is None:
        return False
    linears, parameters = plan
    embedding = model.get_input_embeddings().weight
    for name, parameter in parameters.items():
        owner, _, attribute = name.rpartition(".")
        setattr(model.get_submodule(owner), attribute, nn.Parameter(parameter, requires_grad=False))
    for name, (weight, scales, bias) in linears.items():
        owner, _, attribute = name.rpartition(".")
        setattr(model.get_submodule(owner), attribute, Int8Linear(weight, scales, bias))
    assert model.get_input_embeddings().weight is embedding
    _untie(model)
    return True


_Int8Parts = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]


def _kept_parameters(model: Any, from_layer: int) -> set[int]:
    """Ids of the parameters a prepared file leaves to the dense checkpoint: the input
    embedding and those of the decoder layers below `from_layer`."""
    kept = {id(model.get_input_embeddings().weight)}
    kept.update(id(p) for layer in decoder_layers(model)[:from_layer] for p in layer.parameters())
    return kept


def _plan_int8(
    model: Any, tensors: dict[str, torch.Tensor], from_layer: int = 0
) -> tuple[dict[str, _Int8Parts], dict[str, torch.Tensor]] | None:
    """What `load_int8` would set, or None when `tensors` do not fit `model` exactly."""
    dense = _lower_layer_modules(model, from_layer)
    linears: dict[str, _Int8Parts] = {}
    for name, module in model.named_modules():
        if type(module) is not nn.Linear or id(module) in dense:
            continue
        weight, scales = tensors.get(f"{name}.int8_weight"), tensors.get(f"{name}.int8_scales")
        bias = tensors.get(f"{name}.bias")
        if weight is None or scales is None or weight.shape != module.weight.shape:
            return None
        if (bias is None) != (module.bias is None):
            return None
        linears[name] = (weight, scales, bias)
    kept = _kept_parameters(model, from_layer)
    parameters: dict[str, torch.Tensor] = {}
    for name, parameter in model.named_parameters():
        owner = name.rpartition(".")[0]
        if owner in linears or id(parameter) in kept:
            continue
        saved = tensors.get(name)
        if saved is None or saved.shape != parameter.shape or saved.dtype != parameter.dtype:
            return None
        parameters[name] = saved
    used = len(parameters) + sum(2 + (parts[2] is not None) for parts in linears.values())
    return (linears, parameters) if linears and used == len(tensors) else None
