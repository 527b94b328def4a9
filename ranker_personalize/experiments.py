"""The study's phases: learning curves, pooled baseline, ceiling, cold start, drift,
forgetting, isolation.

Everything here orchestrates the real pieces (``simulate.run_user`` on per-user
homes, ``globalrank.train_global`` on events read back from those homes) and
turns top-1 picks into rates with intervals (``metrics``). Results are plain
JSON-able dicts so the report and the committed ``results.json`` agree.

Every curve is run twice: with the head reading the on-device signals (what
ships) and without them, because several judges are text statistics that a
signal computes (``users.MIRRORS``): there the first variant is handed the
taste by construction, and the second shows what the vectors alone learn.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from edge.app.personal import PersonalRanker
from edge.app.taste import Reaction as FitReaction
from edge.app.taste import TasteFit
from edge.runtime.parts import Part, part_layout
from ranker_personalize import metrics
from ranker_personalize.correctness import (
    CorrectnessSet,
    accuracy,
    first_sample_accuracy,
    teach,
)
from ranker_personalize.globalrank import collect_events, train_global
from ranker_personalize.pool import Pool
from ranker_personalize.simulate import (
    RunResult,
    Session,
    SimConfig,
    pool_parts,
    rank_pool,
    run_user,
    taste_config,
)
from ranker_personalize.users import CONFLICTS, SimUser

__all__ = ["VARIANTS", "Study", "StudyConfig", "drifting", "events_to_reach"]

log = logging.getLogger(__name__)

# Curve variants: the head with the signals block (what ships) and without it.
VARIANTS: dict[str, bool] = {"signals": True, "no_signals": False}


@dataclass
class StudyConfig:
    """What the study runs; ``study.quick_config()`` is the CI-sized variant."""

    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)  # one simulated feedback session per user per seed
    sim: SimConfig = field(default_factory=SimConfig)  # budgets, update cadence, learner
    noise: float = 0.1  # probability a user's reaction is random
    cold_budgets: tuple[int, ...] = (0, 10, 25, 50, 100)  # events scored in the cold-start run
    side_seeds: tuple[int, ...] = (0, 1, 2)  # seeds of the cold-start, drift, forgetting runs
    drift_users: tuple[str, str] = ("concise", "verbose")  # taste before and after the switch
    drift_switch: int = 100  # event after which the drifting user's taste changes
    drift_budgets: tuple[int, ...] = (0, 50, 100, 110, 125, 150, 200)  # events scored
    short_history: int = 50  # the forgetting window compared with the default (events)
    forgetting_user: str = "concise"  # taste learned after the correctness task
    forgetting_train: int = 40  # correctness problems shown before the taste
    ceiling_passes: int = 200  # optimiser iterations of the full-label fit


def drifting(before: SimUser, after: SimUser, switch: int, name: str) -> Callable[[int], SimUser]:
    """A user whose judge is ``before`` up to event ``switch`` and ``after`` from then on."""
    first, second = replace(before, name=name), replace(after, name=name)
    return lambda event: first if event <= switch else second


def events_to_reach(curve: dict[int, float], target: float) -> int | None:
    """The first budget whose rate is at least ``target``; None if none is."""
    return next((b for b in sorted(curve) if curve[b] >= target), None)


def _est(values: np.ndarray) -> dict[str, float]:
    return asdict(metrics.bootstrap(values))


Picks = dict[int, np.ndarray]  # budget -> top-1 pick per test prompt


class Study:
    """Runs the phases on one pool split; each phase adds a section to ``results``."""

    def __init__(
        self,
        train: Pool,
        test: Pool,
        users: list[SimUser],
        config: StudyConfig,
        work: Path,
        deadline: float | None = None,
    ) -> None:
        self.train, self.test, self.users, self.config = train, test, users, config
        self.work = work
        self.deadline = deadline  # time.monotonic() after which optional phases are skipped
        self.scores = {u.name: np.stack([u.scores(t) for t in test.texts]) for u in users}
        self.test_parts = pool_parts(test)  # computed once, for every ranking of test
        self.results: dict[str, Any] = {"skipped": [], "seconds": {}}
        self.updates: list[Any] = []  # LearnReports of the shipped variant's curve runs
        # variant -> user -> seed -> picks, and variant -> seed -> picks of the pooled ranker
        self._personal: dict[str, dict[str, dict[int, Picks]]] = {v: {} for v in VARIANTS}
        self._global: dict[str, dict[int, Picks]] = {v: {} for v in VARIANTS}
        self._ceiling: dict[str, dict[str, np.ndarray]] = {v: {} for v in VARIANTS}

    # -- helpers ------------------------------------------------------------------------
    def _home(self, phase: str, user: str, seed: int) -> Path:
        return self.work / phase / f"seed{seed}" / user

    def _run(
        self,
        user: SimUser | Callable[[int], SimUser],
        home: Path,
        seed: int,
        sim: SimConfig,
        **kw: Any,
    ) -> RunResult:
        """``run_user`` on this study's split, ranking the test prompts with their signals."""
        return run_user(
            user, self.train, self.test, home, seed, sim, test_parts=self.test_parts, **kw
        )

    def _sim(self, variant: str, **changes: Any) -> SimConfig:
        return replace(self.config.sim, use_signals=VARIANTS[variant], **changes)

    def _time_left(self, phase: str) -> bool:
        if self.deadline is not None and time.monotonic() > self.deadline:
            self.results["skipped"].append(phase)
            log.warning("time budget spent: skipping %s", phase)
            return False
        return True

    def _hits(self, user: str, picks: list[np.ndarray]) -> np.ndarray:
        """Seed-averaged hit per decisive test prompt."""
        scores = self.scores[user]
        mask = metrics.decisive(scores)
        return np.mean([metrics.hits(scores, p)[mask] for p in picks], axis=0)

    def _relative(self, user: str, picks: list[np.ndarray]) -> float:
        scores = self.scores[user]
        mask = metrics.decisive(scores)
        if not mask.any():  # the judge ties every test prompt
            return float("nan")
        return float(np.mean([metrics.relative_score(scores, p)[mask] for p in picks]))

    def _side_seeds(self) -> tuple[int, ...]:
        """Seeds of the side studies that have a curve run (cold start reuses its stores)."""
        done = self._global["signals"]
        return tuple(s for s in self.config.side_seeds if s in done) or tuple(done)[:1]

    # -- learning curves ------------------------------------------------------------------
    def curves(self) -> None:
        """Every user, every seed, both variants: personal curves; then the pooled ranker."""
        start = time.perf_counter()
        for seed in self.config.seeds:
            if seed != self.config.seeds[0] and not self._time_left(f"curves seed {seed}"):
                break
            for variant in VARIANTS:
                for user in self.users:
                    home = self._home(f"curves-{variant}", user.name, seed)
                    result = self._run(user, home, seed, self._sim(variant))
                    self._personal[variant].setdefault(user.name, {})[seed] = result.picks
                    if variant == "signals":
                        self.updates += result.updates
                    log.info("curves: %s %s seed %d done", user.name, variant, seed)
                self._global[variant][seed] = self._global_picks(variant, seed)
        self.results["seconds"]["curves"] = time.perf_counter() - start

    def _global_picks(self, variant: str, seed: int) -> Picks:
        sim = self._sim(variant)
        homes = [(self._home(f"curves-{variant}", u.name, seed), u.name) for u in self.users]
        picks: Picks = {0: np.zeros(len(self.test), dtype=np.int64)}  # no feedback: first sample
        for budget in sim.budgets:
            if budget == 0:
                continue
            events = collect_events(homes, budget, sim.ranker_name)
            home = self.work / "server" / variant / f"seed{seed}" / f"b{budget}"
            pooled = train_global(events, home, sim)
            picks[budget] = rank_pool(pooled.device, self.test, self.test_parts)
            pooled.close()
        return picks

    # -- the full-label ceiling -------------------------------------------------------------
    def ceiling(self) -> None:
        """Learnability: the same learner fitted on *every* train prompt with the judge's
        exact preferences (each top answer over each other answer), per variant: the
        sets arrive in order with one update each (so the heads' mix is earned as in
        use), then every head is refitted to convergence.

        If even this cannot beat the first sample on held-out prompts, the taste is
        not (linearly) visible in the representation, and feedback will not teach it.
        """
        start = time.perf_counter()
        train_parts = {"last": self.train.candidates, "mean": self.train.means,
                       **pool_parts(self.train)}  # fmt: skip
        test_parts = {"last": self.test.candidates, "mean": self.test.means, **self.test_parts}
        for variant in VARIANTS:
            sim = self._sim(variant)
            config = taste_config(sim)
            blocks: tuple[Part, ...] = (
                "last",
                "mean",
                *(("signals",) if sim.use_signals else ()),
                *(("lexicon",) if sim.use_lexicon else ()),
            )
            for user in self.users:
                scores = np.stack([user.scores(t) for t in self.train.texts])
                fit = TasteFit(part_layout(self.train.candidates.shape[2], blocks), config)
                for i in np.flatnonzero(metrics.decisive(scores)):
                    fit.add_set(str(i), {b: train_parts[b][i] for b in blocks})
                    top = np.flatnonzero(scores[i] == scores[i].max())
                    rest = tuple(int(j) for j in np.flatnonzero(scores[i] < scores[i].max()))
                    fit.set_reactions(
                        str(i), [FitReaction("pick", int(t), None, rest) for t in top]
                    )
                    # One warm update per set, as in use: each set is scored by every
                    # head before it is learned, so the heads' mix is prequential.
                    fit.fit(config.cold_passes if fit.num_sets == 1 else config.passes)
                if fit.num_sets == 0:  # the judge ties every train prompt: nothing to learn
                    continue
                fit.fit(self.config.ceiling_passes, refresh=1.0)
                picks = fit.score({b: test_parts[b] for b in blocks}).argmax(1)
                self._ceiling[variant][user.name] = picks
        self.results["seconds"]["ceiling"] = time.perf_counter() - start

    # -- per-user sections --------------------------------------------------------------------
    def summarise_users(self) -> None:
        """Rates with intervals per user: what the report's tables and the summary read."""
        self.results["users"] = {u.name: self._user_section(u) for u in self.users}
        self.results["pairs"] = self._pairs()

    def _curve(self, variant: str, user: str) -> dict[int, np.ndarray]:
        runs = self._personal[variant][user]
        seeds = sorted(runs)
        return {b: self._hits(user, [runs[s][b] for s in seeds]) for b in self.config.sim.budgets}

    def _pooled(self, variant: str, user: str) -> dict[int, np.ndarray]:
        runs = self._global[variant]
        seeds = sorted(runs)
        return {b: self._hits(user, [runs[s][b] for s in seeds]) for b in self.config.sim.budgets}

    def _user_section(self, user: SimUser) -> dict[str, Any]:
        budgets = self.config.sim.budgets
        scores = self.scores[user.name]
        mask = metrics.decisive(scores)
        first = metrics.hits(scores, np.zeros(len(scores), dtype=np.int64))[mask]
        personal = self._curve("signals", user.name)
        pooled = self._pooled("signals", user.name)
        section: dict[str, Any] = {
            "judge": user.judge,
            "seeds": sorted(self._personal["signals"][user.name]),
            "decisive_prompts": int(mask.sum()),
            "test_prompts": len(mask),
            "first": _est(first),
            "random": _est(metrics.random_rate(scores)[mask]),
            "oracle": 1.0,
            "personal": {b: _est(personal[b]) for b in budgets},
            "global": {b: _est(pooled[b]) for b in budgets},
            "relative": {
                b: self._relative(
                    user.name, [r[b] for r in self._personal["signals"][user.name].values()]
                )
                for b in budgets
            },
            "gain_vs_first": {b: asdict(metrics.paired_gain(personal[b], first)) for b in budgets},
            "gain_vs_global": {
                b: asdict(metrics.paired_gain(personal[b], pooled[b])) for b in budgets
            },
        }
        if self._personal["no_signals"].get(user.name):
            bare = self._curve("no_signals", user.name)
            bare_pooled = self._pooled("no_signals", user.name)
            section["personal_no_signals"] = {b: _est(bare[b]) for b in budgets}
            section["global_no_signals"] = {b: _est(bare_pooled[b]) for b in budgets}
        for variant, key in (("signals", "ceiling"), ("no_signals", "ceiling_no_signals")):
            picks = self._ceiling[variant].get(user.name)
            if picks is not None:
                section[key] = _est(self._hits(user.name, [picks]))
        shares = [u.fit.mix for u in self._last_updates(user.name) if u.fit is not None]
        if shares:  # each head's share of the ranking head after the last event, mean of seeds
            section["head_mix"] = [float(x) for x in np.mean(shares, axis=0)]
        section["beat_first"] = _first_clear_win(section["gain_vs_first"], budgets)
        section["beat_global"] = _first_clear_win(section["gain_vs_global"], budgets)
        if "ceiling" in section:
            means = {b: float(personal[b].mean()) for b in budgets}
            ceiling, start = section["ceiling"]["mean"], section["first"]["mean"]
            section["events_to_80pct_ceiling"] = events_to_reach(means, 0.8 * ceiling)
            section["events_to_80pct_gain"] = (
                events_to_reach(means, start + 0.8 * (ceiling - start)) if ceiling > start else None
            )
        return section

    def _last_updates(self, user: str) -> list[Any]:
        """The shipped variant's last update of each seed's run for ``user`` (each seed
        has its own store, so a run ends where the next update's cursor is lower)."""
        runs = [u for u in self.updates if u.user == user and u.updated]
        following = [*runs[1:], None]
        return [
            u
            for u, after in zip(runs, following, strict=True)
            if after is None or after.cursor < u.cursor
        ]

    def _pairs(self) -> dict[str, Any]:
        """Each conflicting pair: the two personal rankers vs the pooled one, averaged."""
        top = max(self.config.sim.budgets)
        users = self.results["users"]
        out: dict[str, Any] = {}
        for a, b in CONFLICTS:
            if a not in users or b not in users:
                continue
            personal = [users[u]["personal"][top]["mean"] for u in (a, b)]
            pooled = [users[u]["global"][top]["mean"] for u in (a, b)]
            out[f"{a}/{b}"] = {
                "personal": float(np.mean(personal)),
                "global": float(np.mean(pooled)),
                "margin": float(np.mean(personal) - np.mean(pooled)),
                "events": top,
            }
        return out

    # -- cold start ---------------------------------------------------------------------------
    def cold_start(self) -> None:
        """A new user whose registry holds a global ranker fitted on the *other* users'
        feedback (200 events each): the first sample until their first update (the SDK's
        default cold start), then their head fitted on top of its scores. Compared with
        starting from scratch."""
        if not self._time_left("cold start"):
            return
        start = time.perf_counter()
        cfg = self.config
        sim = replace(cfg.sim, budgets=cfg.cold_budgets)
        seeds = self._side_seeds()
        out: dict[str, Any] = {}
        for user in self.users:
            warm: list[Picks] = []
            global_weights: list[dict[int, float]] = []  # per seed: budget -> the head's u
            for seed in seeds:
                others = [
                    (self._home("curves-signals", u.name, seed), u.name)
                    for u in self.users
                    if u != user
                ]
                events = collect_events(others, max(cfg.sim.budgets), cfg.sim.ranker_name)
                pooled = train_global(
                    events, self.work / "server-loo" / f"seed{seed}" / user.name, sim
                )
                home = self._home("cold", user.name, seed)
                pooled.publish(home, sim.ranker_name)
                pooled.close()
                weights: dict[int, float] = {}
                warm.append(self._run(user, home, seed, sim, probe=_global_weight(weights)).picks)
                global_weights.append(weights)
            scratch = [self._personal["signals"][user.name][s] for s in seeds]
            out[user.name] = {
                "seeds": list(seeds),
                "from_global": {
                    b: _est(self._hits(user.name, [w[b] for w in warm])) for b in cfg.cold_budgets
                },
                "from_scratch": {
                    b: _est(self._hits(user.name, [w[b] for w in scratch]))
                    for b in cfg.cold_budgets
                },
                # u, the head's weight on the global score ((1 + u) g), mean over seeds
                "global_weight": {
                    b: float(np.mean([w[b] for w in global_weights])) for b in cfg.cold_budgets
                },
            }
        self.results["cold_start"] = out
        self.results["seconds"]["cold_start"] = time.perf_counter() - start

    # -- drift ----------------------------------------------------------------------------------
    def drift(self) -> None:
        """A user switches taste at ``drift_switch``; scored against the old and the new
        taste, with the learner refitting on all events or on the newest few."""
        if not self._time_left("drift"):
            return
        start = time.perf_counter()
        cfg = self.config
        by_name = {u.name: u for u in self.users}
        names = cfg.drift_users if set(cfg.drift_users) <= by_name.keys() else list(by_name)[:2]
        before, after = (by_name[n] for n in names)
        user = drifting(before, after, cfg.drift_switch, "drifter")
        seeds = self._side_seeds()
        out: dict[str, Any] = {
            "before": before.name,
            "after": after.name,
            "switch": cfg.drift_switch,
            "seeds": list(seeds),
        }
        for history in (cfg.sim.history, cfg.short_history):
            sim = replace(cfg.sim, budgets=cfg.drift_budgets, history=history)
            runs = [
                self._run(user, self._home(f"drift-h{history}", "drifter", seed), seed, sim).picks
                for seed in seeds
            ]
            out[f"history_{history}"] = {
                name: {b: _est(self._hits(name, [r[b] for r in runs])) for b in cfg.drift_budgets}
                for name in (before.name, after.name)
            }
        self.results["drift"] = out
        self.results["seconds"]["drift"] = time.perf_counter() - start

    # -- forgetting ------------------------------------------------------------------------------
    def forgetting(self, correctness: CorrectnessSet | None) -> None:
        """Correctness skill before and after a user teaches their taste, with the learner
        refitting on every event (the correctness feedback replayed forever) or on the
        newest few (it drops out)."""
        if correctness is None:
            self.results["skipped"].append("forgetting (no correctness cache)")
            return
        if not self._time_left("forgetting"):
            return
        start = time.perf_counter()
        cfg = self.config
        taught, held = correctness.split(min(cfg.forgetting_train, len(correctness) // 2))
        user = next((u for u in self.users if u.name == cfg.forgetting_user), self.users[0])
        seeds = self._side_seeds()
        out: dict[str, Any] = {
            "user": user.name,
            "seeds": list(seeds),
            "taught_problems": len(taught),
            "held_out_problems": int((held.labels.max(1) > 0.5).sum()),
            "first_sample": first_sample_accuracy(held),
        }
        for history in (cfg.sim.history, cfg.short_history):
            sim = replace(cfg.sim, history=history)
            skills: list[dict[int, float]] = []
            picks: list[Picks] = []
            taught_events: list[int] = []
            for seed in seeds:
                skill: dict[int, float] = {}

                def prelude(device: PersonalRanker, counts: list[int] = taught_events) -> None:
                    counts.append(teach(device, taught))
                    device.learn()

                def probe(
                    event: int, device: PersonalRanker, skill: dict[int, float] = skill
                ) -> None:
                    skill[event] = accuracy(device.rank, held)

                home = self._home(f"forget-h{history}", user.name, seed)
                picks.append(self._run(user, home, seed, sim, prelude=prelude, probe=probe).picks)
                skills.append(skill)
            out["taught_events"] = taught_events[0]
            out[f"history_{history}"] = {
                "correctness": {b: float(np.mean([s[b] for s in skills])) for b in sim.budgets},
                "correctness_by_seed": {b: [s[b] for s in skills] for b in sim.budgets},
                "taste": {
                    b: _est(self._hits(user.name, [p[b] for p in picks])) for b in sim.budgets
                },
            }
        self.results["forgetting"] = out
        self.results["seconds"]["forgetting"] = time.perf_counter() - start

    # -- isolation ----------------------------------------------------------------------------
    def isolation(self) -> None:
        """The two users of a conflicting pair share one device (one store, one registry)
        and take turns, event by event: each one's ranker must end bitwise equal to the
        one they trained alone (the curve run of the same seed)."""
        if not self._time_left("isolation"):
            return
        by_name = {u.name: u for u in self.users}
        pair = next((p for p in CONFLICTS if set(p) <= by_name.keys()), None)
        seed = self.config.seeds[0]
        if pair is None or seed not in self._global["signals"]:
            self.results["skipped"].append("isolation (no conflicting pair)")
            return
        sim = self._sim("signals")
        home = self.work / "isolation" / f"seed{seed}"
        sessions = [Session(by_name[n], self.train, home, seed, sim) for n in pair]
        try:
            for _ in range(max(sim.budgets)):
                for session in sessions:
                    session.step()
            out: dict[str, Any] = {"pair": list(pair), "seed": seed, "events": max(sim.budgets)}
            for session in sessions:
                name = session.device.user
                alone = PersonalRanker(
                    session.device.central, self._home("curves-signals", name, seed), name,
                    sim.ranker_name,
                )  # fmt: skip
                shared_picks = rank_pool(session.device, self.test, self.test_parts)
                out[name] = {
                    "weights_equal": session.device.registry.load_weights(name, sim.ranker_name)
                    == alone.registry.load_weights(name, sim.ranker_name),
                    "picks_equal": bool(
                        np.array_equal(shared_picks, rank_pool(alone, self.test, self.test_parts))
                    ),
                    "store_users": session.device.store.users(),
                    "own_events": len(session.device.store.events(name)),
                }
                alone.close()
        finally:
            for session in sessions:
                session.close()
        self.results["isolation"] = out


def _first_clear_win(gains: dict[int, dict[str, float]], budgets: tuple[int, ...]) -> int | None:
    """Smallest budget from which the gain's 95% interval stays above 0 at every later budget."""
    for i, b in enumerate(budgets):
        if all(gains[c]["low"] > 0 for c in budgets[i:]):
            return b
    return None


def _global_weight(into: dict[int, float]) -> Callable[[int, PersonalRanker], None]:
    """A probe recording, per budget, the u of the user's saved head (0 before any)."""

    def probe(budget: int, device: PersonalRanker) -> None:
        has = device.registry.has(device.user, device.name)
        meta = device.registry.current(device.user, device.name).metadata if has else {}
        into[budget] = float(meta.get("global_weight") or 0.0)

    return probe
