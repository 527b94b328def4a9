"""Llama decoder layers in fewer, larger operations, for serving on a CPU.

Once the linears are fast (int8, or oneDNN's packed fp32), what is left of a
decode step is mostly the number of small operations Hugging Face's modules
launch: at K=1 on SmolLM2-135M, with every linear stubbed out, a step still
took ~9 ms on one quiet core of this machine, against ~10-20 ms for the int8
linears themselves. `fuse_llama_layers` rewrites each `LlamaDecoderLayer`:

- the q, k and v projections become one linear, and so do the gate and up
  projections (one weight read and one kernel call instead of three or two);
- the RMS norms are `torch.nn.functional.rms_norm` (one op instead of seven);
- the rotary embedding is applied to the queries and keys in one pass
  (`roll` against a sign-folded sine, the same values as `rotate_half`);
- a single query token attends per key-value head (queries of a group packed
  as rows, as Hugging Face's own `pack_gqa`), with no copy of the keys;
- in a decode step of rows of different lengths (`central.batch`), each run
  of rows sharing a history attends to exactly its own columns, on one
  thread, so a row's result is bit for bit what it is alone whatever the
  thread count (`_LeanLayer._one_token` says why int8 needs this).

The layer computes the same function as Hugging Face's (each output equal up
to float rounding; `tests/central/test_cpu_layers.py`), reads and writes the
same KV cache, and its output is what `LayerCapture` hooks read. The layer's
`forward` is replaced on the instance, so hooks on it keep working. The
separate projections are removed: the model then serves only (like
`decoding.pack_linears`). Other architectures (Gemma 3's sandwich norms and
sliding windows, say) keep Hugging Face's layers. CPU only: `central.model`
applies it to models on the CPU.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["decoder_layers", "fusable", "fuse_llama_layers", "is_fused", "is_plain_llama_layer"]


def fusable(model: Any) -> bool:
    """Whether `fuse_llama_layers` knows every decoder layer of `model`."""
    layers = decoder_layers(model)
    config = getattr(model, "config", None)
    if not layers or config is None:
        return False
    text = config.get_text_config()
    if getattr(text, "_attn_implementation", None) != "sdpa":
        return False  # the function we reproduce is Hugging Face's SDPA attention
    if getattr(text, "hidden_act", None) != "silu" or getattr(text, "pretraining_tp", 1) != 1:
        return False
    return all(is_plain_llama_layer(layer) for layer in layers)


def decoder_layers(model: Any) -> list[Any]:
    """The model's decoder layers in order; [] for a model without a `layers` list."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    layers = getattr(decoder, "layers", None)
    return list(layers) if isinstance(layers, nn.ModuleList) else []


def is_plain_llama_layer(layer: Any) -> bool:
    """A `LlamaDecoderLayer` as transformers builds it: RMS norms and plain linears."""
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRMSNorm

    if type(layer) is not LlamaDecoderLayer:
        return False
    attention, mlp = layer.self_attn, layer.mlp
    norms = (layer.input_layernorm, layer.post_attention_layernorm)
    linears = [getattr(attention, n, None) for n in ("q_proj", "k_proj", "v_proj", "o_proj")]
    linears += [getattr(mlp, n, None) for n in ("gate_proj", "up_proj", "down_proj")]
    return all(type(n) is LlamaRMSNorm for n in norms) and all(
        type(linear) is nn.Linear for linear in linears
    )


def fuse_llama_layers(model: Any) -> int:
    """Rewrites each decoder layer of a Llama model as above; returns how many.

    Nothing changes (0) unless `fusable(model)`. Run it before the linears are
    packed or quantised: it concatenates their dense weights.
    """
    if not fusable(model):
        return 0
    text = model.config.get_text_config()
    shared = _PassCache()
    layers = decoder_layers(model)
    for layer in layers:
        attention, mlp = layer.self_attn, layer.mlp
        attention.qkv_proj = _concatenated([attention.q_proj, attention.k_proj, attention.v_proj])
        mlp.gate_up_proj = _concatenated([mlp.gate_proj, mlp.up_proj])
        for name in ("q_proj", "k_proj", "v_proj"):
            delattr(attention, name)
        for name in ("gate_proj", "up_proj"):
            delattr(mlp, name)
        layer.forward = _LeanLayer(layer, text, shared)
    return len(layers)


def is_fused(layer: Any) -> bool:
    """Whether `fuse_llama_layers` rewrote `layer`."""
    return isinstance(layer.__dict__.get("forward"), _LeanLayer)


def _concatenated(linears: list[Any]) -> nn.Linear:
    """One linear whose output is the outputs of `linears` side by side."""
    first = linears[0]
    out_features = sum(linear.out_features for linear in linears)
    has_bias = first.bias is not None
    fused = nn.Linear(
        first.in_features, out_features, bias=has_bias, dtype=first.weight.dtype, device="meta"
    )
    with torch.no_grad():
        fused.weight = nn.Parameter(torch.cat([m.weight for m in linears]), requires_grad=False)
        if has_bias:
            biases = [m.bias for m in linears if m.bias is not None]
            fused.bias = nn.Parameter(torch.cat(biases), requires_grad=False)
    return fused


class _PassCache(threading.local):
    """What every layer of one forward pass derives alike, computed by the first.

    Every layer of a pass gets the same (cos, sin) and mask tensors from the
    model: the first derives the sign-folded sine (``sin * [-1]*h + [1]*h``,
    h half the head size) and the rows' attention groups (`_row_groups`),
    the others find them here, keyed by the tensors' identity (held, so an
    id cannot be reused meanwhile). Per thread, in case two threads run the
    same model.
    """

    sin: torch.Tensor | None = None
    signed: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    groups: list[tuple[int, int, int]] | None = None

    def __deepcopy__(self, memo: dict[int, Any]) -> _PassCache:
        return _PassCache()  # a copied model starts with nothing cached

    def signed_sin(self, sin: torch.Tensor) -> torch.Tensor:
        if self.sin is not sin or self.signed is None:
            half = sin.shape[-1] // 2
            self.signed = torch.cat([-sin[..., :half], sin[..., half:]], dim=-1).unsqueeze(1)
            self.sin = sin
        return self.signed

    def row_groups(self, mask: torch.Tensor) -> list[tuple[int, int, int]] | None:
        if self.mask is not mask:
            self.groups = _row_groups(mask)
            self.mask = mask
        return self.groups


def _row_groups(mask: torch.Tensor) -> list[tuple[int, int, int]] | None:
    """Runs of rows attending to the same columns: (first row, end row, first column).

    For a one-token step of rows right-aligned in one cache (`central.batch`),
    each row attends to a suffix of the columns: its own history. None when
    the mask is not of that form (then the batch attends in one masked call).
    """
    if mask.dtype != torch.bool or mask.dim() != 4 or mask.shape[1] != 1 or mask.shape[2] != 1:
        return None
    allowed = mask[:, 0, 0, :]
    columns = allowed.shape[-1]
    first = allowed.int().argmax(dim=-1)
    if not bool((allowed.sum(dim=-1) == columns - first).all()):
        return None  # a row with a hole in its history, or with none
    groups: list[tuple[int, int, int]] = []
    for row, column in enumerate(first.tolist()):
        if groups and groups[-1][2] == column and groups[-1][1] == row:
            groups[-1] = (groups[-1][0], row + 1, column)
        else:
            groups.append((row, row + 1, column))
    return groups


class _LeanLayer:
    """The `forward` of one fused `LlamaDecoderLayer` (installed on the instance)."""

    def __init__(self, layer: Any, text: Any, shared: _PassCache) -> None:
        attention = layer.self_attn
        self.attention = attention
        self.mlp = layer.mlp
        self.norm_in, self.norm_post = layer.input_layernorm, layer.post_attention_layernorm
        self.layer_index = int(attention.layer_idx)
        self.head_dim = int(attention.head_dim)
        self.query_heads = int(text.num_attention_heads)
        self.kv_heads = int(text.num_key_value_heads)
        self.groups = self.query_heads // self.kv_heads
        self.scaling = float(attention.scaling)
        self.intermediate = int(layer.mlp.down_proj.in_features)
        self.shared = shared

    def __call__(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache: Any = None,
        past_key_values: Any = None,
        **_: Any,
    ) -> torch.Tensor:
        assert position_embeddings is not None, "Llama layers get (cos, sin) from the model"
        cache = cache if cache is not None else past_key_values
        attended = self._attend(
            _rms_norm(hidden_states, self.norm_in), attention_mask, position_embeddings, cache
        )
        hidden_states = hidden_states + attended
        gate_up = self.mlp.gate_up_proj(_rms_norm(hidden_states, self.norm_post))
        gate, up = gate_up.split(self.intermediate, dim=-1)
        return hidden_states + self.mlp.down_proj(F.silu(gate).mul_(up))

    def _attend(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        cache: Any,
    ) -> torch.Tensor:
        batch, length, _ = x.shape
        heads = self.query_heads + 2 * self.kv_heads
        qkv = self.attention.qkv_proj(x).view(batch, length, heads, self.head_dim).transpose(1, 2)
        rotated = self.query_heads + self.kv_heads
        query_key = _rotary(qkv[:, :rotated], position_embeddings, self.shared)
        query, key = query_key[:, : self.query_heads], query_key[:, self.query_heads :]
        value = qkv[:, rotated:]
        if cache is not None:
            key, value = cache.update(key, value, self.layer_index)
        out = self._sdpa(query, key, value, mask)
        return self.attention.o_proj(out.transpose(1, 2).reshape(batch, length, -1))

    def _sdpa(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """Attention as Hugging Face's `sdpa_attention_forward` computes it; (B, heads, T, d)."""
        batch, _, length, dim = query.shape
        if self.groups > 1 and length == 1:
            # One query per row: each key-value head attends for its group's queries,
            # stacked as rows, so the keys are read once per group, never copied.
            packed = query.reshape(batch, self.kv_heads, self.groups, dim)
            return self._one_token(packed, key, value, mask).reshape(batch, -1, 1, dim)
        if length == 1:
            return self._one_token(query, key, value, mask)
        gqa: dict[str, bool] = {}
        if self.groups > 1:
            if mask is None:
                gqa["enable_gqa"] = True
            else:
                key = key.repeat_interleave(self.groups, dim=1)
                value = value.repeat_interleave(self.groups, dim=1)
        return F.scaled_dot_product_attention(
            query,
            key,
            value,
            attn_mask=mask,
            scale=self.scaling,
            is_causal=length > 1 and mask is None,
            **gqa,
        )

    def _one_token(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """A decode step's attention, each row exactly as it would be alone.

        Rows of different lengths share the cache right-aligned, the shorter
        ones behind padding the mask hides. The kernel's result for a row
        depends on where its history starts among the columns (it sums in
        vector lanes and blocks), by float rounding; int8 linears, which
        round each input to 1/127 of its range, amplify such differences
        layer by layer until a seeded request sampled beside others no longer
        draws the tokens it draws alone (21 of 48 candidates differed in 48
        tokens, before this). So each run of rows with the same history
        attends, unmasked, to exactly its own columns: bit for bit what it
        computes alone, whatever shares the batch, and on one thread
        (`_one_thread` says why).
        """
        with _one_thread():
            return self._by_history(query, key, value, mask)

    def _by_history(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """`_one_token`'s attention: each run of rows sharing a history on its own columns."""
        groups = None if mask is None else self.shared.row_groups(mask)
        if mask is None or groups is None or (len(groups) == 1 and groups[0][2] == 0):
            return F.scaled_dot_product_attention(
                query, key, value, attn_mask=mask if groups is None else None, scale=self.scaling
            )
        out = query.new_empty(query.shape)
        for start, end, column in groups:
            out[start:end] = F.scaled_dot_product_attention(
                query[start:end],
                key[start:end, :, column:],
                value[start:end, :, column:],
                scale=self.scaling,
            )
        return out


@contextmanager
def _one_thread() -> Iterator[None]:
    """Within the block, torch computes on one thread (the caller's), then as before.

    PyTorch's CPU attention kernel (``_scaled_dot_product_flash_attention_for_cpu``)
    hands the (row, head) pairs of a call to its threads in contiguous shares
    and gives each thread its own slice of one scratch buffer; a slice's
    alignment depends on the thread (on the number of keys, too), and MKL's
    sgemm, which the kernel calls on those slices, sums in another order when
    its operands are aligned otherwise. So with two threads or more a row's
    attention depended on which thread took it, that is on how many rows
    shared the call: a seeded request drew other tokens beside others than
    alone (SmolLM2-135M, int8, two threads: 5-9 of 160 candidates differed).
    On one thread every pair is computed in the first slice. The cost is the
    attention's parallel speed-up, small in a decode step, whose time goes
    to reading the weights (CHANGELOG.md has the measurement); switching
    costs well under a microsecond. The switch is torch's: it also sets the
    count a thread that starts meanwhile takes, harmless where, as in
    central, one thread runs the model.
    """
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _rms_norm(x: torch.Tensor, norm: Any) -> torch.Tensor:
    weight = norm.weight
    return F.rms_norm(x, (weight.shape[0],), weight, norm.variance_epsilon)


def _rotary(
    x: torch.Tensor, position_embeddings: tuple[torch.Tensor, torch.Tensor], shared: _PassCache
) -> torch.Tensor:
    """Rotary embedding of `x` (B, heads, T, d): ``x * cos + rotate_half(x) * sin``."""
    cos, sin = position_embeddings
    half = x.shape[-1] // 2
    return torch.addcmul(x * cos.unsqueeze(1), x.roll(half, dims=-1), shared.signed_sin(sin))
