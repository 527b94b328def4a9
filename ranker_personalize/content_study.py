"""The content study: which candidate representation lets a head learn content tastes.

Each *candidate* is a set of feature blocks (the shipped ones: ``last``,
``mean``, ``signals``; and content blocks: hashed words computed on device,
vectors central could send, a sentence encoder) with the learner's settings
for them (each head's prior per block, which blocks are standardised
coordinate by coordinate). For every candidate, user and seed the study
replays the study's feedback loop (``blockfit.replay``: the shipped torch-free
learner, event by event, picks-identical to the real store / ONNX / registry
loop on the shipped blocks) and fits the full-label ceiling; rates are top-1
agreement with the user's judge on the held-out test prompts (decisive ones
only), with 95% bootstrap intervals over those prompts, as in the study.

Users: the study's nine (``users.make_users``: mostly format tastes) and the
twelve content users (``content_users``), whose development half is what the
candidates are chosen on and whose held-out half is only reported.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge.app.taste import TasteConfig
from ranker_personalize import metrics
from ranker_personalize.blockfit import block_config, ceiling_picks, replay
from ranker_personalize.content_users import DEV, HELD_OUT, make_content_users
from ranker_personalize.pool import Pool
from ranker_personalize.simulate import pool_signals
from ranker_personalize.users import SimUser, make_users
from ranker_personalize.words import ContentSpec, content_block

__all__ = [
    "BUDGETS",
    "Bank",
    "Candidate",
    "compare",
    "decisive_counts",
    "lexicon_makers",
    "study_users",
    "summarise_candidate",
    "vector_makers",
    "words_maker",
]

log = logging.getLogger(__name__)

BUDGETS: tuple[int, ...] = (0, 10, 25, 50, 100, 200)
FORMAT_USERS = tuple(u.name for u in make_users())


@dataclass(frozen=True)
class Candidate:
    """A representation (the blocks a head reads) and the learner's settings for it."""

    name: str  # short label in the tables
    blocks: tuple[str, ...]  # feature blocks, first one always present (see BlockFit)
    # One head per entry: block -> prior factor (absent: 1); the shipped default is
    # ({"signals": 100}, {"last": 0.01}).
    head_priors: tuple[dict[str, float], ...] = ({"signals": 100.0}, {"last": 0.01})
    standardise_each: tuple[str, ...] = ("signals", "global")  # per-coordinate groups
    note: str = ""  # what it tests
    # groups whose prior adapts per coordinate: none unless named (the shipped
    # TasteConfig adapts the lexicon's)
    sparse_groups: tuple[str, ...] = ()
    sparse_floor: float = 0.5  # TasteConfig.sparse_floor
    # Other TasteConfig fields set for this candidate (name, value), e.g. (("l2", 10.0),)
    learner: tuple[tuple[str, float], ...] = ()

    def config(self, base: TasteConfig | None = None) -> TasteConfig:
        return block_config(
            base or TasteConfig(),
            head_priors=self.head_priors,
            standardise_each=self.standardise_each,
            sparse_groups=self.sparse_groups,
            sparse_floor=self.sparse_floor,
            **dict(self.learner),
        )


Maker = Callable[[Pool], np.ndarray]  # a pool's (P, K, width) block


class Bank:
    """Feature blocks of the train and test pools, computed once per name.

    ``makers`` map extra block names to a function of a pool (content blocks);
    ``last``, ``mean`` and ``signals`` come from the pool itself.
    """

    def __init__(self, train: Pool, test: Pool, makers: Mapping[str, Maker]) -> None:
        self.train, self.test = train, test
        self.makers = dict(makers)
        self._cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def _make(self, name: str, pool: Pool) -> np.ndarray:
        if name == "last":
            return pool.candidates
        if name == "mean":
            return pool.means
        if name == "signals":
            return pool_signals(pool)
        if name not in self.makers:
            raise KeyError(f"no feature block named {name!r}")
        return np.asarray(self.makers[name](pool), np.float32)

    def get(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        if name not in self._cache:
            self._cache[name] = (self._make(name, self.train), self._make(name, self.test))
        return self._cache[name]

    def blocks(self, names: Iterable[str]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        pairs = {n: self.get(n) for n in names}
        return {n: p[0] for n, p in pairs.items()}, {n: p[1] for n, p in pairs.items()}


def words_maker(spec: ContentSpec) -> Maker:
    """The on-device hashed-words block of every answer of a pool."""
    return lambda pool: np.stack([content_block(texts, spec) for texts in pool.texts])


def vector_makers(root: Path) -> dict[str, Maker]:
    """Blocks read from ``content_vectors``' cache under ``root``: ``minilm`` (sentence
    vectors), ``static`` (MiniLM's mean input embedding), and from central ``mean<L>`` /
    ``last<L>`` (the mean / last-token state at layer L: 0 is the embedding layer)."""
    from ranker_personalize.content_vectors import LAYERS, load_vectors

    loaded: dict[tuple[str, tuple[str, ...]], dict[str, np.ndarray]] = {}

    def arrays(kind: str, pool: Pool) -> dict[str, np.ndarray]:
        key = (kind, tuple(pool.uids))
        if key not in loaded:  # every layer of a pool is read once (float16 on disk)
            loaded[key] = load_vectors(root / kind, pool.uids, widen=False)
        return loaded[key]

    def minilm(name: str) -> Maker:
        return lambda pool: arrays("minilm-vectors", pool)[name].astype(np.float32)

    def central(name: str, layer: int) -> Maker:
        index = LAYERS.index(layer)
        return lambda pool: arrays("central", pool)[name][:, :, index].astype(np.float32)

    makers = {"minilm": minilm("sentence"), "static": minilm("static")}
    for layer in LAYERS:
        makers[f"mean{layer}"] = central("mean", layer)
        makers[f"last{layer}"] = central("last", layer)
    return makers


def lexicon_makers() -> dict[str, Maker]:
    """The on-device lexicon block (``edge.runtime.lexicon``: category counts) with the
    transforms the study compares: ``lexicon`` (the shipped recipe: ``log(1 + count)``,
    singulars matched), ``lex_exact`` (the same, exact words only), ``lex_rate``
    (count per word), ``lex_sqrt`` (count / sqrt(words))."""
    from edge.runtime.lexicon import category_counts

    counted: dict[tuple[bool, tuple[str, ...]], tuple[np.ndarray, np.ndarray]] = {}

    def counts(pool: Pool, singular: bool) -> tuple[np.ndarray, np.ndarray]:
        key = (singular, tuple(pool.uids))
        if key not in counted:
            per_prompt = [category_counts(texts, singular) for texts in pool.texts]
            counted[key] = (
                np.stack([c for c, _ in per_prompt]),
                np.stack([n for _, n in per_prompt]),
            )
        return counted[key]

    def log1p(singular: bool) -> Maker:
        return lambda pool: np.log1p(counts(pool, singular)[0])

    def rate(pool: Pool) -> np.ndarray:
        c, n = counts(pool, True)
        return c / np.maximum(n, 1.0)[..., None]

    def sqrt(pool: Pool) -> np.ndarray:
        c, n = counts(pool, True)
        return c / np.sqrt(np.maximum(n, 1.0))[..., None]

    return {"lexicon": log1p(True), "lex_exact": log1p(False), "lex_rate": rate, "lex_sqrt": sqrt}


def study_users(which: str = "all") -> list[SimUser]:
    """``format`` (the study's nine), ``dev``, ``held`` (content halves), ``content``, ``all``."""
    fmt, dev = make_users(), make_content_users(DEV)
    held = make_content_users(HELD_OUT)
    groups: dict[str, list[SimUser]] = {
        "format": list(fmt), "dev": list(dev), "held": list(held),
        "content": [*dev, *held], "all": [*fmt, *dev, *held],
    }  # fmt: skip
    return [u for part in which.split("+") for u in groups[part]]


def decisive_counts(users: Sequence[SimUser], test: Pool) -> dict[str, int]:
    """Test prompts on which each user's judge does not tie all K answers."""
    return {u.name: int(metrics.decisive(_scores(u, test)).sum()) for u in users}


def _scores(user: SimUser, pool: Pool) -> np.ndarray:
    return np.stack([user.scores(t) for t in pool.texts])


def _est(values: np.ndarray) -> dict[str, float]:
    return asdict(metrics.bootstrap(values))


@dataclass
class _UserRun:
    hits: dict[int, np.ndarray]  # budget -> seed-averaged hit per decisive test prompt
    first: np.ndarray  # the first sample's hit per decisive test prompt
    ceiling: np.ndarray | None  # the full-label head's hit per decisive test prompt
    mix: list[float] = field(default_factory=list)  # heads' shares after the last event
    fit_ms: list[float] = field(default_factory=list)  # every update's fit time


def _run_user(
    user: SimUser,
    bank: Bank,
    candidate: Candidate,
    seeds: Sequence[int],
    budgets: Sequence[int],
    ceiling: bool,
) -> _UserRun:
    train, test = bank.blocks(candidate.blocks)
    config = candidate.config()
    scores = _scores(user, bank.test)
    mask = metrics.decisive(scores)
    runs = [replay(user, train, bank.train.texts, test, s, config, budgets) for s in seeds]
    hits = {
        b: np.mean([metrics.hits(scores, r.picks[b])[mask] for r in runs], axis=0) for b in budgets
    }
    first = metrics.hits(scores, np.zeros(len(scores), np.int64))[mask]
    top = None
    if ceiling:
        picks = ceiling_picks(_scores(user, bank.train), train, test, config)
        top = None if picks is None else metrics.hits(scores, picks)[mask]
    mix = np.mean([r.mix[-1] for r in runs], axis=0).tolist() if runs[0].mix else []
    return _UserRun(hits, first, top, mix, [m for r in runs for m in r.fit_ms])


def compare(
    bank: Bank,
    candidates: Sequence[Candidate],
    users: Sequence[SimUser],
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    budgets: Sequence[int] = BUDGETS,
    ceiling: bool = True,
) -> dict[str, Any]:
    """Every candidate on every user: curves, first sample, ceiling, paired gains."""
    out: dict[str, Any] = {}
    for candidate in candidates:
        start = time.perf_counter()
        per_user: dict[str, Any] = {}
        fit_ms: list[float] = []
        for user in users:
            run = _run_user(user, bank, candidate, seeds, budgets, ceiling)
            fit_ms += run.fit_ms
            per_user[user.name] = {
                "decisive": len(run.first),
                "first": _est(run.first),
                "curve": {b: _est(h) for b, h in run.hits.items()},
                "gain_vs_first": {
                    b: asdict(metrics.paired_gain(h, run.first)) for b, h in run.hits.items()
                },
                "ceiling": None if run.ceiling is None else _est(run.ceiling),
                "mix": run.mix,
            }
        out[candidate.name] = {
            "candidate": {**asdict(candidate)},
            "users": per_user,
            "fit_ms_p50": float(np.median(fit_ms)) if fit_ms else None,
            "seconds": time.perf_counter() - start,
        }
        out[candidate.name]["summary"] = summarise_candidate(out[candidate.name], budgets)
        log.info("content study: %s in %.0fs", candidate.name, time.perf_counter() - start)
    return out


def _group_mean(users: Mapping[str, Any], names: Iterable[str], key: Callable[[Any], Any]) -> Any:
    values = [key(users[n]) for n in names if n in users]
    values = [v for v in values if v is not None]
    return round(100 * float(np.mean(values)), 1) if values else None


def _at(budget: int) -> Callable[[Any], Any]:
    return lambda user: user["curve"][budget]["mean"]


def summarise_candidate(section: Mapping[str, Any], budgets: Sequence[int]) -> dict[str, Any]:
    """Group means (percent) of a candidate's users at each budget, ceilings, and the
    smallest content user's gain over its first sample at 50 events (with interval)."""
    users = section["users"]
    groups = {"format": FORMAT_USERS, "dev": DEV, "held": HELD_OUT, "content": (*DEV, *HELD_OUT)}
    out: dict[str, Any] = {}
    for group, names in groups.items():
        if not any(n in users for n in names):
            continue
        out[group] = {
            "first": _group_mean(users, names, lambda u: u["first"]["mean"]),
            **{str(b): _group_mean(users, names, _at(b)) for b in budgets},
            "ceiling": _group_mean(
                users, names, lambda u: u["ceiling"]["mean"] if u["ceiling"] else None
            ),
        }  # fmt: skip
        if 50 in budgets:
            gains = {n: users[n]["gain_vs_first"][50] for n in names if n in users}
            worst = min(gains, key=lambda n: gains[n]["mean"])
            out[group]["worst_gain_at_50"] = {"user": worst, **gains[worst]}
    return out
