"""`ranker-edge`: the demo, and managing per-user rankers from a shell."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from edge._errors import RankerError
from edge.demo.config import DEMO_PARTS, DemoConfig

__all__ = ["main"]

_DEFAULT_HOME = Path("~/.language-ranker").expanduser()
TOKEN_ENV = "RANKER_CENTRAL_TOKEN"  # the variable ranker-central reads its token from


_FORMATTER = argparse.ArgumentDefaultsHelpFormatter


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ranker-edge", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser(
        "demo", help="the whole loop for simulated users", formatter_class=_FORMATTER
    )
    d = DemoConfig()  # the defaults live in one place
    demo.add_argument("--central", help="address of a running central (default: start one)")
    _connection_args(demo)
    demo.add_argument("--model", default=d.model, help="model for a started central")
    demo.add_argument("--k", type=int, default=d.k, help="candidates per prompt")
    demo.add_argument(
        "--no-greedy-first",
        dest="greedy_first",
        action="store_false",
        help="sample all K candidates (default: candidate 0 is the greedy answer)",
    )
    demo.add_argument(
        "--only",
        choices=["correctness", "personalization"],
        help="run only this part; None runs both",
    )
    demo.add_argument(
        "--seed", type=int, default=d.seed, help="seeds prompts, sampling, users, training"
    )
    demo.add_argument("--home", type=Path, help="keep feedback and rankers here (default: temp)")
    demo.add_argument("--json", action="store_true", help="print the results as JSON")
    right = demo.add_argument_group("correctness part: answers marked right or wrong")
    right.add_argument(
        "--train-prompts", type=int, default=d.train_prompts, help="prompts given feedback"
    )
    right.add_argument(
        "--test-prompts", type=int, default=d.test_prompts, help="held-out prompts scored"
    )
    right.add_argument(
        "--learn-every", type=int, default=d.learn_every, help="prompts between updates"
    )
    right.add_argument(
        "--max-new-tokens", type=int, default=d.max_new_tokens, help="tokens per candidate answer"
    )
    right.add_argument(
        "--kind",
        choices=["taste", "list", "point"],
        default=d.kind,
        help="learner: the torch-free taste head, or a whole torch list/point ranker per user",
    )
    taste = demo.add_argument_group("personalization part: two users with opposite tastes")
    taste.add_argument(
        "--taste-prompts", type=int, default=d.taste_prompts, help="prompts both users rate"
    )
    taste.add_argument(
        "--taste-test-prompts", type=int, default=d.taste_test_prompts, help="held-out prompts"
    )
    taste.add_argument(
        "--taste-events", type=int, default=d.taste_events, help="feedback events per user"
    )
    taste.add_argument(
        "--taste-learn-every",
        type=int,
        default=d.taste_learn_every,
        help="events between a user's updates",
    )
    taste.add_argument(
        "--taste-max-new-tokens",
        type=int,
        default=d.taste_max_new_tokens,
        help="tokens per candidate answer",
    )
    taste.add_argument(
        "--taste-noise",
        type=float,
        default=d.taste_noise,
        help="chance a simulated reaction is random",
    )

    generate = commands.add_parser(
        "generate", help="sample K candidates and rank them", formatter_class=_FORMATTER
    )
    generate.add_argument("prompt", help="the prompt sent to central")
    generate.add_argument("--central", default="127.0.0.1:50051", help="central's address")
    _connection_args(generate)
    generate.add_argument("--k", type=int, default=4, help="candidates to sample")
    generate.add_argument("--max-new-tokens", type=int, default=64, help="tokens per candidate")
    generate.add_argument(
        "--no-greedy-first",
        dest="greedy_first",
        action="store_false",
        help="sample all K candidates (default: candidate 0 is the greedy answer)",
    )
    _user_args(generate)

    for command, text in (
        ("versions", "list a user's ranker versions"),
        ("learn", "update a user's ranker from new feedback"),
        ("rollback", "make the previous version current"),
    ):
        _user_args(commands.add_parser(command, help=text, formatter_class=_FORMATTER))
    return parser


def _connection_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--token-file", type=Path, help=f"file holding central's bearer token (or ${TOKEN_ENV})"
    )
    parser.add_argument("--tls", action="store_true", help="TLS with the system's CA roots")
    parser.add_argument("--tls-ca", type=Path, help="PEM file of a private CA (implies --tls)")


def _user_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--home", type=Path, default=_DEFAULT_HOME, help="feedback and rankers")
    parser.add_argument("--user", default="me", help="whose feedback and ranker")
    parser.add_argument("--name", default="chat", help="ranker name, e.g. chat or math")


def _token(args: argparse.Namespace) -> str | None:
    """The bearer token from --token-file or the environment; an empty one is an error."""
    if args.token_file is None:
        return os.environ.get(TOKEN_ENV) or None
    try:
        token = args.token_file.read_text().strip()
    except OSError as error:
        raise RankerError(f"--token-file {args.token_file}: {error.strerror}") from error
    if not token:
        raise RankerError(f"--token-file {args.token_file} is empty")
    return token


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except RankerError as error:
        print(f"ranker-edge: {error}", file=sys.stderr)
        return 2


def _demo_config(args: argparse.Namespace) -> DemoConfig:
    """The demo's settings from its options (checked here, before central starts)."""
    return DemoConfig(
        central=args.central, model=args.model, k=args.k, seed=args.seed, home=args.home,
        greedy_first=args.greedy_first,
        token=_token(args), tls=args.tls,
        root_certificates=None if args.tls_ca is None else str(args.tls_ca),
        parts=(args.only,) if args.only else DEMO_PARTS,
        train_prompts=args.train_prompts, test_prompts=args.test_prompts,
        learn_every=args.learn_every, max_new_tokens=args.max_new_tokens, kind=args.kind,
        taste_prompts=args.taste_prompts, taste_test_prompts=args.taste_test_prompts,
        taste_events=args.taste_events, taste_learn_every=args.taste_learn_every,
        taste_max_new_tokens=args.taste_max_new_tokens, taste_noise=args.taste_noise,
    )  # fmt: skip


def _demo(args: argparse.Namespace) -> int:
    from edge.demo.report import format_table
    from edge.demo.run import run_demo

    config = _demo_config(args)
    # With --json, stdout carries the JSON alone; progress goes to stderr.
    result = run_demo(
        config, log=lambda line: print(line, file=sys.stderr if args.json else sys.stdout)
    )
    print(json.dumps(result.as_json(), indent=2) if args.json else format_table(result))
    return 0


def _generate(args: argparse.Namespace) -> int:
    from edge.app.personal import PersonalRanker
    from edge.runtime.client import CentralClient

    tls = args.tls or args.tls_ca is not None
    with CentralClient(
        args.central, token=_token(args), tls=tls, root_certificates=args.tls_ca
    ) as central:
        user = PersonalRanker(central, args.home, args.user, args.name)
        shown = user.generate(
            args.prompt, args.k, max_new_tokens=args.max_new_tokens, greedy_first=args.greedy_first
        )
        version = f"v{shown.ranker_version}" if shown.ranker_version else "no ranker yet"
        print(f"set {shown.set_id} ranked by {version}:")
        for rank, candidate in enumerate(shown.ranked, start=1):
            print(f"{rank:2d}. [{candidate.index}] {candidate.text!r}")
        user.close()
    return 0


def _versions(args: argparse.Namespace) -> int:
    from edge.app.personal import REGISTRY_DIR
    from edge.app.registry import Registry

    registry = Registry(args.home / REGISTRY_DIR)
    current = registry.current(args.user, args.name).version
    for info in registry.versions(args.user, args.name):
        mark = "*" if info.version == current else " "
        print(f"{mark} v{info.version}  {json.dumps(info.metadata, sort_keys=True)}")
    return 0


def _learn(args: argparse.Namespace) -> int:
    from edge.app.personal import REGISTRY_DIR, STORE_FILE
    from edge.app.registry import Registry
    from edge.app.store import FeedbackStore
    from edge.training.learner import Learner

    with FeedbackStore(args.home / STORE_FILE) as store:
        report = Learner(store, Registry(args.home / REGISTRY_DIR)).learn(args.user, args.name)
    if report.updated and report.version is not None:
        print(
            f"v{report.version}: {report.new_events} new events, "
            f"loss {report.loss_before:.4f} -> {report.loss_after:.4f} in {report.seconds:.2f} s"
        )
    else:
        print("no new feedback: nothing to learn")
    return 0


def _rollback(args: argparse.Namespace) -> int:
    from edge.app.personal import REGISTRY_DIR
    from edge.app.registry import Registry

    info = Registry(args.home / REGISTRY_DIR).rollback(args.user, args.name)
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
