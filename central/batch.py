"""The rows of many requests decoding side by side: one KV cache, one pass a step.

Requests join the batch at token boundaries and their rows leave when they
finish, so one forward pass a step serves every request in flight
(continuous batching). Prompts differ in length, so rows are aligned on
the right, vLLM-free and the way Hugging Face batches generation:

- each row's history sits at the end of the cache, after left padding that
  the attention mask hides (``mask`` is 0 there);
- each row carries its own position ids (RoPE sees the row's own count, not
  the column), and every row's newest token goes in the same new column;
- causal attention plus the mask means padding cannot change any real
  position, so a row computes what it would alone (up to float rounding:
  the tests hold features to a tolerance and seeded tokens to equality).

Rebuilding the cache is a copy of every row, so the batch does it only
when it must: rows join in groups (`join` lays them out in fresh buffers,
leaving out rows that have finished since), and finished rows otherwise
stay in place as dead rows, fed a pad token and ignored, until they are a
third of the batch (`compact`). Columns that only padding uses are dropped
when a rebuild leaves them so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers.cache_utils import DynamicCache

from .decoding import GrowingLayer, full_cache, select_rows
from .forward import Forward, Pass
from .model import LoadedModel

__all__ = ["DecodeBatch", "Joining"]

_PAD = 0  # the id fed to a dead row; nothing reads its output
_SPARE = 64  # columns reserved past the longest row when the cache is rebuilt


@dataclass(frozen=True)
class Joining:
    """Rows of one request about to join: its prompt's cache, replicated `rows` times."""

    cache: DynamicCache  # the prompt's cache (one row), from `full_cache`
    length: int  # tokens in that cache (the prompt's length)
    rows: int  # how many batch rows it becomes
    next_ids: Sequence[int]  # the token each new row is fed first


class DecodeBatch:
    """Rows decoding together; row order is join order, and a request's rows stay adjacent.

    Owners address rows by their *slot*, an id that stays the same while
    other rows come and go; `slots` lists the live ones in batch order.
    """

    def __init__(self, loaded: LoadedModel) -> None:
        self.loaded = loaded
        self._cache: DynamicCache | None = None
        self._mask = torch.zeros(0, 0, dtype=torch.long)  # (rows, columns): 1 = a real token
        self._positions = torch.zeros(0, dtype=torch.long)  # (rows,) the next token's position
        self._next = torch.zeros(0, dtype=torch.long)  # (rows,) the token each row is fed next
        self._slot_of_row: list[int] = []  # batch row -> slot
        self._dead: set[int] = set()  # slots that finished but still occupy a row
        self._next_slot = 0

    @property
    def slots(self) -> list[int]:
        """Live slots, in batch order."""
        return [s for s in self._slot_of_row if s not in self._dead]

    @property
    def live_rows(self) -> int:
        return len(self._slot_of_row) - len(self._dead)

    @property
    def rows(self) -> int:
        """Rows a pass computes, dead ones included."""
        return len(self._slot_of_row)

    def join(self, joining: Sequence[Joining]) -> list[list[int]]:
        """Adds each request's rows; returns their slots, one list per request.

        One rebuild for the whole group, which also drops dead rows and
        padding-only columns.
        """
        kept = [b for b, s in enumerate(self._slot_of_row) if s not in self._dead]
        old_lengths = self._mask[kept].sum(dim=1).tolist() if kept else []
        width = max([*old_lengths, *(j.length for j in joining)], default=0)
        self._cache = self._rebuilt(kept, joining, width)
        new_lengths = [j.length for j in joining for _ in range(j.rows)]
        lengths = torch.tensor([*old_lengths, *new_lengths], dtype=torch.long)
        columns = torch.arange(width)
        self._mask = (columns[None, :] >= (width - lengths)[:, None]).long()
        self._positions = torch.cat([self._positions[kept], torch.tensor(new_lengths)]).long()
        fresh = [i for j in joining for i in j.next_ids]
        self._next = torch.cat([self._next[kept], torch.tensor(fresh, dtype=torch.long)])
        self._slot_of_row = [self._slot_of_row[b] for b in kept]
        self._dead.clear()
        slots = []
        for j in joining:
            ids = list(range(self._next_slot, self._next_slot + j.rows))
            self._next_slot += j.rows
            self._slot_of_row.extend(ids)
            slots.append(ids)
        return slots

    def step(self, forward: Forward) -> tuple[Pass, list[int]]:
        """Feeds every row its next token; returns the pass and the slot of each of its rows."""
        assert self._cache is not None and self._slot_of_row, "step on an empty batch"
        rows, width = self._mask.shape
        self._mask = torch.cat([self._mask, torch.ones(rows, 1, dtype=torch.long)], dim=1)
        out = forward(
            self._next[:, None],
            self._cache,
            attention_mask=self._mask,
            position_ids=self._positions[:, None],
            cache_position=torch.tensor([width]),
        )
        self._positions = self._positions + 1
        return out, list(self._slot_of_row)

    def feed_next(self, slots: Sequence[int], ids: Sequence[int]) -> None:
        """Sets what `slots` are fed in the next step."""
        where = {s: b for b, s in enumerate(self._slot_of_row)}
        index = torch.tensor([where[s] for s in slots], dtype=torch.long)
        self._next[index] = torch.tensor(list(ids), dtype=torch.long)

    def finish(self, slots: Sequence[int]) -> None:
        """Marks `slots` finished: they are fed padding until the next rebuild."""
        self._dead.update(slots)
        where = {s: b for b, s in enumerate(self._slot_of_row)}
        for slot in slots:
            self._next[where[slot]] = _PAD
        if not self.live_rows:
            self.clear()

    def compact(self, dead_fraction: float = 1 / 3) -> None:
        """Drops dead rows once they are more than `dead_fraction` of the batch."""
        if self._cache is None or len(self._dead) <= dead_fraction * self.rows:
            return
        kept = [b for b, s in enumerate(self._slot_of_row) if s not in self._dead]
        select_rows(self._cache, kept)
        self._mask, self._positions = self._mask[kept], self._positions[kept]
        self._next = self._next[kept]
        self._slot_of_row = [self._slot_of_row[b] for b in kept]
        self._dead.clear()
        self._drop_padding_columns()

    def clear(self) -> None:
        """Forgets every row (and frees the cache)."""
        self.__init__(self.loaded)  # type: ignore[misc]

    def _drop_padding_columns(self) -> None:
        used = self._mask.any(dim=0).nonzero()
        first = int(used[0]) if len(used) else self._mask.shape[1]
        if first and self._cache is not None:
            for layer in self._cache.layers:
                assert isinstance(layer, GrowingLayer)
                layer.drop_left(first)
            self._mask = self._mask[:, first:]

    def _rebuilt(self, kept: list[int], joining: Sequence[Joining], width: int) -> DynamicCache:
        """A fresh cache: rows `kept` of the current one, then the joining rows, right-aligned."""
        cache = full_cache(self.loaded.model)
        old = self._cache.layers if self._cache is not None and kept else None
        old_width = self._mask.shape[1]
        rows = len(kept) + sum(j.rows for j in joining)
        for index, layer in enumerate(_layers(cache, joining)):
            parts = [(*_kv(j.cache.layers[index]), j.length, j.rows) for j in joining]
            like = parts[0][0] if parts else _kv(old[index])[0]  # type: ignore[index]
            keys = like.new_zeros(rows, like.shape[1], width + _SPARE, like.shape[3])
            values = torch.zeros_like(keys)
            if old is not None:
                # The old rows move right when a longer prompt joins, left when the
                # columns only their departed neighbours used are dropped.
                old_keys, old_values = _kv(old[index])
                shift = width - old_width
                into, since = max(shift, 0), max(-shift, 0)
                keys[: len(kept), :, into:width] = old_keys[kept, :, since:]
                values[: len(kept), :, into:width] = old_values[kept, :, since:]
            row = len(kept)
            for part_keys, part_values, length, count in parts:
                keys[row : row + count, :, width - length : width] = part_keys[0, :, :length]
                values[row : row + count, :, width - length : width] = part_values[0, :, :length]
                row += count
            layer.adopt(keys, values, width)
        return cache


def _kv(layer: object) -> tuple[torch.Tensor, torch.Tensor]:
    """A cache layer's keys and values (batch, heads, length, dim)."""
    assert isinstance(layer, GrowingLayer) and layer.keys is not None
    assert layer.values is not None
    return layer.keys, layer.values


def _layers(cache: DynamicCache, joining: Sequence[Joining]) -> list[GrowingLayer]:
    """The cache's layers, created up front when the model's config did not lay them out."""
    if not cache.layers:
        count = len(joining[0].cache.layers) if joining else 0
        cache.layers = [GrowingLayer() for _ in range(count)]
    layers = list(cache.layers)
    assert all(isinstance(layer, GrowingLayer) for layer in layers)
    return layers  # type: ignore[return-value]
