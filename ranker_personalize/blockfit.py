"""The shipped taste fit over any named blocks, and a fast offline replay of the study.

``edge.app.taste_fit.TasteFit`` fits a user's head over the three blocks the
SDK ships (last-token vector, mean vector, signals). Choosing a *content*
block means fitting the same learner over blocks it does not know yet, before
the SDK's store, ONNX graph and registry carry them. ``BlockFit`` is that
learner with the block layout given as data: it inherits every line of the
optimiser, the standardisation, the priors and the heads' mix from
``TasteFit`` and only replaces the three methods that name the blocks
(building the layout, adding a set, reading the weights). The integration
step turns the layout into a ``TasteFit`` argument; until then this module is
the stand-in, used by the content study only.

``replay`` is the study's feedback loop (``simulate.Session`` and
``PersonalLearner.learn``) without the store, the ONNX file and the registry:
the same prompt order and reactions from the same seeded generator, the same
update schedule (a cold fit of ``cold_passes`` with exact gradients at the
first event, then ``passes`` warm iterations per event with the configured
``refresh``), and the ranking as the composed graph computes it (float32,
stable order, ties to the lowest index). ``tests/ranker_personalize`` checks
that it reproduces the real loop's picks on the shipped blocks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from edge._errors import FeatureError, TrainingError
from edge.app.taste_fit import Reaction, TasteConfig, TasteFit, _Set
from ranker_personalize.users import Reaction as UserReaction
from ranker_personalize.users import SimUser

__all__ = [
    "BlockFit",
    "Blocks",
    "ReplayResult",
    "block_config",
    "ceiling_picks",
    "fit_reaction",
    "pooled",
    "replay",
]

Blocks = Mapping[str, np.ndarray]  # block name -> (P, K, width) features of a pool


def block_config(base: TasteConfig, **changes: Any) -> TasteConfig:
    """``base`` with ``changes``, where ``head_priors`` and ``standardise_each`` may name
    any block: ``TasteConfig`` checks them against the shipped blocks only, so they
    are set after its checks (the integration step widens those checks)."""
    loose = {k: changes.pop(k) for k in ("head_priors", "standardise_each") if k in changes}
    config = replace(base, **changes)
    for name, value in loose.items():
        setattr(config, name, value)
    if not config.head_priors:
        raise TrainingError("head_priors needs at least one head")
    return config


class BlockFit(TasteFit):
    """``TasteFit`` over blocks given by name and width (``sizes``, in stacking order).

    The first block plays the role of the shipped fit's ``last`` block (it must
    be present in every set); the others may be absent from a set (zeros, as
    there). ``has_global`` adds the global score's column exactly as there.
    """

    def __init__(
        self, sizes: Mapping[str, int], config: TasteConfig, has_global: bool = False
    ) -> None:
        names = list(sizes)
        if not names:
            raise TrainingError("a block fit needs at least one block")
        super().__init__(sizes[names[0]], ("last",), config, has_global=False)
        self.blocks = tuple(names)  # type: ignore[arg-type]  # any names here
        self._spans = {}
        width = 0
        for name in names:
            self._spans[name] = (width, width + int(sizes[name]))  # type: ignore[index]
            width += int(sizes[name])
        self._groups = dict(self._spans)  # type: ignore[arg-type]
        self._global_col = None
        if has_global and config.global_weight:
            self._global_col = width
            self._groups["global"] = (width, width + 1)
            width += 1
        self.width = width
        self._x = np.zeros((0, width), np.float32)
        self._ss = np.zeros(width)
        self._count = dict.fromkeys(self._groups, 0)
        self._group_width = np.ones(width)
        for lo, hi in self._groups.values():
            self._group_width[lo:hi] = hi - lo
        self._heads = [self._new_head(root) for root in self._root_priors()]

    def add_set(  # type: ignore[override]
        self, set_id: str, blocks: Mapping[str, np.ndarray], global_scores: np.ndarray | None = None
    ) -> None:
        """Append a shown set: ``blocks`` maps block names to (K, width) features."""
        if set_id in self._sets:
            raise TrainingError(f"set {set_id!r} is already in the fit")
        first = np.asarray(blocks[self.blocks[0]], np.float32)
        k = first.shape[0]
        rows = np.zeros((k, self.width), np.float32)
        g = np.zeros(k) if global_scores is None else np.asarray(global_scores, np.float64)
        given: dict[str, Any] = {**blocks, "global": None if global_scores is None else g[:, None]}
        for group, (lo, hi) in self._groups.items():
            value = given.get(group)
            if value is None:
                continue
            arr = np.asarray(value, np.float64)
            if arr.shape != (k, hi - lo):
                raise FeatureError(f"set {set_id!r}: {group} block has shape {arr.shape}")
            deviations = arr - arr.mean(0)  # only differences within a set matter
            rows[:, lo:hi] = deviations
            if k > 1:
                self._ss[lo:hi] += (deviations**2).sum(0)
                self._count[group] += k - 1
                self._scale_cache = None
        self._grow(k)
        start, stored = self._rows, self._stored
        self._x[stored : stored + k - 1] = rows[1:]
        self._row_of[stored : stored + k - 1] = np.arange(start + 1, start + k)
        self._first_of[stored : stored + k - 1] = start
        self._set_of[stored : stored + k - 1] = len(self._sets)
        self._g[start : start + k] = g
        for head in self._heads:
            head.h[start : start + k] = rows @ head.v.astype(np.float32)
            if head.filled:
                dirs = head.dirs[: head.filled].T.astype(np.float32)
                head.dir_rows[start : start + k, : head.filled] = rows @ dirs
        if len(self._sets) % self.config.refresh_block == 0:
            self._block_starts.append((start, stored))
        self._rows += k
        self._stored += k - 1
        self._sets[set_id] = _Set(start, k)
        self._firsts.append(start)

    def weights(self) -> dict[str, np.ndarray]:
        """The ranking head (the heads' mix) per block, float32 in raw feature space."""
        v = self.v
        return {b: v[lo:hi].astype(np.float32) for b, (lo, hi) in self._spans.items()}

    def score(self, blocks: Blocks, global_scores: np.ndarray | None = None) -> np.ndarray:
        """(..., K) scores of (..., K, width) blocks, as the composed graph computes them:
        ``(1 + u)`` times the global ranker's scores (when given), plus one float32
        product per block."""
        weights = self.weights()
        first = blocks[self.blocks[0]]
        total = np.zeros(np.shape(first)[:-1], np.float32)
        if global_scores is not None:
            total += np.float32(1.0 + self.global_weight) * np.asarray(global_scores, np.float32)
        for name, w in weights.items():
            total += np.asarray(blocks[name], np.float32) @ w
        return total


def fit_reaction(reaction: UserReaction) -> Reaction:
    """A simulated user's reaction as the store records it and the fit reads it."""
    if reaction.kind == "thumb":
        return Reaction("thumb", reaction.candidate, 1.0 if reaction.up else 0.0)
    return Reaction("pick", reaction.candidate, None, tuple(reaction.rejected))


@dataclass
class ReplayResult:
    """One user's replayed session."""

    picks: dict[int, np.ndarray]  # budget -> top-1 pick per test prompt
    mix: list[tuple[float, ...]] = field(default_factory=list)  # heads' shares after each update
    fit_ms: list[float] = field(default_factory=list)  # wall time of each update's fit
    events: list[tuple[int, Reaction]] = field(default_factory=list)  # (train prompt, reaction)
    global_weight: dict[int, float] = field(default_factory=dict)  # budget -> u


def _select(blocks: Blocks, i: int) -> dict[str, np.ndarray]:
    return {name: value[i] for name, value in blocks.items()}


def replay(
    user: SimUser,
    train: Blocks,
    train_texts: Sequence[Sequence[str]],
    test: Blocks,
    seed: int,
    config: TasteConfig,
    budgets: Sequence[int] = (0, 10, 25, 50, 100, 200),
    prior: tuple[np.ndarray, np.ndarray] | None = None,
    first_sample_until_update: bool = False,
) -> ReplayResult:
    """``simulate.run_user`` without the store, ONNX and registry (see the module doc).

    ``train`` and ``test`` hold the blocks the head reads (every name in them).
    ``prior`` is a global ranker's (P, K) scores of the train and test prompts
    (``pooled``): it ranks until the first update and the head is fitted on top
    of it, weighted by the user's ``1 + u``, as the study's cold start does;
    without it the first sample (index 0) is the pick until the first update.
    ``first_sample_until_update`` shows the first sample before the first update
    even with a prior, which then enters as the head's offset from the first
    update on.
    """
    g_train, g_test = prior if prior is not None else (None, None)
    n_train = len(train_texts)
    rng = np.random.default_rng(seed)
    order = np.concatenate(
        [rng.permutation(n_train) for _ in range(1 + max(budgets) // n_train)]
    )  # as simulate.Session draws it, from the same generator as the reactions
    sizes = {name: int(value.shape[-1]) for name, value in train.items()}
    fit: BlockFit | None = None
    reactions: dict[str, list[Reaction]] = {}
    result = ReplayResult({})
    n_test = len(next(iter(test.values())))
    if 0 in budgets:
        ranked = g_test is not None and not first_sample_until_update
        result.picks[0] = (
            np.argmax(g_test, 1).astype(np.int64)
            if ranked and g_test is not None
            else np.zeros(n_test, np.int64)
        )
    for event in range(1, max(budgets) + 1):
        i = int(order[event - 1])
        k = len(train_texts[i])
        g = None if g_train is None else g_train[i]
        if fit is not None:
            shown = np.argsort(-fit.score(_select(train, i), g), kind="stable")
        else:
            ranked = g is not None and not first_sample_until_update
            shown = np.argsort(-g, kind="stable") if ranked and g is not None else np.arange(k)
        reaction = fit_reaction(user.react(train_texts[i], shown.tolist(), rng))
        result.events.append((i, reaction))
        cold = fit is None
        if fit is None:
            fit = BlockFit(sizes, config, has_global=g is not None)
        set_id = f"e{event}"  # every event is a new shown set, as in the study
        fit.add_set(set_id, _select(train, i), g)
        reactions[set_id] = [reaction]
        fit.set_reactions(set_id, reactions[set_id])
        report = (
            fit.fit(config.cold_passes, 1.0) if cold else fit.fit(config.passes, config.refresh)
        )
        result.mix.append(report.mix)
        result.fit_ms.append(1000 * report.seconds)
        if event in budgets:
            result.picks[event] = np.argmax(fit.score(test, g_test), axis=1).astype(np.int64)
            result.global_weight[event] = fit.global_weight
    return result


def pooled(
    events: Sequence[Sequence[tuple[int, Reaction]]], train: Blocks, config: TasteConfig
) -> BlockFit:
    """The pooled global ranker (``globalrank.train_global``): the same learner fitted
    once, cold, on every given user's events together (each event its own set)."""
    sizes = {name: int(value.shape[-1]) for name, value in train.items()}
    fit = BlockFit(sizes, config)
    for u, user_events in enumerate(events):
        for e, (i, reaction) in enumerate(user_events):
            fit.add_set(f"u{u}e{e}", _select(train, i))
            fit.set_reactions(f"u{u}e{e}", [reaction])
    fit.fit(config.cold_passes, 1.0)
    return fit


def ceiling_picks(
    scores: np.ndarray, train: Blocks, test: Blocks, config: TasteConfig, passes: int = 200
) -> np.ndarray | None:
    """The full-label ceiling (``Study.ceiling``): every decisive train prompt's exact
    preferences (each top answer over each other), one update per set in order, then
    every head refitted to convergence; the test picks. None if no prompt is decisive."""
    sizes = {name: int(value.shape[-1]) for name, value in train.items()}
    fit = BlockFit(sizes, config)
    for i in np.flatnonzero(scores.max(1) > scores.min(1)).tolist():
        fit.add_set(str(i), _select(train, i))
        best = scores[i].max()
        rest = tuple(int(j) for j in np.flatnonzero(scores[i] < best))
        fit.set_reactions(
            str(i),
            [Reaction("pick", int(t), None, rest) for t in np.flatnonzero(scores[i] == best)],
        )
        fit.fit(config.cold_passes if fit.num_sets == 1 else config.passes)
    if fit.num_sets == 0:
        return None
    fit.fit(passes, refresh=1.0)
    return np.argmax(fit.score(test), axis=1).astype(np.int64)
