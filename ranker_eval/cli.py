"""`ranker-eval`: generate (or reuse) candidates, score every method, write the report.

Needs the ``eval`` extra (torch, transformers, plots); without it, it ends with
one line naming it.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from central.model import WEIGHT_FORMATS
from ranker_eval.config import PRESETS, RunConfig, quick


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ranker-eval",
        description=__doc__,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--out", type=Path, default=Path("ranker-eval-report"), help="report directory")
    p.add_argument(
        "--cache", type=Path, default=Path(".cache/ranker-eval"), help="candidate cache directory"
    )
    p.add_argument("--quick", action="store_true", help="tiny budgets (CI smoke test)")
    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="full",
        help="which plan: the full comparison or the representation study's pools",
    )
    p.add_argument("--model", action="append", help="restrict to these models (repeatable)")
    p.add_argument("--task", action="append", help="restrict to these tasks (repeatable)")
    p.add_argument("--budget-minutes", type=float, help="override the generation budget")
    p.add_argument(
        "--phase",
        choices=("all", "generate", "evaluate", "representation"),
        default="all",
        help="generate only fills the cache; evaluate only reads it; representation runs "
        "the representation study on the cached pools (use with --preset representation)",
    )
    p.add_argument(
        "--jobs", type=int, default=1, help="models run in parallel, one process (and core) each"
    )
    p.add_argument(
        "--no-swift", action="store_true", help="skip SWIFT (it re-runs the model per token)"
    )
    p.add_argument("--json", action="store_true", help="print the headline numbers as JSON")
    p.add_argument(
        "--unsafe-exec",
        action="store_true",
        help="run generated code (HumanEval) unisolated where bubblewrap is unusable; "
        "only for trusted models on a throwaway machine",
    )
    p.add_argument(
        "--weights",
        choices=WEIGHT_FORMATS,
        help="the LLM's linear weights, as ranker-central --weights (default: auto, as "
        "central picks on this machine); each format's pools are cached apart",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log every generated problem")
    return p


def _config(args: argparse.Namespace) -> RunConfig:
    import dataclasses

    config = (
        quick(args.model[0] if args.model else "default") if args.quick else PRESETS[args.preset]
    )
    if args.model and not args.quick:
        config = dataclasses.replace(
            config, models=tuple(m for m in config.models if m.model in args.model)
        )
    if args.task:
        config = dataclasses.replace(
            config,
            models=tuple(
                dataclasses.replace(m, tasks=tuple(t for t in m.tasks if t.task in args.task))
                for m in config.models
            ),
        )
    if args.no_swift:
        config = dataclasses.replace(config, swift=False)
    if args.budget_minutes is not None:
        config = dataclasses.replace(config, budget_minutes=args.budget_minutes)
    if args.unsafe_exec:
        config = dataclasses.replace(config, unsafe_exec=True)
    if args.weights is not None:
        config = dataclasses.replace(config, weights=args.weights)
    return config


def _isolation_refusal(config: RunConfig, phase: str) -> str | None:
    """Why generating code answers would be refused, checked before any model loads."""
    runs_code = any(t.task == "code" for m in config.models for t in m.tasks)
    if phase in ("evaluate", "representation") or not runs_code or config.unsafe_exec:
        return None  # evaluate only reads cached labels
    from ranker_eval.sandbox import SandboxUnavailable, require_isolation

    try:
        require_isolation()
    except SandboxUnavailable as error:
        return str(error)
    return None


# What every phase imports beyond the runtime install, all in the `eval` extra.
NEEDS = ("torch", "transformers", "tqdm", "matplotlib")


def main(argv: list[str] | None = None) -> int:
    from edge._errors import MissingDependencyError, require_extra

    args = _parser().parse_args(argv)
    try:
        for module in NEEDS:
            require_extra(module, extra="eval", what="ranker-eval")
    except MissingDependencyError as missing:
        print(f"ranker-eval: {missing}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(message)s",
    )
    config = _config(args)
    refusal = _isolation_refusal(config, args.phase)
    if refusal is not None:
        print(f"ranker-eval: error: {refusal}", file=sys.stderr)
        return 2
    from ranker_eval.collect import collect_model

    start = time.monotonic()
    # The budget is wall-clock: models that run side by side each get all of it.
    n_models = max(len(config.models), 1)
    budget_s = 60.0 * config.budget_minutes * min(args.jobs, n_models) / n_models
    if args.phase == "representation":
        from ranker_eval.representation import run_study

        run_study(config, args.cache, args.out)
        return 0
    if args.phase == "generate":
        for plan in config.models:
            collect_model(plan, config, args.cache, budget_s)
        return 0
    from ranker_eval.evaluate import evaluate_run
    from ranker_eval.report import write_report

    results = evaluate_run(
        config, args.cache, budget_s, generate=args.phase == "all", jobs=args.jobs
    )
    results["runtime_s"] = time.monotonic() - start
    results["command"] = "ranker-eval " + " ".join(sys.argv[1:] if argv is None else argv)
    write_report(results, args.out)
    if args.json:
        print(json.dumps(results["headline"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
