"""``python -m ranker_personalize``: build the candidate pool, run the study, write the report.

python -m ranker_personalize pool --prompts 240 --threads 1  # once, the long pole (cached)
python -m ranker_personalize run --budget-minutes 60         # every phase and the costs
python -m ranker_personalize run --quick                     # CI: tiny budgets and model
python -m ranker_personalize report                          # re-render from results.json
python -m ranker_personalize content-vectors --pool DIR      # extra vectors for the content study
python -m ranker_personalize content --pool DIR              # the content study (content-tastes.md)

The report goes to ./ranker-personalize-report unless --out says otherwise (the
committed one: --out docs/results/personalization). Every command needs the
``eval`` extra; without it the command ends with one line naming it.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

__all__ = ["main"]

DEFAULT_CACHE = Path(".cache/personalize")
DEFAULT_OUT = Path("ranker-personalize-report")  # never the committed docs/results by default
DEFAULT_VECTORS = Path(".cache/content")
DEFAULT_CONTENT_OUT = DEFAULT_OUT / "content"  # the committed one: --out docs/results/content
EXTRA = "eval"  # the extra that installs what every command needs


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

    found = args.out / "results.json"
    if not found.exists():
        raise SystemExit(f"ranker-personalize: no {found}: run `ranker-personalize run` first")
    results = json.loads(found.read_text())
    print(write_report(results, args.out))
    return 0


def _cmd_content_vectors(args: argparse.Namespace) -> int:
    import torch

    from central.model import load_model
    from ranker_personalize.content_vectors import central_vectors, export_minilm, minilm_vectors
    from ranker_personalize.pool import load_pool

    torch.set_num_threads(args.threads)
    pool = load_pool(args.pool or _find_pool(args.cache))
    minilm = args.vectors / "minilm"
    if not (minilm / "minilm.onnx").exists():
        export_minilm(minilm)
    made = minilm_vectors(pool, args.vectors / "minilm-vectors", minilm)
    logging.info("content vectors: MiniLM for %d new prompts", made)
    made = central_vectors(load_model(args.model), pool, args.vectors / "central")
    logging.info("content vectors: central layers for %d new prompts", made)
    return 0


def _cmd_content(args: argparse.Namespace) -> int:
    from ranker_personalize.content_report import run_content_study

    pool_dir = args.pool or _find_pool(args.cache)
    command = "python -m ranker_personalize " + " ".join(args.argv)
    print(run_content_study(pool_dir, args.vectors, args.out, args.phase, command, args.seeds))
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
    vectors = sub.add_parser(
        "content-vectors",
        help="central's vectors at every depth and MiniLM's for the pool's answers (cached)",
        formatter_class=_FORMATTER,
    )
    vectors.add_argument(
        "--pool", type=Path, default=None, help="pool directory (default: largest)"
    )
    vectors.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="pool cache root")
    vectors.add_argument("--vectors", type=Path, default=DEFAULT_VECTORS, help="output root")
    vectors.add_argument("--model", default="default", help="central model name or path")
    vectors.add_argument("--threads", type=int, default=1, help="torch threads")
    vectors.set_defaults(func=_cmd_content_vectors)
    content = sub.add_parser(
        "content",
        help="compare content representations on content and format users",
        formatter_class=_FORMATTER,
    )
    content.add_argument(
        "--pool", type=Path, default=None, help="pool directory (default: largest)"
    )
    content.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="pool cache root")
    content.add_argument(
        "--vectors", type=Path, default=DEFAULT_VECTORS, help="content-vectors root"
    )
    content.add_argument("--out", type=Path, default=DEFAULT_CONTENT_OUT, help="results directory")
    content.add_argument(
        "--phase", default="final",
        choices=(
            "choose", "lexicon", "lexicon2", "lexicon3", "final", "pull", "cold", "diagnose"
        ),
        help="choose: every candidate on the development users; final: the chosen few on all; "
        "lexicon: the lexicon block's transforms and priors (development users); "
        "pull: the learner's l2 pull towards the global ranker (all users); "
        "cold: a new user with the global ranker (the default candidate); diagnose: why "
        "content tastes learn slowly (development users)",
    )  # fmt: skip
    content.add_argument("--seeds", type=int, default=5, help="feedback seeds per user")
    content.set_defaults(func=_cmd_content)
    return parser


def _needs(args: argparse.Namespace) -> tuple[str, ...]:
    """The modules a command imports beyond the runtime install."""
    if args.command == "pool":
        return ("torch", "transformers", "tqdm")
    if args.command == "run":
        return ("tqdm", "matplotlib") + (() if args.no_costs else ("torch",))
    return ("matplotlib",)


def main(argv: list[str] | None = None) -> int:
    from edge._errors import MissingDependencyError, require_extra

    args = _parser().parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(message)s",
    )
    try:
        for module in _needs(args):
            require_extra(module, extra=EXTRA, what=f"ranker-personalize {args.command}")
    except MissingDependencyError as missing:
        print(f"ranker-personalize: {missing}", file=sys.stderr)
        return 2
    return int(args.func(args))
