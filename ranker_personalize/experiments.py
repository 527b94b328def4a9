"""The study: learning curves, pooled baseline, cold start, drift, forgetting.

Everything here orchestrates the real pieces (``simulate.run_user`` on per-user
homes, ``globalrank.train_global`` on events read back from those homes) and
turns top-1 picks into rates with intervals (``metrics``). Results are plain
JSON-able dicts so the report and the committed ``results.json`` agree.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from edge.training.loop import TrainConfig
from ranker_personalize import metrics
from ranker_personalize.correctness import (
    CorrectnessSet,
    accuracy,
    first_sample_accuracy,
    teach,
)
from ranker_personalize.globalrank import GlobalRanker, collect_events, train_global
from ranker_personalize.pool import Pool
from ranker_personalize.simulate import Device, SimConfig, rank_pool, run_user
from ranker_personalize.users import SimUser

__all__ = ["Study", "StudyConfig", "drifting"]

log = logging.getLogger(__name__)


@dataclass
class StudyConfig:
    """What the study runs; ``quick()`` is the CI-sized variant."""

    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)  # one simulated feedback session per user per seed
    sim: SimConfig = field(default_factory=SimConfig)  # budgets, update cadence, learner
    noise: float = 0.1  # probability a user's reaction is random
    cold_budgets: tuple[int, ...] = (0, 10, 25, 50, 100)  # events scored in the cold-start run
    side_seeds: tuple[int, ...] = (0, 1, 2)  # seeds of the cold-start, drift, forgetting runs
    drift_users: tuple[str, str] = ("concise", "concrete")  # taste before and after the switch
    drift_switch: int = 100  # event after which the drifting user's taste changes
    drift_budgets: tuple[int, ...] = (0, 50, 100, 110, 125, 150, 200)  # events scored
    drift_replays: tuple[int, ...] = (256, 0)  # replay sizes compared under drift
    forgetting_user: str = "concise"  # taste learned after the correctness task
    forgetting_replays: tuple[int, ...] = (256, 0)  # replay sizes compared for forgetting
    forgetting_train: int = 40  # correctness problems taught before the taste
    ceiling_steps: int = 300  # optimiser steps of the full-label learnability check


def drifting(before: SimUser, after: SimUser, switch: int, name: str) -> Callable[[int], SimUser]:
    """A user whose judge is ``before`` up to event ``switch`` and ``after`` from then on."""
    first, second = replace(before, name=name), replace(after, name=name)
    return lambda event: first if event <= switch else second


def _est(values: np.ndarray) -> dict[str, float]:
    return asdict(metrics.bootstrap(values))


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
        self.results: dict[str, Any] = {"skipped": [], "seconds": {}}
        self.learn_seconds: list[float] = []
        self._personal: dict[str, dict[int, dict[int, np.ndarray]]] = {}  # user->seed->budget
        self._global: dict[int, dict[int, np.ndarray]] = {}  # seed -> budget -> picks

    # -- helpers ------------------------------------------------------------------------
    def _home(self, phase: str, user: str, seed: int) -> Path:
        return self.work / phase / f"seed{seed}" / user

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

    def _relative(self, user: str, picks: list[np.ndarray]) -> np.ndarray:
        scores = self.scores[user]
        mask = metrics.decisive(scores)
        return np.mean([metrics.relative_score(scores, p)[mask] for p in picks], axis=0)

    # -- phases ------------------------------------------------------------------------
    def curves(self) -> None:
        """Every user, every seed: personal curves; then the pooled global ranker."""
        start = time.perf_counter()
        cfg = self.config
        for seed in cfg.seeds:
            if seed != cfg.seeds[0] and not self._time_left(f"curves seed {seed}"):
                break
            for user in self.users:
                home = self._home("curves", user.name, seed)
                result = run_user(user, self.train, self.test, home, seed, cfg.sim)
                self._personal.setdefault(user.name, {})[seed] = result.picks
                self.learn_seconds += result.learn_seconds
                log.info("curves: %s seed %d done", user.name, seed)
            self._global[seed] = self._global_picks(seed)
        self.results["seconds"]["curves"] = time.perf_counter() - start
        self.results["users"] = {u.name: self._user_section(u) for u in self.users}

    def _global_picks(self, seed: int) -> dict[int, np.ndarray]:
        homes = [(self._home("curves", u.name, seed), u.name) for u in self.users]
        picks = {0: np.zeros(len(self.test), dtype=np.int64)}  # no feedback yet: first sample
        for budget in self.config.sim.budgets:
            if budget == 0:
                continue
            events = collect_events(homes, budget, self.config.sim.ranker_name)
            root = self.work / "server" / f"seed{seed}" / f"b{budget}"
            ranker = train_global(events, root, self.config.sim, seed).ranker
            picks[budget] = rank_pool(
                lambda g, r=ranker: r.rank(g.instruction, g.features), self.test
            )
        return picks

    def _user_section(self, user: SimUser) -> dict[str, Any]:
        budgets = self.config.sim.budgets
        seeds = sorted(self._personal[user.name])
        scores = self.scores[user.name]
        mask = metrics.decisive(scores)
        first = metrics.hits(scores, np.zeros(len(scores), dtype=np.int64))[mask]
        personal = {
            b: self._hits(user.name, [self._personal[user.name][s][b] for s in seeds])
            for b in budgets
        }
        pooled = {b: self._hits(user.name, [self._global[s][b] for s in seeds]) for b in budgets}
        section: dict[str, Any] = {
            "judge": user.judge,
            "seeds": seeds,
            "decisive_prompts": int(mask.sum()),
            "test_prompts": len(mask),
            "first": _est(first),
            "random": _est(metrics.random_rate(scores)[mask]),
            "oracle": 1.0,
            "personal": {b: _est(personal[b]) for b in budgets},
            "global": {b: _est(pooled[b]) for b in budgets},
            "relative": {
                b: _est(self._relative(user.name, [self._personal[user.name][s][b] for s in seeds]))
                for b in budgets
            },
            "gain_vs_first": {b: asdict(metrics.paired_gain(personal[b], first)) for b in budgets},
            "gain_vs_global": {
                b: asdict(metrics.paired_gain(personal[b], pooled[b])) for b in budgets
            },
        }
        section["beat_first"] = _first_clear_win(section["gain_vs_first"], budgets)
        section["beat_global"] = _first_clear_win(section["gain_vs_global"], budgets)
        return section

    def ceiling(self) -> None:
        """Learnability: a ranker trained offline on *every* train prompt with the judge's labels.

        If even this cannot beat the first sample on held-out prompts, the taste is not
        visible in the hidden-state features, and no amount of feedback will teach it.
        """
        if not self._time_left("ceiling"):
            return
        from edge.app.dataset import GroupDataset
        from edge.training.loop import train
        from edge.training.rankers import build_ranker, make_config

        out: dict[str, Any] = {}
        for user in self.users:
            scores = np.stack([user.scores(t) for t in self.train.texts])
            keep = metrics.decisive(scores)
            if not keep.any():  # the judge ties every train prompt: nothing to learn from
                continue
            labels = (scores == scores.max(1, keepdims=True)).astype(np.float32)
            data = GroupDataset.from_arrays(
                self.train.instructions[keep], self.train.candidates[keep], labels[keep]
            )
            model = build_ranker(make_config(self.config.sim.kind, data.feature_size), seed=0)
            train(
                model, data, TrainConfig(min_steps=self.config.ceiling_steps, batch_candidates=64)
            )
            picks = _torch_picks(model, self.test)
            out[user.name] = _est(self._hits(user.name, [picks]))
        self.results["ceiling"] = out

    def cold_start(self) -> None:
        """New user: personal ranker initialised from a global ranker of the *other* users."""
        if not self._time_left("cold start"):
            return
        start = time.perf_counter()
        cfg = self.config
        sim = replace(cfg.sim, budgets=cfg.cold_budgets)
        seeds = self._side_seeds()
        out: dict[str, Any] = {}
        for user in self.users:
            warm: list[dict[int, np.ndarray]] = []
            for seed in seeds:
                others = [
                    (self._home("curves", u.name, seed), u.name) for u in self.users if u != user
                ]
                events = collect_events(others, max(cfg.sim.budgets), cfg.sim.ranker_name)
                root = self.work / "server-loo" / f"seed{seed}" / user.name
                base: GlobalRanker = train_global(events, root, cfg.sim, seed)
                home = self._home("cold", user.name, seed)
                warm.append(run_user(
                    user, self.train, self.test, home, seed, sim,
                    base=base.checkpoint, base_ranker=base.ranker,
                ).picks)  # fmt: skip
            scratch = [self._personal[user.name][s] for s in seeds]
            out[user.name] = {
                "seeds": list(seeds),
                "from_global": {
                    b: _est(self._hits(user.name, [w[b] for w in warm])) for b in cfg.cold_budgets
                },
                "from_scratch": {
                    b: _est(self._hits(user.name, [w[b] for w in scratch]))
                    for b in cfg.cold_budgets
                },
            }
        self.results["cold_start"] = out
        self.results["seconds"]["cold_start"] = time.perf_counter() - start

    def _side_seeds(self) -> tuple[int, ...]:
        """Seeds of the side studies: those with a curve run (cold start reuses its stores)."""
        return tuple(s for s in self.config.side_seeds if s in self._global)

    def drift(self) -> None:
        """A user switches taste at ``drift_switch``; scored against the old and new taste."""
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
        for replay in cfg.drift_replays:
            sim = replace(cfg.sim, budgets=cfg.drift_budgets, replay_size=replay)
            runs = [
                run_user(
                    user, self.train, self.test, self._home(f"drift-r{replay}", "drifter", seed),
                    seed, sim,
                ).picks
                for seed in seeds
            ]  # fmt: skip
            out[f"replay_{replay}"] = {
                name: {b: _est(self._hits(name, [r[b] for r in runs])) for b in cfg.drift_budgets}
                for name in (before.name, after.name)
            }
        self.results["drift"] = out
        self.results["seconds"]["drift"] = time.perf_counter() - start

    def forgetting(self, correctness: CorrectnessSet | None) -> None:
        """Correctness skill before and after a user teaches their taste (replay on/off)."""
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
        for replay in cfg.forgetting_replays:
            sim = replace(cfg.sim, replay_size=replay)
            skills: list[dict[int, float]] = []
            picks: list[dict[int, np.ndarray]] = []
            for seed in seeds:
                skill: dict[int, float] = {}

                def prelude(device: Device) -> None:
                    teach(device, taught)
                    device.learn()

                def probe(event: int, device: Device, skill: dict[int, float] = skill) -> None:
                    skill[event] = accuracy(device.rank, held)

                home = self._home(f"forget-r{replay}", user.name, seed)
                picks.append(run_user(
                    user, self.train, self.test, home, seed, sim, prelude=prelude, probe=probe
                ).picks)  # fmt: skip
                skills.append(skill)
            out[f"replay_{replay}"] = {
                "correctness": {b: float(np.mean([s[b] for s in skills])) for b in sim.budgets},
                "correctness_by_seed": {b: [s[b] for s in skills] for b in sim.budgets},
                "taste": {
                    b: _est(self._hits(user.name, [p[b] for p in picks])) for b in sim.budgets
                },
            }
        self.results["forgetting"] = out
        self.results["seconds"]["forgetting"] = time.perf_counter() - start


def _first_clear_win(gains: dict[int, dict[str, float]], budgets: tuple[int, ...]) -> int | None:
    """Smallest budget from which the gain's 95% interval stays above 0 at every later budget."""
    for i, b in enumerate(budgets):
        if all(gains[c]["low"] > 0 for c in budgets[i:]):
            return b
    return None


def _torch_picks(model: Any, pool: Pool) -> np.ndarray:
    import torch

    with torch.no_grad():
        scores = model(torch.from_numpy(pool.instructions), torch.from_numpy(pool.candidates))
    return scores.argmax(-1).numpy()
