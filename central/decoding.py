"""The pieces that make one decode step cheap on a CPU, for the sampler.

Profiling the sampler on SmolLM2-135M (K=16, one thread) showed where a
decode step's ~110 ms went: ~70 ms in `aten::mm` (Hugging Face's
`nn.Linear` -> MKL sgemm, which repacks the weight matrix on every call
when the batch is this small), ~11 ms drawing one exponential per
vocabulary entry in `torch.multinomial`, ~7% concatenating the KV cache
(`DynamicLayer.update` copies the whole cache every step) and the rest in
small ops. This module removes the first and third of those without
changing any result beyond float rounding:

- `onednn_linears`: runs the model's `nn.Linear` layers through oneDNN's
  linear kernel (the op PyTorch's own compiler emits for CPU linears), on
  weights reordered once into its blocked layout: a decode step at K=16
  takes ~0.55x the time of the stock path;
- `GrowingLayer` / `new_cache`: a KV cache layer that appends into spare
  capacity (doubling when full) instead of reallocating every step;
- `LayerCapture`: one forward hook on each module that produces a
  requested hidden state, instead of `output_hidden_states` collecting all
  of them; it can also stop the forward pass once the deepest one is in
  hand, which makes the extra "collect the last token's feature" step cost
  only the layers below the feature layer.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer

from .cpu_layers import fuse_llama_layers
from .device import tensor_on

if TYPE_CHECKING:
    from transformers import PreTrainedModel

__all__ = [
    "GrowingLayer",
    "LayerCapture",
    "PackedLinear",
    "full_cache",
    "new_cache",
    "onednn_linears",
    "own_memory",
    "pack_linears",
    "select_rows",
]

# ------------------------------------------------------------------ linears

_ONEDNN_OK: bool | None = None  # probed once: is the oneDNN linear op usable here?
_LINEARS: weakref.WeakKeyDictionary[nn.Module, list[nn.Linear]] = weakref.WeakKeyDictionary()


def _onednn_usable() -> bool:
    """True when oneDNN's linear ops exist and agree with `F.linear`.

    It is an internal op (what TorchInductor lowers CPU linears to), so it
    is probed once rather than trusted; any failure keeps the stock path.
    """
    global _ONEDNN_OK
    if _ONEDNN_OK is None:
        try:
            with torch.inference_mode():
                cpu = torch.device("cpu")  # whatever the default device is
                x, w, b = (torch.randn(*shape, device=cpu) for shape in ((3, 2, 8), (4, 8), (4,)))
                want = nn.functional.linear(x, w, b)
                packed = torch.ops.mkldnn._reorder_linear_weight(w, _PACK_BATCH_HINT)
                _ONEDNN_OK = all(
                    torch.allclose(
                        torch.ops.mkldnn._linear_pointwise(x, weight, b, "none", [], ""),
                        want,
                        atol=1e-5,
                    )
                    for weight in (w, packed)
                )
        except (AttributeError, RuntimeError):
            _ONEDNN_OK = False
    return _ONEDNN_OK


def _fast_linears(model: nn.Module) -> list[nn.Linear]:
    """The model's plain fp32 CPU `nn.Linear` modules (subclasses may do more: skipped)."""
    found = _LINEARS.get(model)
    if found is None:
        found = [
            m
            for m in model.modules()
            if type(m) is nn.Linear
            and m.weight.dtype == torch.float32
            and m.weight.device.type == "cpu"
        ]
        _LINEARS[model] = found
    return found


def _onednn_forward(module: nn.Linear, weight: Any) -> Any:
    # only packed weights: on a dense one (a tied LM head) padding costs ~2.5 ms a K=1 step
    packed = weight is not module.weight
    pad = packed and _pads_single_rows(module.in_features, module.out_features)

    def forward(x: torch.Tensor) -> torch.Tensor:
        return _onednn_linear(x, weight, module.bias, pad)

    return forward


def _onednn_linear(x: torch.Tensor, weight: Any, bias: Any, pad_single_row: bool) -> torch.Tensor:
    """oneDNN's linear; a lone row goes in beside a copy of itself when `pad_single_row`."""
    if pad_single_row and x.numel() == x.shape[-1]:
        pair = x.reshape(1, -1).expand(2, -1)
        out = torch.ops.mkldnn._linear_pointwise(pair, weight, bias, "none", [], "")
        return out[:1].reshape(*x.shape[:-1], -1)
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


# Per (in, out): whether oneDNN computes a lone row of a packed weight by another kernel
# than a batch's rows (its gemv path), which rounds differently; see `_pads_single_rows`.
_SINGLE_ROW_DIFFERS: dict[tuple[int, int], bool] = {}


def _pads_single_rows(in_features: int, out_features: int) -> bool:
    """Whether a lone row must be computed as one of two to round as it does in a batch.

    For some shapes (SmolLM2's down projection, 1536 -> 576) oneDNN runs a
    single row through a gemv kernel that sums in another order than its
    batched kernel (which gives every row the same bits from 2 rows up): a
    K=1 request alone would then differ, by float rounding, from the same
    request in a batch, and int8 layers above amplify that into other
    tokens. Probed once per shape on random data, for packed weights;
    padding costs ~15 us a call (0.3 ms a K=1 step of SmolLM2), where it is
    needed.
    """
    key = (in_features, out_features)
    if key not in _SINGLE_ROW_DIFFERS:
        generator = torch.Generator().manual_seed(0)
        with torch.inference_mode():
            weight = torch.randn(out_features, in_features, generator=generator)
            weight = torch.ops.mkldnn._reorder_linear_weight(weight, _PACK_BATCH_HINT)
            rows = torch.randn(3, in_features, generator=generator)
            alone = torch.ops.mkldnn._linear_pointwise(rows[:1], weight, None, "none", [], "")
            batched = torch.ops.mkldnn._linear_pointwise(rows, weight, None, "none", [], "")
            _SINGLE_ROW_DIFFERS[key] = not torch.equal(alone[0], batched[0])
    return _SINGLE_ROW_DIFFERS[key]


# Weights are also reordered once into oneDNN's blocked layout (what
# TorchInductor's weight freezing does): another ~25% off a decode step at
# K=16, because the kernel then streams the weights without re-blocking
# them. It costs a second copy of the linear weights, so only models whose
# linears fit in PACK_LIMIT_BYTES get it (the embedded ones use 0.5-1.1 GB).
PACK_LIMIT_BYTES = 2 << 30
_PACK_BATCH_HINT = 16  # the layout oneDNN picks for this batch is as fast or faster at 1..64
_PACKED: weakref.WeakKeyDictionary[nn.Linear, tuple[tuple[int, int], Any]] = (
    weakref.WeakKeyDictionary()
)


# Linears `pack_linears` left dense because another module shares their weight: packing
# them here would bring back the second copy it exists to avoid.
_KEEP_DENSE: weakref.WeakSet[nn.Linear] = weakref.WeakSet()


def _weight_for(module: nn.Linear, pack: bool) -> Any:
    """The weight handed to oneDNN: packed (and cached) when allowed, else the dense one."""
    weight = module.weight
    if not pack or module in _KEEP_DENSE:
        return weight
    stamp = (weight.data_ptr(), weight._version)  # repack if the weights were changed
    cached = _PACKED.get(module)
    if cached is None or cached[0] != stamp:
        packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), _PACK_BATCH_HINT)
        cached = (stamp, packed)
        _PACKED[module] = cached
    return cached[1]


def _should_pack(linears: list[nn.Linear]) -> bool:
    total = sum(m.weight.numel() * m.weight.element_size() for m in linears)
    return total <= PACK_LIMIT_BYTES


class PackedLinear(nn.Module):
    """An `nn.Linear` whose only copy of the weight is oneDNN's packed one.

    What `pack_linears` swaps in: the same function as the linear it
    replaces (up to float rounding), at the packed kernel's speed, without
    the dense weight beside it.
    """

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight = linear.weight.detach()
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight, _PACK_BATCH_HINT)
        self.bias = linear.bias
        self.pad_single_row = _pads_single_rows(self.in_features, self.out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _onednn_linear(x, self.packed, self.bias, self.pad_single_row)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, packed"


def pack_linears(model: nn.Module) -> int:
    """Replaces the model's plain fp32 linears by `PackedLinear`s; returns how many.

    For a model that only serves (central's server): `onednn_linears` packs
    a second copy of each weight beside the original, ~0.54 GB more for
    SmolLM2-135M; this keeps the packed one alone. A weight shared with
    another module (an LM head tied to the input embeddings) stays dense and
    unpacked, since the other module reads it. Nothing changes when the
    packed kernel is unusable here, or when the weights are too large to
    pack (`PACK_LIMIT_BYTES`). The model can no longer be trained or have
    its linears' weights read: load a separate copy for that. Llama layers
    are fused first (`cpu_layers.fuse_llama_layers`: q/k/v and gate/up each
    one packed linear, fewer small ops per layer).
    """
    linears = _fast_linears(model)
    if not linears or not _onednn_usable() or not _should_pack(linears):
        return 0  # nothing to pack (a GPU or half-precision model), or not packable here
    if fuse_llama_layers(model):
        _LINEARS.pop(model, None)
        linears = _fast_linears(model)
    uses: dict[int, int] = {}
    for _, parameter in model.named_parameters(remove_duplicate=False):
        uses[id(parameter)] = uses.get(id(parameter), 0) + 1
    replaced = 0
    for name, module in list(model.named_modules()):
        if not any(module is linear for linear in linears):
            continue
        assert isinstance(module, nn.Linear)
        if uses[id(module.weight)] > 1:
            _KEEP_DENSE.add(module)
            continue
        parent, _, attribute = name.rpartition(".")
        setattr(model.get_submodule(parent), attribute, PackedLinear(module))
        replaced += 1
    _LINEARS.pop(model, None)  # the cached list held the replaced modules (and their weights)
    own_memory(model)
    return replaced


def own_memory(model: nn.Module) -> None:
    """Copies the tensors still in the model out of whatever they view.

    Weights loaded from safetensors view one memory-mapped file: while any
    tensor (an embedding, a norm) still views it, the pages of the dropped
    dense linears stay mapped and resident.
    """
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.data = parameter.data.clone()
        for module in model.modules():
            for name, buffer in list(module.named_buffers(recurse=False)):
                setattr(module, name, buffer.clone())


@contextmanager
def onednn_linears(model: nn.Module) -> Iterator[None]:
    """Within the block, the model's linears run on oneDNN (when usable).

    The switch is an instance-level `forward` on each module, undone on
    exit, so only passes run by `forward.Forward` take it: anyone else
    holding the model (a test's reference pass, a training loop) keeps the
    stock path.
    """
    linears = _fast_linears(model)
    if not linears or not _onednn_usable():  # a GPU or half-precision model: the stock path
        yield
        return
    pack = _should_pack(linears)
    for module in linears:
        module.forward = _onednn_forward(module, _weight_for(module, pack))  # type: ignore[method-assign]
    try:
        yield
    finally:
        for module in linears:
            module.__dict__.pop("forward", None)


# ------------------------------------------------------------------ KV cache

_FIRST_SPARE = 64  # positions reserved past the prompt at the first allocation


class GrowingLayer(DynamicLayer):
    """A `DynamicLayer` that appends into spare capacity instead of concatenating.

    `keys`/`values` are views of the first `length` positions of a larger
    buffer; the buffer doubles when full, so appending is amortised O(1)
    instead of a full copy of the cache every step. The values the attention
    sees are the same tensors a `DynamicLayer` would hold.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._key_buffer: torch.Tensor | None = None
        self._value_buffer: torch.Tensor | None = None
        self._length = 0

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        start, added = self._length, key_states.shape[-2]
        key_buffer, value_buffer = self._reserve(key_states, value_states, start + added)
        key_buffer[:, :, start : start + added].copy_(key_states)
        value_buffer[:, :, start : start + added].copy_(value_states)
        return self._set_length(start + added)

    def _reserve(
        self, key_states: torch.Tensor, value_states: torch.Tensor, needed: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The buffers, grown to hold at least `needed` positions (doubling, to amortise)."""
        if self._key_buffer is not None and self._value_buffer is not None:
            if needed <= self._key_buffer.shape[-2]:
                return self._key_buffer, self._value_buffer
            capacity = max(needed + _FIRST_SPARE, 2 * self._key_buffer.shape[-2])
        else:
            capacity = needed + _FIRST_SPARE
        keys = _with_length(key_states, capacity)
        values = _with_length(value_states, capacity)
        if self._key_buffer is not None and self._value_buffer is not None and self._length:
            keys[:, :, : self._length].copy_(self._key_buffer[:, :, : self._length])
            values[:, :, : self._length].copy_(self._value_buffer[:, :, : self._length])
        self._key_buffer, self._value_buffer = keys, values
        return keys, values

    def _set_length(self, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Points `keys`/`values` at the first `length` positions and returns them."""
        assert self._key_buffer is not None and self._value_buffer is not None
        self._length = length
        keys = self._key_buffer[:, :, :length]
        values = self._value_buffer[:, :, :length]
        self.keys, self.values = keys, values
        return keys, values

    def get_seq_length(self) -> int:
        return self._length

    def adopt(self, keys: torch.Tensor, values: torch.Tensor, length: int) -> None:
        """Takes `keys`/`values` (batch, heads, capacity, dim) as its buffers, `length` used.

        How a batch is rebuilt around new rows (see `central.batch`): the
        caller lays the rows out in fresh buffers and hands them over.
        """
        if not self.is_initialized:
            self.lazy_initialization(keys, values)
        self._key_buffer, self._value_buffer = keys, values
        self._set_length(length)

    def drop_left(self, columns: int) -> None:
        """Forgets the first `columns` positions of every row (padding no row attends to)."""
        if columns <= 0 or self._key_buffer is None or self._value_buffer is None:
            return
        self._key_buffer = self._key_buffer[:, :, columns:]
        self._value_buffer = self._value_buffer[:, :, columns:]
        self._set_length(self._length - columns)

    def reorder_cache(self, beam_idx: torch.Tensor) -> None:
        """Selects (or repeats) batch rows; this is how rows are shared and dropped."""
        if self._key_buffer is None or self._value_buffer is None:
            return
        index = beam_idx.to(self._key_buffer.device)
        self._key_buffer = self._key_buffer.index_select(0, index)
        self._value_buffer = self._value_buffer.index_select(0, index)
        self._set_length(self._length)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self._key_buffer is not None:
            device = self._key_buffer.device
            self.reorder_cache(torch.as_tensor(indices, dtype=torch.long, device=device))

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self._key_buffer is not None:
            rows = torch.arange(self._key_buffer.shape[0], device=self._key_buffer.device)
            self.reorder_cache(rows.repeat_interleave(repeats))

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove > 0:
            raise ValueError("crop takes a negative count of tokens to remove")
        if tokens_to_remove and self._key_buffer is not None:
            self._set_length(max(0, self._length + tokens_to_remove))

    def reset(self) -> None:
        self._key_buffer = self._value_buffer = None
        self._length = 0
        super().reset()


def _with_length(like: torch.Tensor, length: int) -> torch.Tensor:
    """An uninitialised (batch, heads, length, dim) tensor shaped and typed like `like`."""
    batch, heads, _, dim = like.shape
    return like.new_empty(batch, heads, length, dim)


def new_cache(model: PreTrainedModel) -> DynamicCache:
    """A `DynamicCache` for `model` whose full-attention layers are `GrowingLayer`s.

    Other layer kinds (sliding-window layers of Gemma 3, say) keep their own
    class: they bound their length already and have their own update rules.
    """
    cache = DynamicCache(config=model.config)
    if cache.layers:
        cache.layers = [GrowingLayer() if type(x) is DynamicLayer else x for x in cache.layers]
    else:  # no config-driven layout: layers get created lazily, all full attention
        cache.layer_class_to_replicate = GrowingLayer
    return cache


def full_cache(model: PreTrainedModel) -> DynamicCache:
    """A `DynamicCache` whose every layer is a `GrowingLayer`, sliding-window ones included.

    The batching engine lays rows of different lengths side by side, which
    needs every position of every layer. A sliding-window layer holding the
    whole history computes the same attention: the model's mask, not the
    cache, applies the window.
    """
    cache = DynamicCache(config=model.config)
    if cache.layers:
        cache.layers = [GrowingLayer() for _ in cache.layers]
    else:
        cache.layer_class_to_replicate = GrowingLayer
    return cache


def select_rows(
    cache: Cache, rows: torch.Tensor | Sequence[int], device: torch.device | None = None
) -> None:
    """Keeps (or repeats) the cache's batch rows `rows`, in that order.

    A list of rows is uploaded to `device` (the cache's, where the caller
    knows it) without waiting for the GPU. Every row change goes through
    here: `Cache.reorder_cache` is annotated with the legacy
    `torch.LongTensor` class, which no tensor has statically, so the one
    cast that satisfies it lives in one place.
    """
    if isinstance(rows, torch.Tensor):
        index = rows
    else:
        index = tensor_on(list(rows), device or torch.device("cpu"))
    cache.reorder_cache(cast(torch.LongTensor, index))


# ------------------------------------------------------------------ features


class _Captured(Exception):
    """Raised by a hook to end a forward pass once every requested state is in hand."""


class LayerCapture:
    """Captures `output_hidden_states[i]` for each requested `i`, one hook per layer.

    Hugging Face numbers hidden states as: 0 = the input of the first
    decoder layer (the embeddings), i in 1..N-1 = the output of decoder
    layer i-1, N = the decoder's `last_hidden_state` (after the final norm).
    Each hook sits on exactly the module that produces that tensor. Models
    without a `layers` list on their decoder are not hooked; the caller then
    falls back to `output_hidden_states`.
    """

    def __init__(self, model: PreTrainedModel, layers: Sequence[int]) -> None:
        self.model = model
        self.layers = tuple(dict.fromkeys(layers))  # requested indices, duplicates dropped
        self.hidden: dict[int, torch.Tensor] = {}  # layer -> (batch, seq, hidden), last pass
        self.stop_after = False  # when True, the pass ends once every layer is captured
        self._targets = [_hook_target(model, layer) for layer in self.layers]

    @property
    def supported(self) -> bool:
        return all(target is not None for target, _ in self._targets)

    @contextmanager
    def active(self) -> Iterator[LayerCapture]:
        """Installs the hooks for the duration of the block."""
        handles = []
        for layer, (target, kind) in zip(self.layers, self._targets, strict=True):
            assert target is not None, "check `supported` before hooking"
            if kind == "input":
                handles.append(
                    target.register_forward_pre_hook(self._on_input(layer), with_kwargs=True)
                )
            else:
                handles.append(target.register_forward_hook(self._on_output(layer)))
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()

    def run(self, **inputs: Any) -> Any:
        """One forward pass; returns its output, or None when `stop_after` cut it short."""
        self.hidden = {}
        try:
            return self.model(**inputs)
        except _Captured:
            return None

    def _on_input(self, layer: int) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            self._keep(layer, args[0] if args else kwargs["hidden_states"])

        return hook

    def _on_output(self, layer: int) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            if isinstance(output, tuple):
                output = output[0]
            elif not isinstance(output, torch.Tensor):  # a ModelOutput from the decoder
                output = output.last_hidden_state
            self._keep(layer, output)

        return hook

    def _keep(self, layer: int, hidden: torch.Tensor) -> None:
        self.hidden[layer] = hidden
        if self.stop_after and len(self.hidden) == len(self.layers):
            raise _Captured


def _hook_target(model: PreTrainedModel, layer: int) -> tuple[nn.Module | None, str]:
    """The module (and whether its input or output) that yields hidden state `layer`."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    blocks = getattr(decoder, "layers", None)
    if not isinstance(decoder, nn.Module) or not isinstance(blocks, nn.ModuleList) or not blocks:
        return None, ""
    if getattr(model.config.get_text_config(), "tie_last_hidden_states", True) is False:
        return None, ""  # hidden_states[N] is then not last_hidden_state: leave it to HF
    if layer == 0:
        return blocks[0], "input"
    if layer == len(blocks):
        return decoder, "output"
    return blocks[layer - 1], "output"
