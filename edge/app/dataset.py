"""In-memory training data for rankers: groups of candidates and preference pairs.

The unit of ranking is a *group*: one instruction feature and the K candidates
sampled for it, with one label per candidate. A candidate is its last-token
feature and, optionally (representation v2), the mean hidden state over its
response tokens and its on-device signals: the parts of ``edge.runtime.parts``.
Listwise losses need the whole group at once, and batching needs equal K, so the
dataset keeps groups in *blocks* of equal K (and equal parts) stacked into dense
arrays. A block built from one big numpy array (the common offline case) is kept
as is, without copying.

This module is numpy-only: the feedback store builds datasets where torch may not
be installed, and only the trainer turns blocks into tensors.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from edge._errors import FeatureError, TrainingError
from edge.runtime.features import check_finite
from edge.runtime.parts import Part

__all__ = [
    "Block",
    "BlockKind",
    "Group",
    "GroupDataset",
    "Pair",
    "label_kind",
    "training_features",
]

BlockKind = Literal["binary", "graded", "pair"]


def label_kind(labels: np.ndarray) -> Literal["binary", "graded"]:
    """``binary`` when every label is 0 or 1, else ``graded`` (real-valued)."""
    return "binary" if bool(np.isin(labels, (0.0, 1.0)).all()) else "graded"


@dataclass(frozen=True)
class Group:
    """One instruction with K labelled candidates."""

    instruction: np.ndarray  # (d,) feature of the last prompt token
    candidates: np.ndarray  # (K, d) one last-token feature row per candidate
    labels: np.ndarray  # (K,) float: 0/1 for thumbs, any real for scores
    mean_candidates: np.ndarray | None = None  # (K, d) mean over each response; None: absent
    signals: np.ndarray | None = None  # (K, S) on-device signals per candidate; None: absent


@dataclass(frozen=True)
class Pair:
    """A preference: for this instruction the user chose ``preferred`` over ``rejected``.

    The optional parts come in twos: give both candidates' mean vectors (or
    signals) or neither.
    """

    instruction: np.ndarray  # (d,) feature of the last prompt token
    preferred: np.ndarray  # (d,) last-token feature of the chosen candidate
    rejected: np.ndarray  # (d,) last-token feature of the candidate passed over
    preferred_mean: np.ndarray | None = None  # (d,) mean vector of the chosen candidate
    rejected_mean: np.ndarray | None = None  # (d,) mean vector of the one passed over
    preferred_signals: np.ndarray | None = None  # (S,) signals of the chosen candidate
    rejected_signals: np.ndarray | None = None  # (S,) signals of the one passed over


@dataclass(frozen=True)
class Block:
    """Groups of equal K, equal label kind and equal parts, stacked for batched training."""

    instructions: np.ndarray  # (G, d) float16 or float32
    candidates: np.ndarray  # (G, K, d) float16 or float32, last-token features
    labels: np.ndarray  # (G, K) float32; for pairs column 0 is preferred, column 1 rejected
    kind: BlockKind  # which loss applies: binary labels, graded labels, or preference pairs
    mean_candidates: np.ndarray | None = None  # (G, K, d) mean over each response, or None
    signals: np.ndarray | None = None  # (G, K, S) on-device signals, or None

    def __post_init__(self) -> None:
        if self.instructions.ndim != 2:
            shape = self.instructions.shape
            raise FeatureError(f"instructions have shape {shape}, expected (G, d)")
        g, d = self.instructions.shape
        if self.candidates.ndim != 3 or self.candidates.shape[0] != g:
            raise FeatureError(
                f"candidates have shape {self.candidates.shape}, expected ({g}, K, {d})"
            )
        if self.candidates.shape[2] != d:
            raise FeatureError(
                f"candidate feature has {self.candidates.shape[2]} values, "
                f"instruction feature has {d}"
            )
        gk = self.candidates.shape[:2]
        if self.labels.shape != gk:
            raise FeatureError(f"labels have shape {self.labels.shape}, expected {gk}")
        mean = self.mean_candidates
        if mean is not None and mean.shape != self.candidates.shape:
            raise FeatureError(
                f"mean_candidates have shape {mean.shape}, expected {self.candidates.shape} "
                "like candidates (one mean vector per candidate, of the same size)"
            )
        if self.signals is not None and (self.signals.ndim != 3 or self.signals.shape[:2] != gk):
            raise FeatureError(
                f"signals have shape {self.signals.shape}, expected ({gk[0]}, {gk[1]}, S): "
                "one row of S signals per candidate"
            )

    @property
    def k(self) -> int:
        return int(self.candidates.shape[1])

    @property
    def parts(self) -> tuple[Part, ...]:
        """The candidate parts this block carries, in input order."""
        parts: tuple[Part, ...] = ("last",)
        if self.mean_candidates is not None:
            parts += ("mean",)
        if self.signals is not None:
            parts += ("signals",)
        return parts

    @property
    def num_signals(self) -> int:
        """S, the width of the signals block (0 without signals)."""
        return 0 if self.signals is None else int(self.signals.shape[2])

    def __len__(self) -> int:
        return int(self.instructions.shape[0])


def training_features(array: object, what: str) -> np.ndarray:
    """Keep float16/float32 (halving memory for fp16 features), cast other floats."""
    array = np.asarray(array)
    if array.dtype.kind != "f":
        raise FeatureError(f"{what} has dtype {array.dtype}, expected float32 or float16")
    if array.dtype not in (np.float16, np.float32):
        array = array.astype(np.float32)
    check_finite(array, what)
    return array


def _optional(array: object | None, what: str) -> np.ndarray | None:
    return None if array is None else training_features(array, what)


@dataclass
class GroupDataset:
    """A list of blocks sharing one feature size; what ``train`` consumes.

    Blocks may differ in the optional parts they carry (feedback recorded
    before mean vectors existed has none); ``parts`` is what every block has,
    which is what a ranker may read when training on the whole dataset.
    """

    blocks: list[Block] = field(default_factory=list)  # groups of equal K, label kind and parts

    def __post_init__(self) -> None:
        sizes = {b.instructions.shape[1] for b in self.blocks}
        if len(sizes) > 1:
            raise FeatureError(f"dataset mixes feature sizes {sorted(sizes)}")
        widths = {b.num_signals for b in self.blocks if b.signals is not None}
        if len(widths) > 1:
            raise FeatureError(f"dataset mixes signal blocks of {sorted(widths)} values")

    # -- construction -------------------------------------------------------------
    @classmethod
    def from_arrays(
        cls,
        instructions: np.ndarray,
        candidates: np.ndarray,
        labels: np.ndarray,
        *,
        mean_candidates: np.ndarray | None = None,
        signals: np.ndarray | None = None,
    ) -> GroupDataset:
        """Wrap (G, d), (G, K, d) and (G, K) arrays as one block, without copying.

        ``mean_candidates`` (G, K, d) and ``signals`` (G, K, S) are the optional
        parts of each candidate.
        """
        inst = training_features(instructions, "instructions")
        cand = training_features(candidates, "candidates")
        lab = np.asarray(labels, dtype=np.float32)
        check_finite(lab, "labels")
        mean = _optional(mean_candidates, "mean_candidates")
        sig = _optional(signals, "signals")
        return cls([Block(inst, cand, lab, label_kind(lab), mean, sig)])

    @classmethod
    def from_groups(cls, groups: Iterable[Group] = (), pairs: Iterable[Pair] = ()) -> GroupDataset:
        """Stack groups into blocks of equal (K, label kind, parts); pairs into K=2 blocks."""
        buckets: dict[tuple[int, str, bool, int], list[Group]] = {}
        for g in groups:
            _check_group(g)
            labels = np.asarray(g.labels, dtype=np.float32)
            width = -1 if g.signals is None else int(np.shape(g.signals)[1])
            key = (len(labels), label_kind(labels), g.mean_candidates is None, width)
            buckets.setdefault(key, []).append(g)
        blocks = [_stack(gs, kind) for (_, kind, _, _), gs in sorted(buckets.items())]
        pair_buckets: dict[tuple[int, int], list[Pair]] = {}
        for p in pairs:
            pair_buckets.setdefault(_pair_key(p), []).append(p)
        blocks += [_stack_pairs(ps) for _, ps in sorted(pair_buckets.items())]
        return cls(blocks)

    def __add__(self, other: GroupDataset) -> GroupDataset:
        return GroupDataset([*self.blocks, *other.blocks])

    # -- inspection ---------------------------------------------------------------
    @property
    def feature_size(self) -> int:
        if not self.blocks:
            raise TrainingError("dataset is empty: it has no feature size")
        return int(self.blocks[0].instructions.shape[1])

    @property
    def parts(self) -> tuple[Part, ...]:
        """The candidate parts every block carries ("last" always), in input order."""
        common = [p for p in ("mean", "signals") if all(p in b.parts for b in self.blocks)]
        parts: tuple[Part, ...] = ("last",)
        if "mean" in common:
            parts += ("mean",)
        if "signals" in common:
            parts += ("signals",)
        return parts

    @property
    def num_signals(self) -> int:
        """S, the width of the signals the blocks carry (0 when none does)."""
        return max((b.num_signals for b in self.blocks), default=0)

    @property
    def num_groups(self) -> int:
        """Groups plus pairs: the number of training examples."""
        return sum(len(b) for b in self.blocks)

    @property
    def num_candidates(self) -> int:
        return sum(len(b) * b.k for b in self.blocks)

    def __len__(self) -> int:
        return self.num_groups

    def groups(self) -> Iterator[Group]:
        """Iterate the non-pair groups one by one (for evaluation and inspection)."""
        for b in self.blocks:
            if b.kind == "pair":
                continue
            for i in range(len(b)):
                yield Group(
                    b.instructions[i],
                    b.candidates[i],
                    b.labels[i],
                    None if b.mean_candidates is None else b.mean_candidates[i],
                    None if b.signals is None else b.signals[i],
                )


def _check_group(group: Group) -> None:
    """Refuse a group whose optional parts do not match its candidates, naming the part."""
    k, d = np.shape(group.candidates)[0], np.shape(group.candidates)[-1]
    mean, signals = group.mean_candidates, group.signals
    if mean is not None and np.shape(mean) != np.shape(group.candidates):
        raise FeatureError(
            f"group mean_candidates have shape {np.shape(mean)}, expected ({k}, {d}) "
            "like its candidates"
        )
    if signals is not None and (np.ndim(signals) != 2 or np.shape(signals)[0] != k):
        raise FeatureError(
            f"group signals have shape {np.shape(signals)}, expected ({k}, S): "
            "one row per candidate"
        )


def _stack_optional(rows: Sequence[np.ndarray | None], what: str) -> np.ndarray | None:
    """Stack one optional part of a bucket's rows (all present or all absent)."""
    if rows[0] is None:
        return None
    return training_features(np.stack([np.asarray(r) for r in rows]), what)


def _stack(groups: Sequence[Group], kind: str) -> Block:
    inst = training_features(np.stack([g.instruction for g in groups]), "instruction")
    cand = training_features(np.stack([g.candidates for g in groups]), "candidates")
    labels = np.stack([np.asarray(g.labels, dtype=np.float32) for g in groups])
    check_finite(labels, "labels")
    mean = _stack_optional([g.mean_candidates for g in groups], "mean_candidates")
    signals = _stack_optional([g.signals for g in groups], "signals")
    return Block(inst, cand, labels, "binary" if kind == "binary" else "graded", mean, signals)


def _pair_part(pair: Pair, part: Literal["mean", "signals"]) -> np.ndarray | None:
    """Both candidates' ``part`` stacked (2, ...), None when the pair has none."""
    first, second = (
        (pair.preferred_mean, pair.rejected_mean)
        if part == "mean"
        else (pair.preferred_signals, pair.rejected_signals)
    )
    if (first is None) != (second is None):
        raise FeatureError(
            f"pair has the {part} part for only one of its two candidates: give both or neither"
        )
    if first is None or second is None:
        return None
    if np.shape(first) != np.shape(second):
        raise FeatureError(
            f"pair {part} parts have shapes {np.shape(first)} and {np.shape(second)}, "
            "expected one shape"
        )
    return np.stack([first, second])


def _pair_key(pair: Pair) -> tuple[int, int]:
    """Which optional parts a pair has (their widths, -1 when absent): pairs stack by it."""
    mean, signals = _pair_part(pair, "mean"), _pair_part(pair, "signals")
    return (
        -1 if mean is None else int(mean.shape[1]),
        -1 if signals is None else int(signals.shape[1]),
    )


def _stack_pairs(pairs: Sequence[Pair]) -> Block:
    inst = training_features(np.stack([p.instruction for p in pairs]), "instruction")
    cand = training_features(
        np.stack([np.stack([p.preferred, p.rejected]) for p in pairs]), "pair candidates"
    )
    labels = np.tile(np.array([1.0, 0.0], dtype=np.float32), (len(pairs), 1))
    mean = _stack_optional([_pair_part(p, "mean") for p in pairs], "pair mean_candidates")
    signals = _stack_optional([_pair_part(p, "signals") for p in pairs], "pair signals")
    return Block(inst, cand, labels, "pair", mean, signals)
