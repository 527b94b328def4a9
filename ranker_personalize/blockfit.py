"""The shipped taste fit over any named blocks, and a fast offline replay of the study.

``edge.app.taste.TasteFit`` takes its block layout as data (block name ->
width), so the content study fits the shipped learner, line for line, over
blocks the SDK does not carry (``block_config`` lets the priors name them).

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

from edge.app.taste import Reaction, TasteConfig, TasteFit
from edge.app.taste.config import GROUPS
from ranker_personalize.users import Reaction as UserReaction
from ranker_personalize.users import SimUser

__all__ = [
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
    any block (they become ``extra_blocks``, which ``TasteConfig`` accepts)."""
    named = {
        name for prior in changes.get("head_priors", base.head_priors) for name in prior
    } | set(changes.get("standardise_each", base.standardise_each))
    named |= set(changes.get("sparse_groups", base.sparse_groups))
    extra = tuple(sorted(named - set(GROUPS) - set(base.extra_blocks)))
    return replace(base, extra_blocks=(*base.extra_blocks, *extra), **changes)


def _layout(blocks: Blocks) -> dict[str, int]:
    return {name: int(value.shape[-1]) for name, value in blocks.items()}


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
    layout = _layout(train)
    fit: TasteFit | None = None
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
            fit = TasteFit(layout, config, has_global=g is not None)
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
) -> TasteFit:
    """The pooled global ranker (``globalrank.train_global``): the same learner fitted
    once, cold, on every given user's events together (each event its own set)."""
    fit = TasteFit(_layout(train), config)
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
    fit = TasteFit(_layout(train), config)
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
