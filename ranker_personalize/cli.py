"""``python -m ranker_personalize``: build the candidate pool, run the study, write the report.

python -m ranker_personalize pool --prompts 240 --threads 1  # once, the long pole (cached)
python -m ranker_personalize run --budget-minutes 60         # every phase and the costs
python -m ranker_personalize run --quick                     # CI: tiny budgets and model
python -m ranker_personalize report                          # re-render from results.json
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

__all__ = ["main"]

DEFAULT_CACHE = Path(".cache/personalize")
DEFAULT_OUT = Path("docs/results/personalization")


def _pool_dir(cache: Path, model_name: str, k: int, tokens: int) -> Path:
    return cache / f"{model_name}-k{k}-n{tokens}"


def _cmd_pool(args: argparse.Namespace) -> int:
    import torch

    from central.model import load_model
    from ranker_personalize.pool import PoolSettings, generate_pool
    from ranker_personalize.prompts import make_prompts

    torch.set_num_threads(args.threads)  # more threads spin against each other on a shared CPU
    model = load_model(args.model)
    layer = round(0.6 * model.num_layers)
    # int8 and fp32 candidates of the same weights differ: their pools are kept apart
    fmt = model.weights_format
    name = model.name if fmt == "float32" else f"{model.name}-{fmt}"
    settings = PoolSettings(name, args.k, args.max_new_tokens, args.temperature, layer, 0)
    directory = _pool_dir(args.cache, name, args.k, args.max_new_tokens)
    items = make_prompts(args.prompts, seed=0)
    start = time.perf_counter()
    made = generate_pool(model, items, directory, settings, budget_s=args.budget_minutes * 60)
    logging.info(
        "pool: %d new prompts in %.0fs under %s", made, time.perf_counter() - start, directory
    )
    return 0


def _find_pool(cache: Path) -> Path:
    found = sorted(p.parent for p in cache.glob("*/settings.json"))
    if not found:
        raise SystemExit(f"no pool under {cache}: run `python -m ranker_personalize pool` first")
    return max(found, key=lambda d: len(list(d.glob("*.json"))))


def _cmd_run(args: argparse.Namespace) -> int:
    from ranker_personalize.study import quick_config, run_study

    start = time.perf_counter()
    pool_dir = args.pool or _find_pool(args.cache)
    config = quick_config() if args.quick else None
    deadline = time.monotonic() + args.budget_minutes * 60
    command = "python -m ranker_personalize " + " ".join(args.argv)
    path = run_study(
        pool_dir,
        args.out,
        work=args.work,
        config=config,
        deadline=deadline,
        correctness_root=args.correctness_cache,
        command=command,
        started=start,
        costs=not args.no_costs,
    )
    print(path)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    """Re-render README.md and the figures from an existing results.json."""
    import json

    from ranker_personalize.report import write_report

    results = json.loads((args.out / "results.json").read_text())
    print(write_report(results, args.out))
    return 0


# Shows every option's default in --help, and the module docstring as written.
class _FORMATTER(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ranker-personalize", description=__doc__, formatter_class=_FORMATTER
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    sub = parser.add_subparsers(dest="command", required=True)
    pool = sub.add_parser(
        "pool", help="sample and cache K candidates per prompt", formatter_class=_FORMATTER
    )
    pool.add_argument("--model", default="default", help="central model name or path")
    pool.add_argument("--prompts", type=int, default=240, help="number of prompts")
    pool.add_argument("--k", type=int, default=8, help="candidates per prompt")
    pool.add_argument("--max-new-tokens", type=int, default=48, help="tokens per candidate")
    pool.add_argument("--temperature", type=float, default=1.0, help="sampling temperature")
    pool.add_argument("--threads", type=int, default=1, help="torch threads")
    pool.add_argument("--budget-minutes", type=float, default=90.0, help="stop after this long")
    pool.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="pool cache root")
    pool.set_defaults(func=_cmd_pool)
    run = sub.add_parser(
        "run",
        help="simulate users on the cached pool and write the report",
        formatter_class=_FORMATTER,
    )
    run.add_argument("--pool", type=Path, default=None, help="pool directory (default: largest)")
    run.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="pool cache root")
    run.add_argument("--out", type=Path, default=DEFAULT_OUT, help="report directory")
    run.add_argument("--work", type=Path, default=None, help="user homes (default: a temp dir)")
    run.add_argument("--quick", action="store_true", help="CI size: 1 seed, tiny budgets")
    run.add_argument("--budget-minutes", type=float, default=60.0, help="skip phases after this")
    run.add_argument(
        "--no-costs", action="store_true", help="skip the update-cost measurements (with torch)"
    )
    run.add_argument(
        "--correctness-cache",
        type=Path,
        default=Path(".cache/ranker-eval"),
        help="quality-harness candidate cache with the arithmetic task (forgetting check)",
    )
    run.set_defaults(func=_cmd_run)
    report = sub.add_parser(
        "report",
        help="re-render README.md and the figures from results.json (no new runs)",
        formatter_class=_FORMATTER,
    )
    report.add_argument("--out", type=Path, default=DEFAULT_OUT, help="report directory")
    report.set_defaults(func=_cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(message)s",
    )
    return int(args.func(args))
