"""In-memory training data for rankers: groups of candidates and preference pairs.

The unit of ranking is a *group*: one instruction feature and the K candidate
features sampled for it, with one label per candidate. Listwise losses need the
whole group at once, and batching needs equal K, so the dataset keeps groups in
*blocks* of equal K stacked into dense arrays. A block built from one big numpy
array (the common offline case) is kept as is, without copying.

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

__all__ = ["Block", "BlockKind", "Group", "GroupDataset", "Pair", "label_kind", "training_features"]

BlockKind = Literal["binary", "graded", "pair"]


def label_kind(labels: np.ndarray) -> Literal["binary", "graded"]:
    """``binary`` when every label is 0 or 1, else ``graded`` (real-valued)."""
    return "binary" if bool(np.isin(labels, (0.0, 1.0)).all()) else "graded"


@dataclass(frozen=True)
class Group:
    """One instruction with K labelled candidates."""

    instruction: np.ndarray  # (d,) feature of the last prompt token
    candidates: np.ndarray  # (K, d) one feature row per candidate
    labels: np.ndarray  # (K,) float: 0/1 for thumbs, any real for scores


@dataclass(frozen=True)
class Pair:
    """A preference: for this instruction the user chose ``preferred`` over ``rejected``."""

    instruction: np.ndarray  # (d,) feature of the last prompt token
    preferred: np.ndarray  # (d,) feature of the chosen candidate
    rejected: np.ndarray  # (d,) feature of the candidate passed over


@dataclass(frozen=True)
class Block:
    """Groups of equal K and equal label kind, stacked for batched training."""

    instructions: np.ndarray  # (G, d) float16 or float32
    candidates: np.ndarray  # (G, K, d) float16 or float32
    labels: np.ndarray  # (G, K) float32; for pairs column 0 is preferred, column 1 rejected
    kind: BlockKind  # which loss applies: binary labels, graded labels, or preference pairs

    def __post_init__(self) -> None:
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
        if self.labels.shape != self.candidates.shape[:2]:
            raise FeatureError(
                f"labels have shape {self.labels.shape}, expected {self.candidates.shape[:2]}"
            )

    @property
    def k(self) -> int:
        return int(self.candidates.shape[1])

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


@dataclass
class GroupDataset:
    """A list of blocks sharing one feature size; what ``train`` consumes."""

    blocks: list[Block] = field(default_factory=list)  # groups of equal K and label kind

    def __post_init__(self) -> None:
        sizes = {b.instructions.shape[1] for b in self.blocks}
        if len(sizes) > 1:
            raise FeatureError(f"dataset mixes feature sizes {sorted(sizes)}")

    # -- construction -------------------------------------------------------------
    @classmethod
    def from_arrays(
        cls, instructions: np.ndarray, candidates: np.ndarray, labels: np.ndarray
    ) -> GroupDataset:
        """Wrap (G, d), (G, K, d) and (G, K) arrays as one block, without copying."""
        inst = training_features(instructions, "instructions")
        cand = training_features(candidates, "candidates")
        lab = np.asarray(labels, dtype=np.float32)
        check_finite(lab, "labels")
        if inst.ndim != 2:
            raise FeatureError(f"instructions have shape {inst.shape}, expected (G, d)")
        return cls([Block(inst, cand, lab, label_kind(lab))])

    @classmethod
    def from_groups(cls, groups: Iterable[Group] = (), pairs: Iterable[Pair] = ()) -> GroupDataset:
        """Stack groups into blocks of equal (K, label kind); pairs into one K=2 block."""
        buckets: dict[tuple[int, str], list[Group]] = {}
        for g in groups:
            labels = np.asarray(g.labels, dtype=np.float32)
            key = (len(labels), label_kind(labels))
            buckets.setdefault(key, []).append(g)
        blocks = [_stack(gs, kind) for (_, kind), gs in sorted(buckets.items())]
        pair_list = list(pairs)
        if pair_list:
            blocks.append(_stack_pairs(pair_list))
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
                yield Group(b.instructions[i], b.candidates[i], b.labels[i])


def _stack(groups: Sequence[Group], kind: str) -> Block:
    inst = training_features(np.stack([g.instruction for g in groups]), "instruction")
    cand = training_features(np.stack([g.candidates for g in groups]), "candidates")
    labels = np.stack([np.asarray(g.labels, dtype=np.float32) for g in groups])
    check_finite(labels, "labels")
    return Block(inst, cand, labels, "binary" if kind == "binary" else "graded")


def _stack_pairs(pairs: Sequence[Pair]) -> Block:
    inst = training_features(np.stack([p.instruction for p in pairs]), "instruction")
    cand = training_features(
        np.stack([np.stack([p.preferred, p.rejected]) for p in pairs]), "pair candidates"
    )
    labels = np.tile(np.array([1.0, 0.0], dtype=np.float32), (len(pairs), 1))
    return Block(inst, cand, labels, "pair")
