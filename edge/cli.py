"""`ranker-edge`: the demo, and managing per-user rankers from a shell."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edge._errors import RankerError

__all__ = ["main"]

_DEFAULT_HOME = Path("~/.language-ranker").expanduser()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ranker-edge", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="the whole loop for one simulated user")
    demo.add_argument("--central", help="address of a running central (default: start one)")
    demo.add_argument("--model", default="default", help="model for a started central")
    demo.add_argument("--k", type=int, default=8, help="candidates per prompt")
    demo.add_argument("--train-prompts", type=int, default=256)
    demo.add_argument("--test-prompts", type=int, default=64)
    demo.add_argument("--learn-every", type=int, default=32)
    demo.add_argument("--kind", choices=["list", "point"], default="list")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--home", type=Path, help="keep feedback and rankers here")
    demo.add_argument("--json", action="store_true", help="print the results as JSON")

    generate = commands.add_parser("generate", help="sample K candidates and rank them")
    generate.add_argument("prompt")
    generate.add_argument("--central", default="127.0.0.1:50051")
    generate.add_argument("--k", type=int, default=4)
    generate.add_argument("--max-new-tokens", type=int, default=64)
    _user_args(generate)

    versions = commands.add_parser("versions", help="list a user's ranker versions")
    _user_args(versions)
    learn = commands.add_parser("learn", help="update a user's ranker from new feedback")
    _user_args(learn)
    rollback = commands.add_parser("rollback", help="make the previous version current")
    _user_args(rollback)
    return parser


def _user_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--home", type=Path, default=_DEFAULT_HOME)
    parser.add_argument("--user", default="me")
    parser.add_argument("--name", default="chat", help="ranker name, e.g. chat or math")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except RankerError as error:
        print(f"ranker-edge: {error}", file=sys.stderr)
        return 2


def _demo(args: argparse.Namespace) -> int:
    from edge.demo.report import format_table
    from edge.demo.run import DemoConfig, run_demo

    config = DemoConfig(
        central=args.central, model=args.model, k=args.k, train_prompts=args.train_prompts,
        test_prompts=args.test_prompts, learn_every=args.learn_every, kind=args.kind,
        seed=args.seed, home=args.home,
    )  # fmt: skip
    result = run_demo(config, log=(lambda _: None) if args.json else print)
    print(json.dumps(result.as_json(), indent=2) if args.json else format_table(result))
    return 0


def _generate(args: argparse.Namespace) -> int:
    from edge.app.personal import PersonalRanker
    from edge.runtime.client import CentralClient

    with CentralClient(args.central) as central:
        user = PersonalRanker(central, args.home, args.user, args.name)
        shown = user.generate(args.prompt, args.k, max_new_tokens=args.max_new_tokens)
        version = f"v{shown.ranker_version}" if shown.ranker_version else "no ranker yet"
        print(f"set {shown.set_id} ranked by {version}:")
        for rank, candidate in enumerate(shown.ranked, start=1):
            print(f"{rank:2d}. [{candidate.index}] {candidate.text!r}")
        user.close()
    return 0


def _versions(args: argparse.Namespace) -> int:
    from edge.app.registry import Registry

    registry = Registry(args.home / "rankers")
    current = registry.current(args.user, args.name).version
    for info in registry.versions(args.user, args.name):
        mark = "*" if info.version == current else " "
        print(f"{mark} v{info.version}  {json.dumps(info.metadata, sort_keys=True)}")
    return 0


def _learn(args: argparse.Namespace) -> int:
    from edge.app.registry import Registry
    from edge.app.store import FeedbackStore
    from edge.training.learner import Learner

    with FeedbackStore(args.home / "feedback.sqlite3") as store:
        report = Learner(store, Registry(args.home / "rankers")).learn(args.user, args.name)
    if report.updated:
        print(
            f"v{report.version.version}: {report.new_events} new events, "
            f"loss {report.loss_before:.4f} -> {report.loss_after:.4f} in {report.seconds:.2f} s"
        )
    else:
        print("no new feedback: nothing to learn")
    return 0


def _rollback(args: argparse.Namespace) -> int:
    from edge.app.registry import Registry

    info = Registry(args.home / "rankers").rollback(args.user, args.name)
    print(f"current version is now v{info.version}")
    return 0


_COMMANDS = {
    "demo": _demo,
    "generate": _generate,
    "versions": _versions,
    "learn": _learn,
    "rollback": _rollback,
}

if __name__ == "__main__":
    sys.exit(main())
