"""The markdown report and PNG figures, written from the study's results dict.

Every number in the report is read from ``results`` (also saved as
``results.json`` next to it), so the text can never disagree with the data.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ranker_personalize.content_users import judge_description, judge_kind
from ranker_personalize.users import MIRRORS

__all__ = ["write_report"]


def _key(d: dict[Any, Any], b: int) -> Any:
    """JSON turns int keys into strings; accept both."""
    return d[b] if b in d else d[str(b)]


def _pct(e: dict[str, float] | None) -> str:
    return "n/a" if not e else f"{100 * e['mean']:.0f}"


def _ci(e: dict[str, float]) -> str:
    return f"{100 * e['mean']:.0f} [{100 * e['low']:.0f}, {100 * e['high']:.0f}]"


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.0f}"


def _when(b: int | None, top: int) -> str:
    return f"> {top}" if b is None else f"{b}"


def _plot_curves(results: dict[str, Any], budgets: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    users = list(results["users"])
    cols = 3
    rows = -(-len(users) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.3 * rows), squeeze=False)
    lines = (
        ("personal", "personal", "o-"),
        ("personal, no signals", "personal_no_signals", "^-"),
        ("global (pooled)", "global", "s--"),
    )
    for ax, name in zip(axes.flat, users, strict=False):
        sec = results["users"][name]
        for label, key, style in lines:
            if key not in sec:
                continue
            means = [_key(sec[key], b)["mean"] for b in budgets]
            ax.plot(budgets, means, style, label=label, ms=4)
            if key == "personal":
                lows = [_key(sec[key], b)["low"] for b in budgets]
                highs = [_key(sec[key], b)["high"] for b in budgets]
                ax.fill_between(budgets, lows, highs, alpha=0.2)
        ax.axhline(sec["first"]["mean"], color="gray", ls=":", label="first sample")
        ax.axhline(sec["random"]["mean"], color="black", ls="-.", lw=0.8, label="random")
        ax.axhline(1.0, color="tab:olive", lw=0.8, label="oracle")
        if "ceiling" in sec:
            ax.axhline(sec["ceiling"]["mean"], color="purple", ls="--", lw=0.8,
                       label="full-label ceiling")  # fmt: skip
        ax.set_xscale("symlog", linthresh=10)
        ax.set_xticks(budgets)
        ax.set_xticklabels([str(b) for b in budgets])
        ax.set_xlim(0, budgets[-1] * 1.1)
        ax.set_ylim(0, 1.05)
        ax.set_title(f"{name} ({judge_kind(sec['judge'])}, {sec['decisive_prompts']} prompts)",
                     fontsize=9)  # fmt: skip
        ax.set_xlabel("feedback events")
        ax.set_ylabel("top-1 = user's preferred")
    for ax in list(axes.flat)[len(users) :]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_pairs(
    series: dict[str, dict[str, Any]], budgets: list[int], title: str, path: Path
) -> None:
    """One panel per key of ``series``; each maps a line label to {budget: estimate}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(series)
    cols = min(3, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        for label, points in series[name].items():
            xs = [b for b in budgets if b in points or str(b) in points]
            ax.plot(xs, [_key(points, b)["mean"] for b in xs], "o-", ms=4, label=label)
            lo = [_key(points, b)["low"] for b in xs]
            hi = [_key(points, b)["high"] for b in xs]
            ax.fill_between(xs, lo, hi, alpha=0.15)
        ax.set_ylim(0, 1.05)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("feedback events")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _summary_lines(results: dict[str, Any]) -> list[str]:
    s, t = results["summary"], results["targets"]
    bare = results.get("summary_no_signals", {})
    mid, top = results["meta"]["summary_budgets"]
    lines = [
        f"| user | first sample | personal @{mid} | personal @{top} | global @{top} "
        "| full-label ceiling |",
        "|---|---|---|---|---|---|",
    ]
    for u in s["per_user"]:
        cells = [_num(u[k]) for k in ("first_sample", "at_50", "at_200", "global_at_200")]
        lines.append(f"| {u['user']} | {' | '.join(cells)} | {_num(u['ceiling'])} |")
    lines.append(
        f"| **mean** | **{_num(s['first_sample_mean'])}** | **{_num(s['mean_top1_at_50'])}** | "
        f"**{_num(s['mean_top1_at_200'])}** | | |"
    )

    content = s.get("content") or {}
    if content.get("per_user"):
        lines += [
            "",
            "Content users (issue 22; what an answer says, not its length or layout):",
            "",
            f"| content user | first sample | personal @{mid} | personal @{top} "
            "| full-label ceiling |",
            "|---|---|---|---|---|",
            *(
                f"| {u['user']} | {_num(u['first'])} | {_num(u['at_50'])} | "
                f"{_num(u['at_200'])} | {_num(u['ceiling'])} |"
                for u in content["per_user"]
            ),
            f"| **mean** | | **{_num(content['mean_top1_at_50'])}** | "
            f"**{_num(content['mean_top1_at_200'])}** | **{_num(content['mean_ceiling'])}** |",
        ]

    def verdict(entry: dict[str, Any], unit: str = "") -> str:
        word = "met" if entry["met"] else "**missed**"
        return f"{entry['value']}{unit} against {entry['target']}{unit}: {word}"

    lines += [
        "",
        f"- Mean top-1 at {mid} events: {verdict(t['mean_at_50'])}.",
        f"- Mean top-1 at {top} events: {verdict(t['mean_at_200'])}.",
        *(
            [
                f"- Without the signals block (several judges are text statistics a signal "
                f"computes): mean top-1 {_num(bare['mean_top1_at_50'])} at {mid} and "
                f"{_num(bare['mean_top1_at_200'])} at {top} events."
            ]
            if bare.get("mean_top1_at_50") is not None
            else []
        ),
        *[
            f"- Pair {pair}: personal minus global at {top} events, averaged over the two "
            f"users: {verdict(entry, ' points')}."
            for pair, entry in t["pairs"].items()
        ],
        f"- Update p50 without torch (the fit, one event on top of "
        f"{results.get('costs', {}).get('torch_free', {}).get('history_events', '?')} events of "
        f"history, this pool's {results['meta'].get('feature_size', '?')}-d vectors): "
        f"{verdict(t['update_ms'], ' ms')}.",
    ]
    return lines


def _closing_table(results: dict[str, Any], budgets: list[int]) -> list[str]:
    top = budgets[-1]
    head = " | ".join(f"{b} ev" for b in budgets)
    lines = [
        f"| user | kind | prompts | first | random | {head} | global @{top} "
        f"| no signals @50 / @{top} | ceiling (no signals) | 80% of ceiling at "
        "| beats first from | beats global from |",
        "|" + "---|" * (11 + len(budgets)),
    ]
    for name, sec in results["users"].items():
        cells = " | ".join(_pct(_key(sec["personal"], b)) for b in budgets)
        bare = sec.get("personal_no_signals")
        bare_cells = (
            f"{_pct(_key(bare, 50)) if 50 in budgets else 'n/a'} / {_pct(_key(bare, top))}"
            if bare
            else "n/a"
        )
        lines.append(
            f"| {name} | {judge_kind(sec['judge'])} | {sec['decisive_prompts']} | "
            f"{_pct(sec['first'])} | {_pct(sec['random'])} | {cells} | "
            f"{_pct(_key(sec['global'], top))} | {bare_cells} | "
            f"{_pct(sec.get('ceiling'))} ({_pct(sec.get('ceiling_no_signals'))}) | "
            f"{_when(sec.get('events_to_80pct_ceiling'), top)} | "
            f"{_when(sec['beat_first'], top)} | {_when(sec['beat_global'], top)} |"
        )
    return lines


# A user "learns" when it beats its first sample by this much at the summary's
# first budget (50 events), with the paired interval above 0 (issue 22's bar).
LEARNS_BY = 0.15


def _slow_learner_lines(results: dict[str, Any]) -> list[str]:
    """The users below the bar, each with the reason its figures give: little room
    above the first sample, a representation that cannot separate the taste (a low
    full-label ceiling), or slow learning from one-bit feedback; and whether the judge
    is seldom decisive."""
    mid, top = results["meta"]["summary_budgets"]
    lines = []
    for name, sec in results["users"].items():
        gain = _key(sec["gain_vs_first"], mid)
        if gain["mean"] >= LEARNS_BY and gain["low"] > 0:
            continue
        first, ceiling = sec["first"]["mean"], (sec.get("ceiling") or {}).get("mean")
        share = sec["decisive_prompts"] / max(1, sec["test_prompts"])
        head = (
            f"**{name}** ({judge_kind(sec['judge'])}): {_pct(sec['first'])} -> "
            f"{_pct(_key(sec['personal'], mid))} at {mid} events (gain {_ci(gain)}), "
            f"{_pct(_key(sec['personal'], top))} at {top}"
        )
        if ceiling is None:
            why = "no full-label ceiling was measured"
        elif ceiling - first < 0.2:
            why = (
                f"little room: the first sample already reaches {_pct(sec['first'])} of a "
                f"full-label ceiling of {100 * ceiling:.0f}"
            )
        elif ceiling < 0.7:
            why = (
                "the representation separates this taste poorly: fitted on every train "
                f"prompt's exact preferences, the same learner reaches {100 * ceiling:.0f}"
            )
        else:
            why = (
                f"the representation holds it (full-label ceiling {100 * ceiling:.0f}), but "
                "reactions to one to three shown answers teach it slowly"
            )
        if share < 0.6:
            why += (
                f"; the judge prefers some answers over others on only {100 * share:.0f}% "
                "of the test prompts (on the others every answer ties, so a reaction there "
                "is a coin flip that teaches noise)"
            )
        lines.append(f"- {head}: {why}.")
    return lines or [f"- Every user beats its first sample by this much at {mid} events."]


def _pairs_lines(results: dict[str, Any]) -> list[str]:
    pairs = results.get("pairs", {})
    if not pairs:
        return []
    lines = [
        "| pair | events | personal (mean of the two) | global (pooled) | margin, points |",
        "|---|---|---|---|---|",
    ]
    for pair, p in pairs.items():
        lines.append(
            f"| {pair} | {p['events']} | {100 * p['personal']:.0f} | {100 * p['global']:.0f} | "
            f"{100 * p['margin']:.0f} |"
        )
    return lines


def _head_name(prior: dict[str, float]) -> str:
    """A head by its prior: 'balanced', or the factors it puts on blocks' prior variance."""
    return ", ".join(f"{g} x{f:g}" for g, f in prior.items()) or "balanced"


def _mix_text(shares: list[float] | None, priors: list[dict[str, float]], top: int) -> str:
    """The heads' shares of the ranking head after the last event, mean of seeds."""
    if not shares or len(shares) != len(priors):
        return ""
    parts = [f"{_head_name(p)} {100 * a:.0f}%" for p, a in zip(priors, shares, strict=True)]
    return f" Heads' shares of the ranking head after {top} events: {'; '.join(parts)}."


def _user_tables(results: dict[str, Any], budgets: list[int]) -> list[str]:
    lines: list[str] = []
    top = budgets[-1]
    priors = list(results["meta"].get("learner", {}).get("head_priors", []))
    for name, sec in results["users"].items():
        mirrors = MIRRORS.get(sec["judge"], ())
        lines += [
            f"#### {name}: {judge_description(sec['judge'])}",
            "",
            f"{sec['decisive_prompts']} of {sec['test_prompts']} test prompts are decisive for "
            f"this judge; first sample {_ci(sec['first'])}, random {_ci(sec['random'])}, "
            "oracle 100"
            + (f", full-label ceiling {_ci(sec['ceiling'])}" if "ceiling" in sec else "")
            + (
                f" ({_ci(sec['ceiling_no_signals'])} without signals)"
                if "ceiling_no_signals" in sec
                else ""
            )
            + f". Beats the first sample from **{_when(sec['beat_first'], top)}** events, the "
            f"pooled global ranker from **{_when(sec['beat_global'], top)}** events. "
            + (
                f"Signals that compute (part of) this judge: {', '.join(mirrors)}."
                if mirrors
                else "No signal computes this judge."
            )
            + _mix_text(sec.get("head_mix"), priors, top),
            "",
            "| events | personal | personal, no signals | global (pooled) | personal - first "
            "| personal - global | judge score of pick (0 worst, 1 best) |",
            "|---|---|---|---|---|---|---|",
        ]
        for b in budgets:
            bare = sec.get("personal_no_signals")
            lines.append(
                f"| {b} | {_ci(_key(sec['personal'], b))} | "
                f"{_ci(_key(bare, b)) if bare else 'n/a'} | {_ci(_key(sec['global'], b))} | "
                f"{_ci(_key(sec['gain_vs_first'], b))} | {_ci(_key(sec['gain_vs_global'], b))} | "
                f"{_key(sec['relative'], b):.2f} |"
            )
        lines.append("")
    return lines


def _cold_lines(results: dict[str, Any], budgets: list[int]) -> list[str]:
    cold = results.get("cold_start")
    if not cold:
        return ["Cold start was skipped (time budget)."]
    head = " | ".join(f"{b} ev" for b in budgets)
    lines = [f"| user | start | {head} |", "|" + "---|" * (2 + len(budgets))]
    for name, sec in cold.items():
        for key, label in (("from_global", "from global"), ("from_scratch", "from scratch")):
            cells = " | ".join(_ci(_key(sec[key], b)) for b in budgets)
            lines.append(f"| {name} | {label} | {cells} |")
        if "global_weight" in sec:  # u: the head's weight on the global score, (1 + u) g
            cells = " | ".join(f"{_key(sec['global_weight'], b):+.2f}" for b in budgets)
            lines.append(f"| {name} | u (global x 1+u) | {cells} |")
    below = [
        name
        for name, sec in cold.items()
        if _key(sec["from_global"], 0)["high"] < results["users"][name]["first"]["mean"]
    ]
    last = budgets[-1]
    behind = [
        name
        for name, sec in cold.items()
        if _key(sec["from_global"], last)["mean"] < _key(sec["from_scratch"], last)["mean"]
    ]
    mean_global = sum(_key(s["from_global"], last)["mean"] for s in cold.values()) / len(cold)
    mean_scratch = sum(_key(s["from_scratch"], last)["mean"] for s in cold.values()) / len(cold)
    lines += [
        "",
        f"At {last} events, {len(behind)} of {len(cold)} users who started from the global "
        f"ranker are behind where they would be from scratch (mean {100 * mean_global:.0f} "
        f"against {100 * mean_scratch:.0f}). The head is fitted on top of the global scores "
        "and its L2 penalty pulls it towards the global ranker (v = 0, u = 0); its weight u "
        "on the global score ((1 + u) g, row 'u', pulled by its own `global_l2`) lets a user "
        "whose taste opposes the prior turn it down (u near -1) or reverse it (u < -1) in a "
        "few events, where the wide blocks alone would have to unlearn it direction by "
        "direction.",
        *_behind_at(cold, 50, budgets),
        "",
        'At 0 events the new user sees the first sample (`cold_start="first_sample"`, what '
        "ships) until their first update. "
        + (
            f"It is clearly below the first sample for {', '.join(below)}: a prior fitted on "
            "other tastes can be worse than no ranker for a user whose taste opposes theirs."
            if below
            else "No user is clearly below the first sample there."
        ),
    ]
    return lines


def _behind_at(cold: dict[str, Any], budget: int, budgets: list[int]) -> list[str]:
    """A line naming the users whose start from the global ranker is 5 points or more
    behind scratch at ``budget`` events (issue 22: an opposed user beats scratch by 50)."""
    if budget not in budgets:
        return []
    gap = {
        name: _key(sec["from_global"], budget)["mean"] - _key(sec["from_scratch"], budget)["mean"]
        for name, sec in cold.items()
    }
    mean_gap = 100 * sum(gap.values()) / len(gap)
    behind = [f"{name} ({100 * g:+.0f})" for name, g in gap.items() if g <= -0.05]
    return [
        "",
        f"At {budget} events the global start is {mean_gap:+.1f} points from scratch on "
        "average; 5 points or more behind: " + (", ".join(behind) if behind else "no user") + ".",
    ]


def _drift_lines(results: dict[str, Any], budgets: list[int]) -> list[str]:
    drift = results.get("drift")
    if not drift:
        return ["Drift was skipped (time budget)."]
    head = " | ".join(f"{b} ev" for b in budgets)
    lines = [
        f"User `drifter` has the `{drift['before']}` taste up to event {drift['switch']}, then "
        f"`{drift['after']}`; seeds {drift['seeds']}; percent top-1 agreement with each taste. "
        "History: how many of the newest events the learner refits on (it keeps between that "
        "many and twice as many in memory before it rebuilds).",
        "",
        f"| history | scored against | {head} |",
        "|" + "---|" * (2 + len(budgets)),
    ]
    for key, sec in drift.items():
        if not key.startswith("history_"):
            continue
        for taste, points in sec.items():
            cells = " | ".join(_pct(_key(points, b)) for b in budgets)
            lines.append(f"| {key[8:]} | {taste} | {cells} |")
    return lines


def _forgetting_lines(results: dict[str, Any], budgets: list[int]) -> list[str]:
    f = results.get("forgetting")
    if not f:
        return ["Forgetting was skipped: " + ", ".join(results.get("skipped", [])) + "."]
    lines = [
        f"User `{f['user']}`'s ranker is first taught a correctness task (arithmetic from the "
        f"quality harness's cache, same model and layer): on {f['taught_events']} of "
        f"{f['taught_problems']} problems the user picks a right answer over the wrong ones, "
        f"then one update. Held-out problems with a right answer: {f['held_out_problems']}; "
        f"first-sample accuracy on them {100 * f['first_sample']:.0f}%. Then the user gives "
        "taste feedback, learning after every event. Percent of held-out problems whose top "
        f"pick is right, mean over seeds {f['seeds']}, with the learner refitting on all events "
        "(the correctness feedback is replayed in every refit) or on the newest few:",
        "",
        "| history | " + " | ".join(f"{b} ev" for b in budgets) + " | taste @ last |",
        "|" + "---|" * (2 + len(budgets)),
    ]
    for key, sec in f.items():
        if not key.startswith("history_"):
            continue
        acc = " | ".join(f"{100 * _key(sec['correctness'], b):.0f}" for b in budgets)
        lines.append(f"| {key[8:]} | {acc} | {_pct(_key(sec['taste'], budgets[-1]))} |")
    return lines


def _isolation_lines(results: dict[str, Any]) -> list[str]:
    iso = results.get("isolation")
    if not iso:
        return ["Isolation was skipped."]
    a, b = iso["pair"]
    lines = [
        f"`{a}` and `{b}` (opposite tastes) share one device: one feedback store, one registry, "
        f"taking turns event by event for {iso['events']} events each (seed {iso['seed']}). "
        "Each one's ranker is compared with the one they trained alone on the same events:",
        "",
        "| user | head weights bitwise equal | held-out picks equal | users in the shared "
        "store | own events |",
        "|---|---|---|---|---|",
    ]
    for name in (a, b):
        r = iso[name]
        lines.append(
            f"| {name} | {r['weights_equal']} | {r['picks_equal']} | "
            f"{', '.join(r['store_users'])} | {r['own_events']} |"
        )
    return lines


def _cost_lines(results: dict[str, Any]) -> list[str]:
    c = results.get("costs")
    if not c:
        return ["Costs were not measured."]
    free, torch, mem = c["torch_free"], c["torch"], c["memory_10_users"]
    history = free["history_events"]
    return [
        f"One more event on top of {history} events of history, learning after every event; "
        f"median [p95] of {free['repeats']} (torch-free, in a process where importing torch "
        f"fails: torch importable = {free['torch_importable']}) and {torch['repeats']} (torch) "
        f"updates; load average {c['load_average']:.1f} on this machine's shared CPUs.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| torch-free fit (the update), wall | {free['fit_ms']['p50']:.1f} ms "
        f"[{free['fit_ms']['p95']:.1f}] |",
        f"| torch-free fit, CPU time | {free['fit_cpu_ms']['p50']:.1f} ms "
        f"[{free['fit_cpu_ms']['p95']:.1f}] |",
        f"| torch-free `learn()` (fit + compose ONNX + registry save, fsynced) | "
        f"{free['learn_ms']['p50']:.1f} ms [{free['learn_ms']['p95']:.1f}] |",
        f"| torch `LearnerConfig.per_event()` `learn()` (train + export + parity + save) | "
        f"{torch['learn_ms']['p50']:.0f} ms [{torch['learn_ms']['p95']:.0f}] |",
        f"| per-user state: head weights (raw float32) | {free['head_bytes']:,} B |",
        f"| per-user state: weights file (torch-free / torch) | {free['weights_bytes']:,} B / "
        f"{torch['weights_bytes']:,} B |",
        f"| composed ONNX ranker on disk | {free['onnx_bytes'] / 1024:.1f} KiB |",
        f"| runtime RSS growth, 10 users' rankers loaded ({c['distinct_models_loaded']} "
        f"distinct files) | {mem['rss_growth_mib']:.1f} MiB |",
        f"| rank one generation (K=8), onnxruntime | {mem['rank_ms_k8']:.2f} ms |",
    ]


def write_report(results: dict[str, Any], out: Path) -> Path:
    """Write README.md, results.json and the PNGs under ``out``; returns the README path."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=float))
    meta = results["meta"]
    budgets = list(meta["budgets"])
    _plot_curves(results, budgets, out / "learning_curves.png")
    if results.get("cold_start"):
        series = {
            n: {"from global": s["from_global"], "from scratch": s["from_scratch"]}
            for n, s in results["cold_start"].items()
        }
        _plot_pairs(series, list(meta["cold_budgets"]), "cold start", out / "cold_start.png")
    if results.get("drift"):
        d = results["drift"]
        series = {
            f"history {k[8:]}": {f"vs {t}": p for t, p in v.items()}
            for k, v in d.items() if k.startswith("history_")
        }  # fmt: skip
        _plot_pairs(series, list(meta["drift_budgets"]), f"drift at event {d['switch']}",
                    out / "drift.png")  # fmt: skip
    path = out / "README.md"
    path.write_text(_render(results, budgets))
    return path


def _render(results: dict[str, Any], budgets: list[int]) -> str:
    meta = results["meta"]
    pool = meta["pool"]
    cold_seeds = [s["seeds"] for s in results.get("cold_start", {}).values()][:1]
    lines = [
        "# Personalisation: one base model, many users, one small torch-free head each",
        "",
        f"Produced by `{meta['command']}` in **{meta['runtime_s'] / 60:.1f} min** on "
        f"{meta['machine']} (pool generation not included: {meta['pool_note']}).",
        "",
        "## Summary (issue 12's `summary`, percent top-1 agreement)",
        "",
        *_summary_lines(results),
        "",
        "## Reproduce",
        "",
        f"1. `python -m ranker_personalize -v pool --prompts {pool['prompts']} --threads 1` "
        "samples the pool once (cached under `.cache/personalize/`, resumable, never "
        "committed).",
        f"2. `{meta['command']}` runs every phase through the real edge SDK and rewrites this "
        "directory. `--budget-minutes` is the time budget: once spent, the remaining optional "
        "phases are skipped and listed under Notes.",
        "3. The forgetting check reads the quality harness's cache of its arithmetic task "
        "(`math`) for the pool's model, in the pool's weight format (`ranker-eval --preset "
        "representation --phase generate --weights dense --cache .cache/ranker-eval` writes "
        "one; `--correctness-cache` points elsewhere); without it the check is skipped.",
        "4. CI quick mode: `pytest tests/ranker_personalize` runs the same `run_study` with "
        "`quick_config()` on a tiny-model pool.",
        "",
        "## Setup",
        "",
        f"- Pool: {pool['prompts']} general-assistant prompts ({meta['train_prompts']} train / "
        f"{meta['test_prompts']} test, split by topic), K={pool['k']} candidates of <= "
        f"{pool['max_new_tokens']} new tokens from `{pool['model']}` at temperature "
        f"{pool['temperature']}; representation v2 at layer {pool['layer']}: last-token and "
        "mean vectors, and the on-device signals of each text and its scalars.",
        f"- Users: {len(results['users'])} simulated tastes: the study's own "
        "(`ranker_personalize/users.py`: two conflicting pairs, concise/verbose and "
        "lists/prose, and two that no signal encodes, no_you: lexical, social: topical) and "
        "the content users (`ranker_personalize/content_users.py`: a topic, a lexical field, "
        "certainty, tone, specificity, how the answer treats its reader). Feedback as the "
        "demo simulates it: half thumbs on the answer shown first, half picks among 2-3 "
        f"shown; noise {meta['noise']} (a reaction is random with this probability). "
        f"Seeds {meta['seeds']}.",
        f"- Learner: what ships, torch-free (`PersonalRanker.learn()` -> `LearnReport`; "
        f"TasteConfig {meta['learner']}), after every event: one head per entry of "
        "`head_priors` (each multiplies some blocks' prior variance), fitted over the same "
        "rows and ranked by their Hedge mix on each head's prequential pair log-loss "
        "(`edge/app/taste/`). Each curve is run twice: with the signals block "
        "(shipped) and without it (then the signals-heavy head is the balanced one).",
        "- Global (pooled): the same learner fitted on every user's first N events together, "
        "one ranker for all (what a server would fit from uploaded feedback).",
        "- Full-label ceiling: the same learner fitted on every train prompt with the "
        "judge's exact preferences (each top answer over each other one), the sets fed in "
        "order with one update each (so the heads' mix is earned as in use), then refitted "
        "to convergence. Oracle: 100.",
        "- Hit = the ranker's top pick has the user's top judge score among the K. Rates are "
        "over *decisive* test prompts (the judge does not tie all K); intervals are 95% "
        "bootstrap over test prompts of the seed-averaged hit.",
        "",
        "## Closing table (percent top-1 agreement with the user's preferred answer)",
        "",
        *_closing_table(results, budgets),
        "",
        "'beats X from' = the first budget from which the paired 95% interval of "
        f"(personal - X) stays above 0 at every later budget; '> {budgets[-1]}': within none. "
        "'80% of ceiling at' = the first budget where the personal rate reaches 0.8 x the "
        "full-label ceiling.",
        "",
        "![learning curves](learning_curves.png)",
        "",
        "## Users who do not learn, and why",
        "",
        f"Below the bar: a gain over the first sample under {100 * LEARNS_BY:.0f} points at "
        f"{meta['summary_budgets'][0]} events, or an interval reaching 0. The reason is read "
        "from each user's figures (ceiling, first sample, how often the judge is decisive).",
        "",
        *_slow_learner_lines(results),
        "",
        "## Conflicting pairs: personal vs one pooled ranker",
        "",
        *_pairs_lines(results),
        "",
        "## Per user",
        "",
        *_user_tables(results, budgets),
        "## Cold start: a new user from the global ranker vs from scratch",
        "",
        "Percent top-1 agreement, seeds "
        f"{cold_seeds[0] if cold_seeds else []}. The global "
        f"ranker is fitted on the *other* users' feedback ({budgets[-1]} events each) and "
        'published in the new user\'s registry. As the SDK ships (`cold_start="first_sample"`), '
        "the new user sees the first sample until their first update; from then on their "
        "head is fitted on top of the global's scores, `(1 + u) * global + x.v` (from "
        "scratch: no global, a zero head).",
        "",
        *_cold_lines(results, list(meta["cold_budgets"])),
        "",
        "![cold start](cold_start.png)" if results.get("cold_start") else "",
        "",
        "## Drift: a user who changes taste midway",
        "",
        *_drift_lines(results, list(meta["drift_budgets"])),
        "",
        "![drift](drift.png)" if results.get("drift") else "",
        "",
        "## Forgetting: a ranker that also knows a correctness task",
        "",
        *_forgetting_lines(results, budgets),
        "",
        "## Isolation: two users on one device",
        "",
        *_isolation_lines(results),
        "",
        "## Update cost, with and without torch (this CPU)",
        "",
        *_cost_lines(results),
        "",
        "## Notes",
        "",
        *[f"- {n}" for n in results.get("notes", [])],
        *([f"- Skipped: {', '.join(results['skipped'])}."] if results["skipped"] else []),
        "",
    ]
    return "\n".join(lines)
