"""The demo's results as a plain-text table."""

from __future__ import annotations

from edge.demo.run import DemoResult

__all__ = ["format_table"]


def format_table(result: DemoResult) -> str:
    lines = [
        "",
        f"Language Ranker demo: {result.model}, K={result.k}, "
        f"{result.train_prompts} training prompts ({result.feedback_events} feedback events), "
        f"{result.test_prompts} held-out prompts",
        "",
        f"{'method':34s} {'accuracy':>9s}   95% interval",
        "-" * 62,
    ]
    for name, acc in result.methods.items():
        lines.append(f"{name:34s} {acc.rate:9.1%}   [{acc.low:.1%}, {acc.high:.1%}]")
    gain = result.gain_over_first
    if gain:
        interval, difference = gain["ci95"], gain["difference"]
        assert isinstance(interval, list) and isinstance(difference, float)
        low, high = interval
        lines += [
            "",
            f"learned ranker - first sample: {difference:+.1%} "
            f"(paired 95% bootstrap interval [{low:+.1%}, {high:+.1%}])",
        ]
    lines += ["", "phase timings:"]
    lines += [f"  {name:34s} {seconds:8.1f} s" for name, seconds in result.phase_seconds.items()]
    if result.learn_seconds:
        mean = sum(result.learn_seconds) / len(result.learn_seconds)
        lines.append(
            f"  {len(result.learn_seconds)} incremental updates, {mean:.2f} s each on average"
        )
    return "\n".join(lines)
