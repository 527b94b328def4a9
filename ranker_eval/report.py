"""Markdown report with tables and PNG plots, written from the results dict only.

Nothing here computes a result; it formats what `evaluate` measured, so a
report can be regenerated from `results.json` alone.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from ranker_eval.metrics import MIN_PROBLEMS

SUMMARY = (
    "first sample", "greedy", "beam search", "self-consistency", "max mean log-prob",
    "text RM (MiniLM)", "LoRA RM", "ListRanker", "PointRanker", "SWIFT", "SWIFT (logits)",
    "SWIFT+RM (rank)", "SWIFT+RM (minmax)", "oracle",
)  # fmt: skip
BASELINES = (
    "first sample", "greedy", "beam search", "self-consistency", "max mean log-prob",
    "text RM (MiniLM)", "LoRA RM",
)  # fmt: skip
METHODS = (
    "Methods: **first sample** (candidate 0 of the pool); **greedy** and **beam search** "
    "(deterministic decodes, not drawn from the pool); **self-consistency** (majority over "
    "extracted answers); **max mean log-prob** (the model's own mean token log-probability); "
    "**text RM (MiniLM)** (all-MiniLM-L6-v2 fine-tuned on question + response, 22.7M "
    "parameters); **LoRA RM** (the generating LLM itself with rank-8 adapters on q/v and a "
    "value head at EOS, {lora_steps} steps; it re-reads every candidate with the full LLM); "
    "**ListRanker** / **PointRanker** (the paper's heads over the last-token hidden state at "
    "0.6 of depth, exported to ONNX); **SWIFT** (per-token hidden states of the last 4 layers, "
    "gated mean) and **SWIFT (logits)** (per-token [log p, entropy, top-8 log-probs]); "
    "**SWIFT+RM** (SWIFT fused with the text RM by rank or min-max, `edge.eval.fusion`); "
    "**oracle** (any correct candidate)."
)
RANKERS = ("ListRanker", "PointRanker")  # the last-token rankers (layer sweep, diagnostics)
COMPARED = (*RANKERS, "SWIFT")  # each gets a table of differences against every baseline


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _cell(acc: dict[str, float] | None) -> str:
    if acc is None:
        return "n/a"
    return f"{_pct(acc['acc'])} [{_pct(acc['low'])}, {_pct(acc['high'])}]"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


def _summary(model: dict[str, Any]) -> list[str]:
    present = [m for m in SUMMARY if any(m in t["headline"] for t in model["tasks"])]
    rows = [
        [f"{t['task']} (n={t['diagnostics']['test_problems']}, K={t['k']})"]
        + [_cell(t["headline"].get(m)) for m in present]
        for t in model["tasks"]
    ]
    return _table(["task", *present], rows)


def _diff(c: dict[str, Any]) -> str:
    low, high = 100 * c["low"], 100 * c["high"]
    return f"{100 * c['diff']:+.1f} [{low:+.1f}, {high:+.1f}] **{c['verdict']}**"


def _compared(model: dict[str, Any]) -> list[str]:
    return [m for m in COMPARED if any(m in t["headline"] for t in model["tasks"])]


def _comparisons(model: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for ranker in _compared(model):
        present = [
            b
            for b in BASELINES
            if any(f"{ranker} vs {b}" in t["comparisons"] for t in model["tasks"])
        ]
        rows = []
        for t in model["tasks"]:
            row = [t["task"]]
            for b in present:
                c = t["comparisons"].get(f"{ranker} vs {b}")
                row.append("n/a" if c is None else _diff(c))
            rows.append(row)
        lines += [f"\n**{ranker} minus baseline** (accuracy points, paired bootstrap 95% CI):\n"]
        lines += _table(["task", *present], rows)
    return lines


def _verdicts(model: dict[str, Any]) -> list[str]:
    """One line per ranker: how many baseline comparisons it wins, ties and loses."""
    lines = []
    for ranker in _compared(model):
        counts: dict[str, list[str]] = {"wins": [], "tie": [], "loses": [], "too few": []}
        for t in model["tasks"]:
            for name, c in t["comparisons"].items():
                if name.startswith(f"{ranker} vs "):
                    counts[c["verdict"]].append(f"{t['task']}/{name.split(' vs ', 1)[1]}")
        lines.append(
            f"- {ranker}: wins {len(counts['wins'])}, ties {len(counts['tie'])}, "
            f"loses {len(counts['loses'])} of {sum(map(len, counts.values()))} comparisons"
            + (f" ({len(counts['too few'])} on too few problems)" if counts["too few"] else "")
            + (f"; wins: {', '.join(counts['wins'])}" if counts["wins"] else "")
            + (f"; loses: {', '.join(counts['loses'])}" if counts["loses"] else "")
        )
    return lines


def _costs(model: dict[str, Any]) -> list[str]:
    names = [m for m in SUMMARY if any(m in t["costs"] for t in model["tasks"])]
    rows = []
    for name in names:
        row = [name]
        for t in model["tasks"]:
            c = t["costs"].get(name)
            row.append(
                "n/a"
                if c is None
                else f"{c['params']:,} / {c['train_s']:.1f} s / {c['score_s'] * 1000:.0f} ms"
            )
        rows.append(row)
    return _table(
        ["method (params / train / score test pool)", *[t["task"] for t in model["tasks"]]], rows
    )


def _layer_sweep(model: dict[str, Any]) -> list[str]:
    fractions = list(model["tasks"][0]["layer_sweep"]) if model["tasks"] else []
    rows = []
    for t in model["tasks"]:
        for ranker in RANKERS:
            rows.append(
                [t["task"], ranker] + [_cell(t["layer_sweep"][f].get(ranker)) for f in fractions]
            )
    header = ["task", "ranker"] + [
        f"{f} (layer {i})" for f, i in zip(fractions, model["layers"], strict=True)
    ]
    return _table(header, rows)


def _transfer(model: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for ranker, matrix in model["transfer"].items():
        targets = list(next(iter(matrix.values())).keys()) if matrix else []
        rows = [[f"trained on {s}"] + [_cell(matrix[s][t]) for t in targets] for s in matrix]
        lines += [f"\n{ranker} (rows: training task, columns: test task):\n"]
        lines += _table(["", *[f"test {t}" for t in targets]], rows)
    return lines


def _diagnostics(model: dict[str, Any]) -> list[str]:
    rows = []
    for t in model["tasks"]:
        d = t["diagnostics"]
        rows.append([
            t["task"], str(d["train_problems"]), str(d["train_mixed_groups"]),
            f"{_pct(d['train_positive_rate'])} / {_pct(d['test_positive_rate'])}",
            " / ".join(f"{_pct(d['train_fit'][r])}" for r in RANKERS),
            " / ".join(f"{_pct(t['headline'][r]['acc'])}" for r in RANKERS),
            " / ".join(f"{_pct(d['half_data_acc'][r])}" for r in RANKERS),
            " / ".join(",".join(_pct(a) for a in d["other_seeds_acc"][r]) for r in RANKERS),
        ])  # fmt: skip
    header = [
        "task", "train problems", "mixed train groups", "positive rate train / test",
        "train fit List / Point", "test List / Point", "test with half the train data",
        "test, seeds 1,2 (List / Point)",
    ]  # fmt: skip
    return _table(header, rows)


def _plot_curves(model: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = model["tasks"]
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.6), squeeze=False)
    for ax, t in zip(axes[0], tasks, strict=True):
        for name, ys in t["curves"]["methods"].items():
            style = "--" if name in ("greedy", "beam search", "oracle") else "-"
            ax.plot(t["curves"]["k"], [100 * y for y in ys], style, marker="o", ms=3, label=name)
        ax.set_xscale("log", base=2)
        ax.set_title(f"{t['task']} (n={t['diagnostics']['test_problems']})")
        ax.set_xlabel("K (candidates)")
        ax.set_ylabel("accuracy %")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.suptitle(f"Best-of-K, {model['model']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_layers(model: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for t in model["tasks"]:
        fractions = list(t["layer_sweep"])
        for ranker, style in zip(RANKERS, ("-", ":"), strict=True):
            ys = [100 * t["layer_sweep"][f][ranker]["acc"] for f in fractions]
            ax.plot(
                [float(f) for f in fractions], ys, style, marker="o", label=f"{t['task']} {ranker}"
            )
    ax.set_xlabel("layer (fraction of depth)")
    ax.set_ylabel("test accuracy % at full K")
    ax.set_title(f"Layer sweep, {model['model']}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(results: dict[str, Any], out: Path) -> Path:
    """Writes README.md, results.json and PNGs to `out`; returns the markdown path."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    lines = [
        "# Quality report: rankers vs baselines on the same cached candidates",
        "",
        f"Produced by `{results.get('command', 'ranker-eval')}` in "
        f"{results.get('runtime_s', 0) / 60:.1f} min "
        "(evaluation; candidate generation is cached and its time is listed per task).",
        "",
        "Accuracy is the fraction of test problems whose selected response passes the task's",
        "programmatic check, in %, with a Wilson 95% interval. Comparisons are paired over",
        "problems (every method selects from the same candidates): **wins** / **loses** when",
        "the bootstrap 95% interval of the difference excludes 0, else **tie**; **too few**",
        f"below {MIN_PROBLEMS} test problems, where a bootstrap interval says nothing.",
        "",
        METHODS.format(lora_steps=results.get("config", {}).get("lora_steps", "?")),
        "",
    ]
    for model in results["models"]:
        slug = _slug(model["model"])
        lines += [f"## {model['model']}", ""]
        lines += [
            f"{model['num_layers']} layers, hidden {model['hidden_size']}, "
            f"{'chat template' if model['chat'] else 'raw few-shot prompts'}; "
            f"features at layers {model['layers']} (0.6 of depth is the main one).",
            "",
        ]
        if not model["tasks"]:
            lines += ["Nothing cached for this model.", ""]
            continue
        gen = ", ".join(
            f"{t['task']} {t['generation_s'] / 60:.1f} min "
            f"(T={t['temperature']}, {t['max_new_tokens']} new tokens)"
            for t in model["tasks"]
        )
        lines += [f"Generation time: {gen}.", "", "### Accuracy at full K", ""]
        lines += _summary(model)
        lines += ["", "### Do the rankers beat each baseline?", "", *_verdicts(model)]
        lines += _comparisons(model)
        lines += ["", "### Cost", "", *_costs(model)]
        curves = f"curves-{slug}.png"
        _plot_curves(model, out / curves)
        lines += ["", "### Best-of-K", "", f"![Best-of-K curves]({curves})", ""]
        layers = f"layers-{slug}.png"
        _plot_layers(model, out / layers)
        lines += ["### Layer sweep (test accuracy at full K)", "", *_layer_sweep(model)]
        lines += ["", f"![layer sweep]({layers})", "", "### Transfer across tasks"]
        lines += _transfer(model)
        lines += ["", "### Diagnostics (why a ranker may lose)", "", *_diagnostics(model)]
        lines += [""]
    path = out / "README.md"
    path.write_text("\n".join(lines) + "\n")
    return path
