"""The demo's results as plain-text tables, one per part."""

from __future__ import annotations

from typing import Any

from edge.demo.common import Accuracy
from edge.demo.correctness import CorrectnessResult
from edge.demo.personalization import PersonalizationResult
from edge.demo.run import DemoResult

__all__ = ["format_table"]

_RULE = "-" * 66


def format_table(result: DemoResult) -> str:
    """Both parts' tables, then where the time went."""
    lines = ["", f"Language Ranker demo: {result.model}, K={result.k}"]
    if result.correctness is not None:
        lines += _correctness(result.correctness)
    if result.personalization is not None:
        lines += _personalization(result.personalization)
    lines += ["", "phase timings:"]
    lines += [f"  {name:44s} {seconds:8.1f} s" for name, seconds in result.phase_seconds.items()]
    lines.append(f"  {'total':44s} {result.total_seconds:8.1f} s")
    return "\n".join(lines)


def _row(name: str, acc: Accuracy) -> str:
    return f"{name:36s} {acc.rate:9.1%}   [{acc.low:.1%}, {acc.high:.1%}]"


def _gain(label: str, gain: dict[str, Any]) -> str:
    low, high = gain["ci95"]
    return f"{label}: {gain['difference']:+.1%} (paired 95% interval [{low:+.1%}, {high:+.1%}])"


def _correctness(part: CorrectnessResult) -> list[str]:
    lines = [
        "",
        f"Correctness: 'which number is larger?', {part.train_prompts} training prompts "
        f"({part.feedback_events} thumbs), {part.test_prompts} held-out prompts, "
        f"learner: {part.learner}",
        "",
        f"{'method':36s} {'accuracy':>9s}   95% interval",
        _RULE,
    ]
    lines += [_row(name, acc) for name, acc in part.methods.items()]
    best = part.gain_over_best_free
    lines.append("")
    for name, gain in part.gain_over_each_free.items():  # the first sample's is gain_over_first
        tag = " (best free)" if name == best["baseline"] else ""
        lines.append(_gain(f"learned ranker - {name}{tag}", gain))
    if part.learn_seconds:
        mean = sum(part.learn_seconds) / len(part.learn_seconds)
        lines.append(f"{len(part.learn_seconds)} incremental updates, {mean:.3f} s each on average")
    return lines


def _personalization(part: PersonalizationResult) -> list[str]:
    """A picker x taste matrix: rows choose one answer per prompt, columns judge it."""
    users = part.users
    names = [u.user for u in users]
    lines = [
        "",
        f"Personalization: users {' and '.join(names)}, the same {part.train_prompts} prompts, "
        f"{users[0].events if users else 0} feedback events each; "
        f"{part.test_prompts} held-out prompts",
        "share of held-out prompts where the pick is one the user's taste prefers:",
        "",
        f"{'picked by':28s}" + "".join(f"{'taste: ' + n:>19s}" for n in names),
        _RULE,
    ]
    rows: list[tuple[str, list[Accuracy]]] = [
        (method, [u.own_taste[method] for u in users]) for method in ("first sample", "random pick")
    ]
    for picker in users:
        accs = [
            picker.own_taste["personal ranker"]
            if u.user == picker.user
            else picker.other_taste["personal ranker"]
            for u in users
        ]
        rows.append((f"{picker.user}'s ranker", accs))
    for name, accs in rows:
        lines.append(f"{name:28s}" + "".join(f"{acc.rate:19.1%}" for acc in accs))
    lines += [
        "",
        f"the two rankers pick different answers on {part.picks_differ:.0%} of held-out prompts",
    ]
    for u in users:
        lines.append(_gain(f"{u.user}: own ranker - first sample", u.gain_over_first))
        lines.append(_gain(f"{u.user}: own ranker - {u.other}'s ranker", u.gain_over_other_ranker))
    p50 = ", ".join(f"{u.user} {u.update_ms_p50:.0f} ms" for u in users)
    lines.append(f"one update (fit, compose ONNX, save, hot-swap), median: {p50}")
    c = part.content
    lines += [
        "",
        f"A content taste: user {c.user} likes answers that hedge (what an answer says, which "
        f"no on-device signal computes; the lexicon part does), {c.events} feedback events:",
        *(f"{name:28s}{acc.rate:19.1%}" for name, acc in c.taste.items()),
        _gain(f"{c.user}: own ranker - first sample", c.gain_over_first),
    ]
    return lines
