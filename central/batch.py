"""The rows of many requests decoding side by side: one KV cache, one pass a step.

Requests join the batch at token boundaries and their rows leave when they
finish, so one forward pass a step serves every request in flight
(continuous batching). Prompts differ in length, so rows are aligned on
the right, the way Hugging Face batches generation:

- every row's newest token sits in the same column; a row's history runs
  back from there, and the columns before it are padding that the
  attention mask hides;
- each row carries its own position ids (RoPE sees the row's own count, not
  the column);
- causal attention plus the mask means padding cannot change any real
  position, so a row computes what it would alone (up to float rounding:
  the tests hold features to a tolerance and seeded tokens to equality).

The keys and values live in buffers preallocated per layer on the
model's device, ``(row capacity, heads, column capacity, dim)``; the rows'
bookkeeping (first column, position, next token) is kept on the host and
uploaded in one copy a step, from which the mask is built on the device.
The cache handed to the model
is a view of the rows and columns in use, so nothing is copied as rows come
and go: a finished row stays where it is (fed a pad token, its output
ignored) until a newcomer takes it over by writing its prompt's keys and
values into it. The buffers are copied only when they must grow, which
happens a handful of times, or when at most half the rows in use are live
(`compact`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers.cache_utils import DynamicCache

from .decoding import GrowingLayer, full_cache
from .device import tensor_on, to_device
from .forward import Forward, Pass
from .model import LoadedModel

__all__ = ["DecodeBatch", "Joining"]

_PAD = 0  # the id fed to a free row; nothing reads its output
_MARGIN = 32  # free columns kept before the oldest history, so a longer prompt can join
_GROW = 64  # columns added at least when the buffers run out of columns
_FREE = 1 << 40  # the first column of a free row: it sees only the column it is fed in


@dataclass(frozen=True)
class Joining:
    """Rows of one request about to join: its prompt's cache, replicated `rows` times."""

    cache: DynamicCache  # the prompt's cache (one row), from `full_cache`
    length: int  # tokens in that cache (the prompt's length)
    rows: int  # how many batch rows it becomes
    next_ids: Sequence[int]  # the token each new row is fed first


class DecodeBatch:
    """Rows decoding together.

    Owners address rows by their *slot*, an id that stays the same while
    other rows come and go (`compact` moves rows, never slots).
    """

    def __init__(self, loaded: LoadedModel) -> None:
        self.loaded = loaded
        self.device = loaded.device  # where the buffers live and every pass runs
        self._keys: list[torch.Tensor] = []  # per layer: (row cap, heads, column cap, dim)
        self._values: list[torch.Tensor] = []
        self._cache = full_cache(loaded.model)  # views of the rows and columns in use
        self._start = self._end = 0  # columns in use: [start, end); every row's newest at end-1
        # Per row, on the host: its first real column, the next token's position, the token
        # it is fed next.
        self._first = _host_longs(0)
        self._positions = _host_longs(0)
        self._next = _host_longs(0)
        self._slot_of_row: list[int | None] = []  # None: a free row
        self._row_of_slot: dict[int, int] = {}
        self._next_slot = 0

    @property
    def live_rows(self) -> int:
        return len(self._row_of_slot)

    @property
    def rows(self) -> int:
        """Rows a pass computes, free ones included."""
        return len(self._slot_of_row)

    def join(self, joining: Sequence[Joining]) -> list[list[int]]:
        """Adds each request's rows (into free rows first); returns their slots, per request."""
        wanted = sum(j.rows for j in joining)
        free = [r for r, s in enumerate(self._slot_of_row) if s is None]
        rows = self.rows + max(0, wanted - len(free))
        longest = max(j.length for j in joining)
        if not self._row_of_slot:  # an empty batch starts afresh, aligned on the newcomers
            self._start = self._end = _MARGIN + longest
        self._ensure(rows, left=longest, right=1, like=joining[0].cache)
        grown = rows - self.rows
        self._slot_of_row.extend([None] * grown)
        self._first = torch.cat([self._first, _host_longs(grown, _FREE)])
        self._positions = torch.cat([self._positions, _host_longs(grown)])
        self._next = torch.cat([self._next, _host_longs(grown)])
        free += list(range(rows - grown, rows))
        slots: list[list[int]] = []
        try:
            for j in joining:
                taken, free = free[: j.rows], free[j.rows :]
                self._write_prompt(taken, j)
                ids = list(range(self._next_slot, self._next_slot + j.rows))
                self._next_slot += j.rows
                for row, slot in zip(taken, ids, strict=True):
                    self._slot_of_row[row] = slot
                    self._row_of_slot[slot] = row
                slots.append(ids)
        except BaseException:  # none of them joins: the rows already taken are freed
            self.finish([slot for ids in slots for slot in ids])
            raise
        self._start = min(self._start, self._end - longest)
        return slots

    def step(self, forward: Forward) -> tuple[Pass, list[int]]:
        """Feeds every row its next token; returns the pass and the slot of each live row
        by pass row (-1 for a free row)."""
        assert self._row_of_slot, "step on an empty batch"
        self._ensure(self.rows, left=0, right=1)
        rows, width = self.rows, self._end - self._start
        for layer, keys, values in zip(self._cache.layers, self._keys, self._values, strict=True):
            assert isinstance(layer, GrowingLayer)
            layer.adopt(keys[:rows, :, self._start :], values[:rows, :, self._start :], width)
        next_ids, mask, positions = self._inputs()
        out = forward(
            next_ids[:, None],
            self._cache,
            attention_mask=mask,
            position_ids=positions[:, None],
            cache_position=torch.full((1,), width, dtype=torch.long, device=self.device),
        )
        self.advance()
        return out, [-1 if s is None else s for s in self._slot_of_row]

    def step_alone(self, forward: Forward, slots: Sequence[int]) -> Pass:
        """`step` for `slots`' rows alone (their pass rows in `slots` order), on a copy of
        their part of the cache; the new column is written back. How the engine finds
        which request makes a shared step fail. Once every live row has had its step
        this way, `advance()`."""
        self._ensure(self.rows, left=0, right=1)
        rows = [self._row_of_slot[s] for s in slots]
        index = tensor_on(rows, self.device)
        width = self._end - self._start
        cache = full_cache(self.loaded.model)
        if not cache.layers:
            cache.layers = [GrowingLayer() for _ in self._keys]
        copies = []
        for layer, keys, values in zip(cache.layers, self._keys, self._values, strict=True):
            assert isinstance(layer, GrowingLayer)
            mine = (
                keys[index, :, self._start : self._end + 1],
                values[index, :, self._start : self._end + 1],
            )
            layer.adopt(*mine, width)
            copies.append(mine)
        next_ids, mask, positions = self._inputs(rows)
        out = forward(
            next_ids[:, None],
            cache,
            attention_mask=mask,
            position_ids=positions[:, None],
            cache_position=torch.full((1,), width, dtype=torch.long, device=self.device),
        )
        for (keys_copy, values_copy), keys, values in zip(
            copies, self._keys, self._values, strict=True
        ):
            keys[index, :, self._end] = keys_copy[:, :, width]
            values[index, :, self._end] = values_copy[:, :, width]
        return out

    def advance(self) -> None:
        """Every row has been fed its token: the batch moves one column on."""
        if self._row_of_slot:
            self._end += 1
            self._positions += 1

    def _inputs(
        self, rows: list[int] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The next pass's (token ids, attention mask, position ids) for `rows` (all when
        None), on the device: the rows' bookkeeping in one upload, the mask built there.
        The mask is (rows, columns in use + 1): which columns each row attends to."""
        bookkeeping = torch.stack([self._first, self._positions, self._next])
        if rows is not None:
            bookkeeping = bookkeeping[:, rows]
        first, positions, next_ids = to_device(bookkeeping, self.device)
        columns = torch.arange(self._start, self._end + 1, device=self.device)
        mask = (columns[None, :] >= first[:, None]).long()
        mask[:, -1] = 1  # a free row sees the column it is fed in: no row is all padding
        return next_ids, mask, positions

    def feed_next(self, slots: Sequence[int], ids: Sequence[int]) -> None:
        """Sets what `slots` are fed in the next step."""
        rows = [self._row_of_slot[s] for s in slots]
        self._next[rows] = torch.tensor(list(ids), dtype=torch.long, device="cpu")

    def finish(self, slots: Sequence[int]) -> None:
        """Frees `slots`' rows: fed padding until a newcomer takes them over."""
        for slot in slots:
            row = self._row_of_slot.pop(slot, None)
            if row is None:  # already free
                continue
            self._slot_of_row[row] = None
            self._first[row] = _FREE
            self._next[row] = _PAD
        while self._slot_of_row and self._slot_of_row[-1] is None:  # trailing free rows go
            self._slot_of_row.pop()
        rows = self.rows
        self._first, self._positions = self._first[:rows], self._positions[:rows]
        self._next = self._next[:rows]
        if not self._row_of_slot:
            self.clear()
        else:  # columns only departed rows used are dropped from the view
            self._start = max(self._start, int(self._first.min()))

    def compact(self) -> None:
        """Moves the live rows to the front once at most half the rows in use are live."""
        if not self._row_of_slot or self.live_rows * 2 > self.rows:
            return
        live = [r for r, s in enumerate(self._slot_of_row) if s is not None]
        index = tensor_on(live, self.device)
        for keys, values in zip(self._keys, self._values, strict=True):
            keys[: len(live)] = keys[index]
            values[: len(live)] = values[index]
        self._first, self._positions = self._first[live], self._positions[live]
        self._next = self._next[live]
        self._slot_of_row = [self._slot_of_row[r] for r in live]
        self._row_of_slot = {s: r for r, s in enumerate(self._slot_of_row) if s is not None}

    def clear(self) -> None:
        """Forgets every row and frees the buffers."""
        self.__init__(self.loaded)  # type: ignore[misc]

    def _write_prompt(self, rows: list[int], joining: Joining) -> None:
        """Writes the prompt's keys and values into `rows`, right-aligned at `end`."""
        length, index = joining.length, tensor_on(rows, self.device)
        begin = self._end - length
        for layer, keys, values in zip(joining.cache.layers, self._keys, self._values, strict=True):
            prompt_keys, prompt_values = _kv(layer)
            keys[index, :, begin : self._end] = prompt_keys[:, :, :length]
            values[index, :, begin : self._end] = prompt_values[:, :, :length]
        self._first[rows] = begin
        self._positions[rows] = length
        self._next[rows] = torch.tensor(list(joining.next_ids), dtype=torch.long, device="cpu")

    def _ensure(
        self, rows: int, *, left: int, right: int, like: DynamicCache | None = None
    ) -> None:
        """Grows the buffers (one copy of the columns in use) unless they already hold
        `rows` rows, `left` columns before `end` and `right` after it. The first buffers
        take their shapes from `like`, a prompt's cache."""
        have_rows = self._keys[0].shape[0] if self._keys else 0
        have_cols = self._keys[0].shape[2] if self._keys else 0
        if rows <= have_rows and self._end - left >= 0 and self._end + right <= have_cols:
            return
        width = self._end - self._start
        new_rows = max(rows, min(2 * have_rows, rows + 64))
        new_start = _MARGIN + max(0, left - width)
        new_cols = new_start + width + max(right, _GROW, width // 2)
        shift = new_start - self._start
        if self._keys:
            self._keys = [self._regrown(k, new_rows, new_cols, shift) for k in self._keys]
            self._values = [self._regrown(v, new_rows, new_cols, shift) for v in self._values]
        else:
            assert like is not None, "the first buffers need a prompt cache to copy shapes from"
            kv = [_kv(layer) for layer in like.layers]
            self._keys = [_zeros(k, new_rows, new_cols) for k, _ in kv]
            self._values = [_zeros(v, new_rows, new_cols) for _, v in kv]
            if not self._cache.layers:  # a model whose config lays out no cache layers
                self._cache.layers = [GrowingLayer() for _ in kv]
        self._first = torch.where(self._first >= _FREE, self._first, self._first + shift)
        self._start, self._end = new_start, new_start + width

    def _regrown(self, old: torch.Tensor, rows: int, columns: int, shift: int) -> torch.Tensor:
        new = _zeros(old, rows, columns)
        used, start, end = self.rows, self._start, self._end
        new[:used, :, start + shift : end + shift] = old[:used, :, start:end]
        return new


def _host_longs(count: int, value: int = 0) -> torch.Tensor:
    """(count,) int64 on the host, filled with `value`: the rows' bookkeeping."""
    return torch.full((count,), value, dtype=torch.long, device="cpu")


def _zeros(like: torch.Tensor, rows: int, columns: int) -> torch.Tensor:
    """Zeros shaped (rows, heads, columns, dim) after `like`: never uninitialised memory,
    which could hold NaNs that a masked (zero-weight) position would still spread."""
    return like.new_zeros(rows, like.shape[1], columns, like.shape[3])


def _kv(layer: object) -> tuple[torch.Tensor, torch.Tensor]:
    """A cache layer's keys and values (batch, heads, length, dim)."""
    assert isinstance(layer, GrowingLayer)
    assert layer.keys is not None and layer.values is not None
    return layer.keys, layer.values
