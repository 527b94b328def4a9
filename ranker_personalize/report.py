"""The markdown report and PNG learning curves, written from the study's results dict.

Every number in the report is read from ``results`` (also saved as
``results.json`` next to it), so the text can never disagree with the data.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ranker_personalize.users import DESCRIPTIONS

__all__ = ["write_report"]


def _key(d: dict[Any, Any], b: int) -> Any:
    """JSON turns int keys into strings; accept both."""
    return d[b] if b in d else d[str(b)]


def _pct(e: dict[str, float]) -> str:
    return f"{100 * e['mean']:.0f}"


def _ci(e: dict[str, float]) -> str:
    return f"{100 * e['mean']:.0f} [{100 * e['low']:.0f}, {100 * e['high']:.0f}]"


def _when(b: int | None) -> str:
    return "never (<= max budget)" if b is None else f"{b}"


def _plot_curves(results: dict[str, Any], budgets: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    users = list(results["users"])
    cols = 3
    rows = -(-len(users) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.3 * rows), squeeze=False)
    for ax, name in zip(axes.flat, users, strict=False):
        sec = results["users"][name]
        for label, key, style in (
            ("personal", "personal", "o-"),
            ("global (pooled)", "global", "s--"),
        ):
            means = [_key(sec[key], b)["mean"] for b in budgets]
            lows = [_key(sec[key], b)["low"] for b in budgets]
            highs = [_key(sec[key], b)["high"] for b in budgets]
            ax.plot(budgets, means, style, label=label, ms=4)
            ax.fill_between(budgets, lows, highs, alpha=0.2)
        ax.axhline(sec["first"]["mean"], color="gray", ls=":", label="first sample")
        ax.axhline(sec["random"]["mean"], color="black", ls="-.", lw=0.8, label="random")
        ax.axhline(1.0, color="green", lw=0.8, label="oracle")
        if "ceiling" in results and name in results["ceiling"]:
            ax.axhline(results["ceiling"][name]["mean"], color="purple", ls="--", lw=0.8,
                       label="full-label ceiling")  # fmt: skip
        ax.set_xscale("symlog", linthresh=10)
        ax.set_xticks(budgets)
        ax.set_xticklabels([str(b) for b in budgets])
        ax.set_xlim(0, budgets[-1] * 1.1)
        ax.set_ylim(0, 1.05)
        ax.set_title(f"{name} ({sec['decisive_prompts']} test prompts)", fontsize=10)
        ax.set_xlabel("feedback events")
        ax.set_ylabel("top-1 = user's preferred")
    for ax in list(axes.flat)[len(users) :]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path, dpi=110)
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
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _closing_table(results: dict[str, Any], budgets: list[int]) -> list[str]:
    head = " | ".join(f"{b} ev" for b in budgets)
    lines = [
        f"| user | test prompts | first | random | {head} | global @{budgets[-1]} "
        "| beats first from | beats global from | full-label ceiling |",
        "|" + "---|" * (8 + len(budgets)),
    ]
    for name, sec in results["users"].items():
        cells = " | ".join(_pct(_key(sec["personal"], b)) for b in budgets)
        ceiling = results.get("ceiling", {}).get(name)
        lines.append(
            f"| {name} | {sec['decisive_prompts']} | {_pct(sec['first'])} | "
            f"{_pct(sec['random'])} | {cells} | {_pct(_key(sec['global'], budgets[-1]))} | "
            f"{_when(sec['beat_first'])} | {_when(sec['beat_global'])} | "
            f"{_pct(ceiling) if ceiling else 'n/a'} |"
        )
    return lines


def _user_tables(results: dict[str, Any], budgets: list[int]) -> list[str]:
    lines: list[str] = []
    for name, sec in results["users"].items():
        lines += [
            f"#### {name}: {DESCRIPTIONS.get(sec['judge'], sec['judge'])}",
            "",
            f"{sec['decisive_prompts']} of {sec['test_prompts']} test prompts are decisive for "
            f"this judge; first sample {_ci(sec['first'])}, random {_ci(sec['random'])}, "
            "oracle 100. "
            f"Beats the first sample from **{_when(sec['beat_first'])}** events, the pooled "
            f"global ranker from **{_when(sec['beat_global'])}** events.",
            "",
            "| events | personal | global (pooled) | personal - first | personal - global "
            "| judge score of pick (0 worst, 1 best) |",
            "|---|---|---|---|---|---|",
        ]
        for b in budgets:
            lines.append(
                f"| {b} | {_ci(_key(sec['personal'], b))} | {_ci(_key(sec['global'], b))} | "
                f"{_ci(_key(sec['gain_vs_first'], b))} | {_ci(_key(sec['gain_vs_global'], b))} | "
                f"{_key(sec['relative'], b)['mean']:.2f} |"
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
    return lines


def _drift_lines(results: dict[str, Any], budgets: list[int]) -> list[str]:
    drift = results.get("drift")
    if not drift:
        return ["Drift was skipped (time budget)."]
    head = " | ".join(f"{b} ev" for b in budgets)
    lines = [
        f"User `drifter` has the `{drift['before']}` taste up to event {drift['switch']}, then "
        f"`{drift['after']}`; seeds {drift['seeds']}; percent top-1 agreement with each taste.",
        "",
        f"| replay | scored against | {head} |",
        "|" + "---|" * (2 + len(budgets)),
    ]
    for key, sec in drift.items():
        if not key.startswith("replay_"):
            continue
        for taste, points in sec.items():
            cells = " | ".join(_pct(_key(points, b)) for b in budgets)
            lines.append(f"| {key[7:]} | {taste} | {cells} |")
    return lines


def _forgetting_lines(results: dict[str, Any], budgets: list[int]) -> list[str]:
    f = results.get("forgetting")
    if not f:
        return ["Forgetting was skipped: " + ", ".join(results.get("skipped", [])) + "."]
    lines = [
        f"User `{f['user']}`'s ranker is first taught a correctness task (arithmetic from the "
        f"quality harness's cache, same model and layer): {f['taught_problems']} problems, every "
        f"candidate thumbed right/wrong, one update. Held-out problems with a right answer: "
        f"{f['held_out_problems']}; first-sample accuracy on them "
        f"{100 * f['first_sample']:.0f}%. Then the user gives taste feedback. Percent of held-out "
        f"problems whose top pick is right, mean over seeds {f['seeds']}:",
        "",
        "| replay | " + " | ".join(f"{b} ev" for b in budgets) + " | taste @ last |",
        "|" + "---|" * (2 + len(budgets)),
    ]
    for key, sec in f.items():
        if not key.startswith("replay_"):
            continue
        acc = " | ".join(f"{100 * _key(sec['correctness'], b):.0f}" for b in budgets)
        lines.append(f"| {key[7:]} | {acc} | {_pct(_key(sec['taste'], budgets[-1]))} |")
    return lines


def _cost_lines(results: dict[str, Any]) -> list[str]:
    c = results.get("costs")
    if not c:
        return ["Costs were skipped (time budget)."]
    learn = c["learn_after_one_event_s"]
    mem = c["memory_10_users"]
    return [
        "| measure | value |",
        "|---|---|",
        f"| learn() after 1 new event (history {learn['history_events']}, replay "
        f"{learn['replay_size']}): median [min, max] of {learn['repeats']} | "
        f"{learn['median']:.2f} s [{learn['min']:.2f}, {learn['max']:.2f}] |",
        f"| learn() per update in the curve runs (median) | {results['learn_median_s']:.2f} s |",
        f"| ranker parameters | {c['parameters']:,} |",
        f"| ONNX file on disk | {c['onnx_bytes'] / 1024:.0f} KiB |",
        f"| weights (.npz) on disk | {c['weights_bytes'] / 1024:.0f} KiB |",
        f"| runtime RSS growth, 10 users' rankers loaded ({c['distinct_models_loaded']} "
        f"distinct files) | {mem['rss_growth_mib']:.1f} MiB |",
        f"| rank one generation (K=8) | {mem['rank_ms_k8']:.2f} ms |",
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
            f"replay {k[7:]}": {f"vs {t}": p for t, p in v.items()}
            for k, v in d.items() if k.startswith("replay_")
        }  # fmt: skip
        _plot_pairs(series, list(meta["drift_budgets"]), f"drift at event {d['switch']}",
                    out / "drift.png")  # fmt: skip
    text = _render(results, budgets)
    path = out / "README.md"
    path.write_text(text)
    return path


def _render(results: dict[str, Any], budgets: list[int]) -> str:
    meta = results["meta"]
    lines = [
        "# Personalisation: one base model, many users, one small ranker each",
        "",
        f"Produced by `{meta['command']}` in **{meta['runtime_s'] / 60:.1f} min** on "
        f"{meta['machine']} (pool generation not included: {meta['pool_note']}).",
        "",
        "## Reproduce",
        "",
        "1. `python -m ranker_personalize -v pool --prompts 320` samples the pool once "
        "(cached under `.cache/ranker_personalize/`, resumable, never committed).",
        f"2. `{meta['command']}` runs every phase through the real edge SDK and rewrites this "
        "directory. `--budget-minutes` is the time budget: once spent, the remaining optional "
        "phases (extra seeds, ceiling, cold start, drift, forgetting) are skipped and listed "
        "under Notes.",
        "3. The forgetting check reads the quality harness's arithmetic cache "
        "(`ranker-eval --phase generate --model default --cache .cache/ranker-eval`).",
        "4. CI quick mode: `pytest tests/ranker_personalize` (`test_quick.py` runs the same "
        "`run_study` "
        "with `quick_config()` on a tiny-model pool, in well under a minute on an idle CPU).",
        "",
        "## Setup",
        "",
        f"- Pool: {meta['pool']['prompts']} general-assistant prompts "
        f"({meta['train_prompts']} train / {meta['test_prompts']} test, split by topic), "
        f"K={meta['pool']['k']} candidates of "
        f"<= {meta['pool']['max_new_tokens']} new tokens from `{meta['pool']['model']}` at "
        f"temperature {meta['pool']['temperature']}, features at layer {meta['pool']['layer']}.",
        f"- Seeds: {meta['seeds']}; noise {meta['noise']} (a reaction is random with this "
        f"probability); half the events are thumbs on the shown answer, half picks among 2-3.",
        f"- Learner: edge defaults ({meta['learner']}); `learn()` every {meta['update_every']} "
        "events and at each budget.",
        "- Hit = the ranker's top pick has the user's top judge score among the K. Rates are over "
        "*decisive* test prompts (the judge does not tie all K); intervals are 95% bootstrap "
        "over test prompts of the seed-averaged hit.",
        "",
        "## Closing table (percent top-1 agreement with the user's preferred answer)",
        "",
        *_closing_table(results, budgets),
        "",
        "'beats X from' = the first budget from which the paired 95% interval of "
        "(personal - X) stays above 0 at every later budget.",
        "",
        "![learning curves](learning_curves.png)",
        "",
        "## Per user",
        "",
        *_user_tables(results, budgets),
        "## Cold start: new user from the global ranker vs from scratch",
        "",
        "Percent top-1 agreement, seeds "
        f"{next(iter(results.get('cold_start', {}).values()), {}).get('seeds')}. "
        "The global ranker here is trained on the *other* users' feedback "
        f"({meta['budgets'][-1]} events each); before the first update the new user is served "
        "by it (from scratch: the first sample).",
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
        "## On-device cost (this CPU)",
        "",
        *_cost_lines(results),
        "",
        "## Notes",
        "",
        *[f"- {n}" for n in results.get("notes", [])],
        *([f"- Skipped for time: {', '.join(results['skipped'])}."] if results["skipped"] else []),
        "",
    ]
    return "\n".join(lines)
