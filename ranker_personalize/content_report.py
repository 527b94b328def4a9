"""The content study's phases and their tables (``python -m ranker_personalize content``).

- ``choose``: every candidate representation on the study's format users and
  the *development* half of the content users (the first round: generic vectors).
- ``lexicon``, ``lexicon2``, ``lexicon3``: the on-device lexicon's transforms and
  priors, on the same users. The default (``DEFAULT``) is chosen from these
  development tables only.
- ``final``: the baseline, the chosen candidate and the alternatives worth
  reporting, on every user, the *held-out* content half included.
- ``pull``: the learner's pull towards the global ranker (``TasteConfig.l2``)
  on every user, with the shipped blocks and the two heads shipped before,
  then what ships (the third round).
- ``cold``: a new user and the global ranker; ``diagnose``: why content tastes
  learn slowly.

Each phase writes ``<phase>.json`` (every rate with its interval) and
``<phase>.md`` (the tables ``docs/results/content-tastes.md`` quotes) under
the output directory.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from edge.app.taste import TasteConfig
from ranker_personalize import metrics
from ranker_personalize.blockfit import pooled, replay
from ranker_personalize.content_diagnose import diagnose
from ranker_personalize.content_study import (
    BUDGETS,
    Bank,
    Candidate,
    compare,
    decisive_counts,
    lexicon_makers,
    study_users,
    vector_makers,
    words_maker,
)
from ranker_personalize.content_users import CONTENT_KINDS, DEV, HELD_OUT
from ranker_personalize.pool import load_pool
from ranker_personalize.study import split_pool
from ranker_personalize.words import ContentSpec

__all__ = [
    "CHOOSE",
    "COLD_BUDGETS",
    "DEFAULT",
    "EARLIER_DEFAULT",
    "FINAL",
    "LEXICON",
    "PULL",
    "cold_start",
    "cold_tables",
    "diagnose_tables",
    "run_content_study",
    "tables",
]

_V2 = ("last", "mean", "signals")
_SHIPPED_HEADS: tuple[dict[str, float], ...] = ({"signals": 100.0}, {"last": 0.01})

CHOOSE: tuple[Candidate, ...] = (
    Candidate("v2", _V2, note="today's representation: last + mean at 0.6 depth, signals"),
    Candidate("v2+words", (*_V2, "words"), note="on device: hashed words and pairs, 1024 columns"),
    Candidate("v2+minilm", (*_V2, "minilm"), note="on device: MiniLM-L6 sentence vector (384)"),
    Candidate("v2+static", (*_V2, "static"), note="on device: mean of MiniLM's input embeddings"),
    Candidate("v2+emb", (*_V2, "mean0"), note="central: mean of the embedding layer (576)"),
    Candidate("v2+mean6", (*_V2, "mean6"), note="central: mean at layer 6 of 30"),
    Candidate(
        "v2+final", (*_V2, "mean30"), note="central: mean of the final layer (LM head input)"
    ),
    Candidate("v2+emb+static", (*_V2, "mean0", "static"), note="central emb + on-device static"),
    Candidate("v2+emb+words", (*_V2, "mean0", "words"), note="central emb + on-device words"),
    Candidate(
        "v2+emb, content head",
        (*_V2, "mean0"),
        head_priors=(*_SHIPPED_HEADS, {"last": 0.01, "mean": 0.01}),
        note="a third head that reads the content block and the signals, not last / mean",
    ),
    Candidate(
        "v2+emb, per-coordinate",
        (*_V2, "mean0"),
        standardise_each=("signals", "global", "mean0"),
        note="the content block standardised coordinate by coordinate",
    ),
    Candidate(
        "v2+emb, x10",
        (*_V2, "mean0"),
        head_priors=tuple({**h, "mean0": 10.0} for h in _SHIPPED_HEADS),
        note="the content block's prior variance x10 in both heads",
    ),
)

_LEX_EACH = ("signals", "global", "lexicon")  # the lexicon standardised per category
LEXICON: tuple[Candidate, ...] = (
    Candidate("v2", _V2, note="today's representation"),
    Candidate("v2+emb", (*_V2, "mean0"), note="the embedding-layer mean (the earlier choice)"),
    Candidate(
        "v2+lex", (*_V2, "lexicon"), standardise_each=_LEX_EACH,
        note="lexicon log(1 + count), singulars, standardised per category",
    ),
    Candidate(
        "v2+lex, whole", (*_V2, "lexicon"),
        note="the same, standardised as a whole (like a hidden-state part)",
    ),
    Candidate(
        "v2+lex exact", (*_V2, "lex_exact"), standardise_each=("signals", "global", "lex_exact"),
        note="exact words only (no singulars)",
    ),
    Candidate(
        "v2+lex rate", (*_V2, "lex_rate"), standardise_each=("signals", "global", "lex_rate"),
        note="count per word",
    ),
    Candidate(
        "v2+lex sqrt", (*_V2, "lex_sqrt"), standardise_each=("signals", "global", "lex_sqrt"),
        note="count / sqrt(words)",
    ),
    Candidate(
        "v2+lex x10", (*_V2, "lexicon"), standardise_each=_LEX_EACH,
        head_priors=tuple({**h, "lexicon": 10.0} for h in _SHIPPED_HEADS),
        note="the lexicon's prior variance x10 in both heads",
    ),
    Candidate(
        "v2+lex, lexicon head", (*_V2, "lexicon"), standardise_each=_LEX_EACH,
        head_priors=(*_SHIPPED_HEADS, {"lexicon": 100.0}),
        note="a third head trusting the lexicon 100x",
    ),
    Candidate(
        "v2+emb+lex", (*_V2, "mean0", "lexicon"), standardise_each=_LEX_EACH,
        note="both content blocks",
    ),
)  # fmt: skip
LEXICON2: tuple[Candidate, ...] = (
    Candidate("v2+lex, whole", (*_V2, "lexicon"), note="standardised as a whole"),
    Candidate("v2+emb+lex, whole", (*_V2, "mean0", "lexicon"), note="both, lexicon whole"),
    Candidate(
        "v2+lex, whole, sparse", (*_V2, "lexicon"), sparse_groups=("lexicon",),
        note="adaptive per-category prior (floor 0.5)",
    ),
    Candidate(
        "v2+lex, whole, sparse 0.1", (*_V2, "lexicon"), sparse_groups=("lexicon",),
        sparse_floor=0.1, note="adaptive per-category prior (floor 0.1)",
    ),
    Candidate("v2+lex rate, whole", (*_V2, "lex_rate"), note="count per word, whole"),
    Candidate("v2+lex exact, whole", (*_V2, "lex_exact"), note="exact words, whole"),
    Candidate(
        "v2+lex, whole, x3", (*_V2, "lexicon"),
        head_priors=tuple({**h, "lexicon": 3.0} for h in _SHIPPED_HEADS),
        note="the lexicon's prior x3 in both heads",
    ),
    Candidate("v2+lex+words, whole", (*_V2, "lexicon", "words"), note="+ hashed words"),
)  # fmt: skip
_SPARSE = ("lexicon",)
LEXICON3: tuple[Candidate, ...] = (
    Candidate(
        "v2+lex rate, sparse", (*_V2, "lex_rate"), sparse_groups=("lex_rate",),
        note="count per word, adaptive prior",
    ),
    Candidate(
        "v2+emb+lex, sparse", (*_V2, "mean0", "lexicon"), sparse_groups=_SPARSE,
        note="+ the embedding-layer mean",
    ),
    Candidate(
        "v2+lex, sparse 1.0", (*_V2, "lexicon"), sparse_groups=_SPARSE, sparse_floor=1.0,
        note="adaptive prior, floor 1",
    ),
    Candidate(
        "v2+lex, sparse, signals sparse too", (*_V2, "lexicon"),
        sparse_groups=("lexicon", "signals"), note="the signals' prior adapts too",
    ),
    Candidate(
        "v2+lex, sparse, per category", (*_V2, "lexicon"), sparse_groups=_SPARSE,
        standardise_each=_LEX_EACH, note="adaptive prior, standardised per category",
    ),
    Candidate(
        "v2+lex, sparse 0.25", (*_V2, "lexicon"), sparse_groups=_SPARSE, sparse_floor=0.25,
        note="adaptive prior, floor 0.25",
    ),
)  # fmt: skip

# The candidate the lexicon phases picked on the development users (what ships:
# TasteConfig's defaults; docs/results/content-tastes.md) and the one it replaced.
DEFAULT = "v2+lex, sparse"
EARLIER_DEFAULT = "v2+emb"
FINAL: tuple[Candidate, ...] = (
    *(c for c in CHOOSE if c.name in ("v2", EARLIER_DEFAULT)),
    Candidate(
        DEFAULT, (*_V2, "lexicon"), sparse_groups=_SPARSE,
        note="the lexicon standardised as a whole, its prior adapting per category (shipped)",
    ),
    Candidate(
        "v2+emb+lex, sparse", (*_V2, "mean0", "lexicon"), sparse_groups=_SPARSE,
        note="does the embedding-layer mean add anything to the lexicon?",
    ),
)  # fmt: skip


# The pull of each head's weights towards the global ranker (TasteConfig.l2), on
# the shipped blocks, with the two heads shipped before it changed; then what
# ships (l2 10 and a third head at a tenth of the pull): the third round
# (docs/results/content-tastes.md).
_TWO_HEADS: tuple[dict[str, float], ...] = ({"signals": 100.0, "lexicon": 0.01}, {"last": 0.01})
PULL: tuple[Candidate, ...] = (
    *(
        Candidate(
            f"l2 {l2:g}", (*_V2, "lexicon"), head_priors=_TWO_HEADS, sparse_groups=_SPARSE,
            learner=(("l2", l2),), note="the two heads shipped before, with this l2",
        )
        for l2 in (1.0, 3.0, 5.0, 10.0, 15.0, 30.0)
    ),
    Candidate(
        "l2 10, three heads", (*_V2, "lexicon"), head_priors=TasteConfig().head_priors,
        sparse_groups=_SPARSE, learner=(("l2", 10.0),),
        note="what ships: the two heads and the mean-vector one at a tenth of the pull",
    ),
)  # fmt: skip

COLD_BUDGETS: tuple[int, ...] = (0, 10, 25, 50, 100)


def cold_start(
    bank: Bank,
    candidate: Candidate,
    users: Sequence[Any],
    seeds: Sequence[int] = (0, 1, 2),
    events: int = 200,
) -> dict[str, Any]:
    """A new user whose device holds a global ranker fitted on the *other* users'
    first ``events`` events (leave-one-user-out, as the study's cold start), two
    ways: the global ranks from the first answer (``from_global``, what ships), or
    the first sample is shown until the user's first update and the global enters
    as the head's offset from then on (``first_then_global``); against no global
    (``from_scratch``). Top-1 per user and budget, seed-averaged, with intervals."""
    train, test = bank.blocks(candidate.blocks)
    config = candidate.config()
    runs = {
        (u.name, s): replay(u, train, bank.train.texts, test, s, config, (events,))
        for u in users
        for s in seeds
    }
    out: dict[str, Any] = {}
    for user in users:
        scores = np.stack([user.scores(t) for t in bank.test.texts])
        mask = metrics.decisive(scores)
        picks: dict[str, list[dict[int, np.ndarray]]] = {k: [] for k in _COLD_WAYS}
        for seed in seeds:
            others = [runs[(u.name, seed)].events[:events] for u in users if u.name != user.name]
            glob = pooled(others, train, config)
            prior = (glob.score(train), glob.score(test))
            picks["from_scratch"].append(
                replay(user, train, bank.train.texts, test, seed, config, COLD_BUDGETS).picks
            )
            picks["from_global"].append(
                replay(user, train, bank.train.texts, test, seed, config, COLD_BUDGETS,
                       prior=prior).picks
            )  # fmt: skip
            picks["first_then_global"].append(
                replay(user, train, bank.train.texts, test, seed, config, COLD_BUDGETS,
                       prior=prior, first_sample_until_update=True).picks
            )  # fmt: skip
        first = metrics.hits(scores, np.zeros(len(scores), np.int64))[mask]
        out[user.name] = {"first": asdict(metrics.bootstrap(first))}
        for way, runs_of_way in picks.items():
            hits = {
                b: np.mean([metrics.hits(scores, p[b])[mask] for p in runs_of_way], axis=0)
                for b in COLD_BUDGETS
            }
            out[user.name][way] = {b: asdict(metrics.bootstrap(h)) for b, h in hits.items()}
            out[user.name][way + "_gain_at_0"] = asdict(metrics.paired_gain(hits[0], first))
    return out


_COLD_WAYS = ("from_scratch", "from_global", "first_then_global")


def _bank(pool_dir: Path, vectors: Path) -> tuple[Bank, Any]:
    pool = load_pool(pool_dir)
    train, test = split_pool(pool)
    makers = {
        **vector_makers(vectors),
        "words": words_maker(ContentSpec()),
        **lexicon_makers(),
    }
    return Bank(train, test, makers), pool


def run_content_study(
    pool_dir: Path,
    vectors: Path,
    out: Path,
    phase: str = "final",
    command: str = "python -m ranker_personalize content",
    seeds: int = 5,
    candidates: Sequence[Candidate] | None = None,
) -> Path:
    """Run one phase and write ``<phase>.json`` and ``<phase>.md`` under ``out``."""
    started = time.perf_counter()
    bank, pool = _bank(pool_dir, vectors)
    users = study_users(
        "format+dev" if phase in ("choose", "lexicon", "lexicon2", "lexicon3") else "all"
    )
    if phase == "diagnose":
        users = study_users("dev")
        by_name = {c.name: c for c in (*CHOOSE, *FINAL)}
        results = {DEFAULT: diagnose(bank, by_name[DEFAULT], by_name["v2"], DEV,
                                     tuple(range(seeds)))}  # fmt: skip
    elif phase == "cold":
        chosen = list(candidates or [c for c in FINAL if c.name == DEFAULT])
        results = {
            c.name: {"cold_start": cold_start(bank, c, users, tuple(range(seeds)))} for c in chosen
        }
    else:
        phases = {
            "choose": CHOOSE, "lexicon": LEXICON, "lexicon2": LEXICON2, "lexicon3": LEXICON3,
            "pull": PULL,
        }  # fmt: skip
        chosen = list(candidates or phases.get(phase, FINAL))
        results = compare(bank, chosen, users, seeds=tuple(range(seeds)), budgets=BUDGETS)
    meta = {
        "phase": phase,
        "command": command,
        "pool": str(pool_dir.name),
        "prompts": len(pool),
        "train_prompts": len(bank.train),
        "test_prompts": len(bank.test),
        "seeds": seeds,
        "budgets": list(COLD_BUDGETS if phase == "cold" else BUDGETS),
        "decisive": decisive_counts(users, bank.test),
        "users": [u.name for u in users],
        "runtime_s": time.perf_counter() - started,
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores shared with other jobs",
        "learner": "the shipped TasteFit after every event (ranker_personalize/blockfit.py replay)",
    }
    out.mkdir(parents=True, exist_ok=True)
    body = {"meta": meta, "candidates": results}
    (out / f"{phase}.json").write_text(json.dumps(body, indent=1, default=_jsonable))
    path = out / f"{phase}.md"
    render = {"cold": cold_tables, "diagnose": diagnose_tables}.get(phase, tables)
    path.write_text(render(body))
    return path


def _jsonable(value: object) -> object:
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON-able: {type(value)}")


def _pct(e: Mapping[str, float] | None, interval: bool = True) -> str:
    if not e:
        return "-"
    if not interval:
        return f"{100 * e['mean']:.0f}"
    return f"{100 * e['mean']:.0f} [{100 * e['low']:.0f}, {100 * e['high']:.0f}]"


def _group_row(name: str, group: Mapping[str, Any], budgets: Sequence[int]) -> str:
    worst = group.get("worst_gain_at_50")
    gain = (
        f"{worst['user']} {100 * worst['mean']:+.0f} [{100 * worst['low']:+.0f}, "
        f"{100 * worst['high']:+.0f}]"
        if worst
        else "-"
    )
    cells = [
        f"{group['first']}",
        *(f"{group[str(b)]}" for b in budgets if b),
        f"{group['ceiling']}",
    ]
    return f"| {name} | " + " | ".join(cells) + f" | {gain} |"


def tables(body: Mapping[str, Any]) -> str:
    """The phase's markdown: one summary table per user group, then per-user tables."""
    meta, results = body["meta"], body["candidates"]
    budgets = meta["budgets"]
    head = "| candidate | first | " + " | ".join(f"@{b}" for b in budgets if b)
    head += " | ceiling | smallest gain over first @50 [95%] |"
    rule = "|" + "---|" * (len(budgets) + 3)
    lines = [
        f"# Content study, phase `{meta['phase']}`",
        "",
        f"`{meta['command']}`: {meta['prompts']} prompts ({meta['train_prompts']} train / "
        f"{meta['test_prompts']} test, split by topic), {meta['seeds']} seeds, "
        f"{meta['runtime_s'] / 60:.0f} min on {meta['machine']}. Learner: {meta['learner']}.",
        "",
        "Decisive test prompts per user: "
        + ", ".join(f"{u} {n}" for u, n in meta["decisive"].items())
        + ".",
        "",
    ]
    groups = {
        "format": "the study's nine users (format, mixed, lexical, topical)",
        "dev": "content users, development half",
        "held": "content users, held-out half",
        "content": "all twelve content users",
    }
    for group, title in groups.items():
        rows = [
            _group_row(name, r["summary"][group], budgets)
            for name, r in results.items()
            if group in r["summary"] and (group != "content" or "held" in r["summary"])
        ]
        if rows:
            lines += [f"## Mean top-1 (%): {title}", "", head, rule, *rows, ""]
    for name, r in results.items():
        lines += [f"## `{name}` per user (top-1 %, 95% interval over test prompts)", ""]
        lines += [
            "| user | kind | first | " + " | ".join(f"@{b}" for b in budgets if b)
            + " | ceiling | gain @50 |",
            "|" + "---|" * (len(budgets) + 4),
        ]  # fmt: skip
        for user, u in r["users"].items():
            kind = CONTENT_KINDS.get(user, "study user")
            half = " (dev)" if user in DEV else " (held-out)" if user in HELD_OUT else ""
            gain = u["gain_vs_first"].get(50) or u["gain_vs_first"].get("50")
            curve = u["curve"]
            cells = [_pct(curve.get(b) or curve.get(str(b))) for b in budgets if b]
            lines.append(
                f"| {user} | {kind}{half} | {_pct(u['first'])} | " + " | ".join(cells)
                + f" | {_pct(u['ceiling'])} | {_pct(gain) if gain else '-'} |"
            )  # fmt: skip
        lines.append("")
    return "\n".join(lines)


def cold_tables(body: Mapping[str, Any]) -> str:
    """The cold-start phase's markdown: per user, the three ways of starting."""
    meta, results = body["meta"], body["candidates"]
    budgets = meta["budgets"]
    lines = [
        "# Content study, phase `cold`: a new user and the global ranker",
        "",
        f"`{meta['command']}`: {meta['prompts']} prompts, {meta['seeds']} seeds, "
        f"{meta['runtime_s'] / 60:.0f} min on {meta['machine']}. The global ranker is the "
        "same learner fitted on the *other* users' first 200 events (leave-one-user-out).",
        "",
    ]
    for name, r in results.items():
        lines += [
            f"## `{name}`: top-1 % (95% interval); gain at 0 events over the first sample",
            "",
            "| user | start | " + " | ".join(f"{b} ev" for b in budgets) + " | gain @0 |",
            "|" + "---|" * (len(budgets) + 3),
        ]
        below = []
        for user, u in r["cold_start"].items():
            for way in _COLD_WAYS:
                curve = u[way]
                cells = [_pct(curve.get(b) or curve.get(str(b))) for b in budgets]
                gain = u[way + "_gain_at_0"]
                lines.append(f"| {user} | {way} | " + " | ".join(cells) + f" | {_pct(gain)} |")
                if way == "from_global" and gain["high"] < 0:
                    below.append(user)
        lines += ["", f"Clearly below the first sample at 0 events from the global ranker: "
                  f"{', '.join(below) or 'none'}.", ""]  # fmt: skip
    return "\n".join(lines)


def diagnose_tables(body: Mapping[str, Any]) -> str:
    """The diagnose phase's markdown (``content_diagnose``), development users only."""
    meta, results = body["meta"], body["candidates"]
    ((name, d),) = results.items()
    users = list(d["judge_feature"])

    def cell(mapping: Mapping[Any, float], key: Any) -> str:
        value = mapping.get(key, mapping.get(str(key)))
        return "-" if value is None else f"{value:.0f}"

    lines = [
        "# Content study, phase `diagnose` (development users only)",
        "",
        f"`{meta['command']}`: {meta['seeds']} seeds, {meta['runtime_s'] / 60:.0f} min. "
        "Top-1 %, mean over the seeds (see `ranker_personalize/content_diagnose.py`).",
        "",
        f"## Feedback or representation? `{name}` with the study's feedback vs a user who "
        "picks the best of all K without noise; `v2` with the judge's own score as a block",
        "",
        "| user | study feedback @10 / @50 / @200 | best of K @10 / @50 / @200 "
        "| v2 + judge as a feature @10 / @50 / @200 |",
        "|---|---|---|---|",
    ]
    for u in users:
        study, best = d["best_of_k"][u]["study_feedback"], d["best_of_k"][u]["best_of_k"]
        judge = d["judge_feature"][u]
        row = [" / ".join(cell(c, b) for b in (10, 50, 200)) for c in (study, best, judge)]
        lines.append(f"| {u} | " + " | ".join(row) + " |")
    sets = list(next(iter(d["ceiling_by_sets"].values()))["v2"])
    lines += [
        "",
        "## Full-label ceiling by the number of labelled train prompts",
        "",
        "| user | representation | " + " | ".join(f"{n} prompts" for n in sets) + " |",
        "|" + "---|" * (len(sets) + 2),
    ]
    for u in users:
        for rep, row in d["ceiling_by_sets"][u].items():
            lines.append(f"| {u} | {rep} | " + " | ".join(cell(row, n) for n in sets) + " |")
    widths = list(next(iter(d["oracle_words"].values())))
    lines += [
        "",
        "## Hashed words with the judge's own word list as the weights (no learning)",
        "",
        "| user | " + " | ".join(f"{w} columns" for w in widths) + " |",
        "|" + "---|" * (len(widths) + 1),
    ]
    for u in users:
        lines.append(f"| {u} | " + " | ".join(cell(d["oracle_words"][u], w) for w in widths) + " |")
    return "\n".join(lines) + "\n"
