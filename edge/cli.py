"""`ranker-edge`: the demo, and one user's loop from a shell.

    ranker-edge generate "Which number is larger, 47 or 74?"   # shows set 3f2a9c1e
    ranker-edge feedback up 1        # thumbs up on candidate [1] of the latest set
    ranker-edge feedback pick 1 --set 3f2a    # candidate [1] over the others of that set
    ranker-edge learn                # the taste learner (numpy), a new version
    ranker-edge versions             # * marks the current one, ! a damaged one
    ranker-edge rollback             # the previous version; its feedback is forgotten

Candidates are named by the index in brackets that `generate` and `sets` print;
a set by its id or any unique start of it (`--set`), else the user's latest.
Every command works in a runtime-only install (no torch) except `demo` with a
torch learner and `learn --learner list|point`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from edge._errors import CorruptVersionWarning, RankerError, UnknownCandidateSetError
from edge.demo.config import DEMO_PARTS, DemoConfig

if TYPE_CHECKING:
    from edge._errors import CorruptModelError
    from edge.app.registry import VersionInfo
    from edge.app.store import FeedbackStore

__all__ = ["main"]

_DEFAULT_HOME = Path("~/.language-ranker").expanduser()
TOKEN_ENV = "RANKER_CENTRAL_TOKEN"  # the variable ranker-central reads its token from
_LEARNERS = ("taste", "list", "point")  # taste: numpy, no torch; list/point: torch rankers


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
    generate.add_argument("--k", type=_positive, default=4, help="candidates to sample")
    generate.add_argument(
        "--max-new-tokens", type=_positive, default=64, help="tokens per candidate"
    )
    generate.add_argument(
        "--no-greedy-first",
        dest="greedy_first",
        action="store_false",
        help="sample all K candidates (default: candidate 0 is the greedy answer)",
    )
    _user_args(generate)

    sets = commands.add_parser(
        "sets", help="list the sets recently shown to a user", formatter_class=_FORMATTER
    )
    sets.add_argument("--limit", type=_positive, default=5, help="how many sets, newest first")
    _user_args(sets)
    _feedback_parser(commands)

    learn = commands.add_parser(
        "learn", help="update a user's ranker from new feedback", formatter_class=_FORMATTER
    )
    learn.add_argument(
        "--learner",
        choices=_LEARNERS,
        default="taste",
        help="taste: PersonalRanker's numpy head (no torch); list/point: a whole torch "
        "ranker per user (the train extra)",
    )
    _user_args(learn)
    versions = commands.add_parser(
        "versions", help="list a user's ranker versions", formatter_class=_FORMATTER
    )
    versions.add_argument("--json", action="store_true", help="print them as JSON")
    _user_args(versions)
    rollback = commands.add_parser(
        "rollback",
        help="make an earlier version current; the feedback only the versions left had "
        "learned is not learned again",
        formatter_class=_FORMATTER,
    )
    rollback.add_argument("--to", type=int, help="this version (None: the one before)")
    _user_args(rollback)
    return parser


def _feedback_parser(commands: argparse._SubParsersAction) -> None:
    feedback = commands.add_parser(
        "feedback",
        help="record feedback on a shown candidate: up, down, pick or score",
        description="Record feedback on a candidate of a shown set. CANDIDATE is the index "
        "in brackets that `generate` and `sets` print.",
        formatter_class=_FORMATTER,
    )
    kinds = feedback.add_subparsers(dest="kind", required=True, metavar="KIND")
    for kind, text in (("up", "thumbs up"), ("down", "thumbs down")):
        thumb = kinds.add_parser(kind, help=f"{text} on one candidate", formatter_class=_FORMATTER)
        thumb.add_argument("candidate", type=int, help="candidate index, as printed in brackets")
        _set_args(thumb)
    pick = kinds.add_parser(
        "pick", help="this candidate is better than the others", formatter_class=_FORMATTER
    )
    pick.add_argument("candidate", type=int, help="the chosen candidate's index")
    pick.add_argument(
        "--over", type=int, nargs="+", help="the candidates it beats (None: every other one)"
    )
    _set_args(pick)
    score = kinds.add_parser(
        "score", help="a real-valued rating, e.g. 1-5 stars", formatter_class=_FORMATTER
    )
    score.add_argument("candidate", type=int, help="candidate index, as printed in brackets")
    score.add_argument("value", type=float, help="the rating; higher is better")
    _set_args(score)


def _set_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set",
        dest="set_ref",
        help="the set's id or a unique start of it (None: the latest set shown)",
    )
    _user_args(parser)


def _positive(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


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
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CorruptVersionWarning)
        try:
            status = _COMMANDS[args.command](args)
        except RankerError as error:
            print(f"ranker-edge: {error}", file=sys.stderr)
            status = 2
    for warning in caught:  # a damaged version or manifest that was stepped over: said
        if issubclass(warning.category, CorruptVersionWarning):
            print(f"ranker-edge: warning: {warning.message}", file=sys.stderr)
        else:
            warnings.showwarning(
                warning.message, warning.category, warning.filename, warning.lineno
            )
    return status


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
        try:
            shown = user.generate(
                args.prompt,
                args.k,
                max_new_tokens=args.max_new_tokens,
                greedy_first=args.greedy_first,
            )
        finally:
            user.close()
    version = f"v{shown.ranker_version}" if shown.ranker_version else "no ranker of its own yet"
    print(f"set {_short(shown.set_id)} for {args.user}/{args.name}, ranked by {version}:")
    for rank, candidate in enumerate(shown.ranked, start=1):
        print(f"{rank:2d}. [{candidate.index}] {candidate.text!r}")
    print("rate it: ranker-edge feedback up|down|pick|score CANDIDATE (the number in brackets)")
    return 0


_SHORT = 8  # hex digits of a set id printed; any unique start of it names the set


def _short(set_id: str) -> str:
    return set_id[:_SHORT]


def _sets(args: argparse.Namespace) -> int:
    from edge.app.personal import STORE_FILE
    from edge.app.store import FeedbackStore

    with FeedbackStore(args.home / STORE_FILE) as store:
        shown = store.recent_sets(args.user, task=args.name, limit=args.limit)
    if not shown:
        print(f"no set was shown to {args.user}/{args.name} yet: ranker-edge generate PROMPT")
    for one in shown:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(one.created))
        print(f"set {_short(one.set_id)}  {when}  {one.k} candidates")
        for index, text in enumerate(one.texts or ()):
            clipped = text if len(text) <= 70 else text[:67] + "..."
            print(f"  [{index}] {clipped!r}")
    return 0


def _feedback(args: argparse.Namespace) -> int:
    from edge.app.personal import STORE_FILE
    from edge.app.store import FeedbackStore

    with FeedbackStore(args.home / STORE_FILE) as store:
        set_id = _resolve_set(store, args)
        record: dict[str, Callable[[], int]] = {
            "up": lambda: store.thumbs(args.user, set_id, args.candidate, True),
            "down": lambda: store.thumbs(args.user, set_id, args.candidate, False),
            "pick": lambda: store.pick(args.user, set_id, args.candidate, args.over),
            "score": lambda: store.score(args.user, set_id, args.candidate, args.value),
        }
        event = record[args.kind]()
    print(f"event {event}: {args.kind} on [{args.candidate}] of set {_short(set_id)}")
    return 0


def _resolve_set(store: FeedbackStore, args: argparse.Namespace) -> str:
    """The set id ``--set`` names (an id or its start), else the user's latest set."""
    where = f"{args.user}/{args.name}"
    if args.set_ref is None:
        latest = store.recent_sets(args.user, task=args.name, limit=1)
        if not latest:
            raise RankerError(f"no set was shown to {where} yet: ranker-edge generate PROMPT")
        return latest[0].set_id
    try:
        return store.find_set(args.user, args.set_ref, task=args.name).set_id
    except UnknownCandidateSetError:
        raise RankerError(
            f"no set {args.set_ref!r} was shown to {where}: `ranker-edge sets` lists them"
        ) from None


def _versions(args: argparse.Namespace) -> int:
    from edge.app.personal import REGISTRY_DIR
    from edge.app.registry import Registry

    registry = Registry(args.home / REGISTRY_DIR)
    current = registry.current(args.user, args.name).version
    checked = [
        (info, registry.verify(args.user, args.name, info.version))
        for info in registry.versions(args.user, args.name)
    ]
    if args.json:
        rows = [
            {
                "version": info.version,
                "current": info.version == current,
                "created": info.created,
                "corrupt": None if damage is None else str(damage),
                "metadata": info.metadata,
            }
            for info, damage in checked
        ]
        print(json.dumps(rows, indent=1, sort_keys=True))
        return 0
    for info, damage in checked:
        print(_version_line(info, info.version == current, damage))
    return 0


def _version_line(info: VersionInfo, current: bool, damage: CorruptModelError | None) -> str:
    """``* v3  2025-06-01 12:00:03  learned up to event 12 (4 new)  taste_head``."""
    from edge.app.lineage import FORGOTTEN_KEY, cursor_of, ranges_of

    meta = info.metadata
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.created))
    mark = "!" if damage is not None else "*" if current else " "
    line = f"{mark} v{info.version}  {when}  learned up to event {cursor_of(meta)}"
    if isinstance(meta.get("new_events"), int):
        line += f" ({meta['new_events']} new)"
    if meta.get("learner"):
        line += f"  {meta['learner']}"
    forgotten = _event_ranges(ranges_of(meta.get(FORGOTTEN_KEY)))
    if forgotten:
        line += f"  forgets events {forgotten}"
    if damage is not None:
        line += f"  {'(current) ' if current else ''}CORRUPT: {damage}"
    return line


def _event_ranges(ranges: tuple[tuple[int, int], ...]) -> str:
    """``4-6, 9`` for the ranges ((3, 6), (8, 9)) (after, up_to)."""
    return ", ".join(
        f"{after + 1}-{up_to}" if up_to > after + 1 else str(up_to) for after, up_to in ranges
    )


def _learn(args: argparse.Namespace) -> int:
    from edge.app.learning import LearnerSpec
    from edge.app.personal import REGISTRY_DIR, STORE_FILE
    from edge.app.registry import Registry
    from edge.app.store import FeedbackStore
    from edge.app.taste.config import TasteConfig

    config: LearnerSpec = TasteConfig()  # what PersonalRanker learns with by default
    if args.learner != "taste":
        from edge.training.learner import LearnerConfig

        config = LearnerConfig(kind=args.learner)
    registry = Registry(args.home / REGISTRY_DIR)
    if registry.has(args.user, args.name):
        damage = registry.verify(args.user, args.name)
        if damage is not None:
            print(
                f"ranker-edge: warning: the current version is corrupt ({damage}); "
                "learning on top of the newest intact one",
                file=sys.stderr,
            )
    with FeedbackStore(args.home / STORE_FILE) as store:
        report = config.build(store, registry).learn(args.user, args.name)
    if report.updated and report.version is not None:
        print(
            f"v{report.version}: {report.new_events} new events ({report.replayed_events} "
            f"replayed), loss {report.loss_before:.4f} -> {report.loss_after:.4f} "
            f"in {report.seconds:.2f} s"
        )
    else:
        print(f"no new feedback for {args.user}/{args.name}: nothing to learn")
    return 0


def _rollback(args: argparse.Namespace) -> int:
    from edge.app.personal import REGISTRY_DIR
    from edge.app.registry import Registry

    registry = Registry(args.home / REGISTRY_DIR)
    info = registry.rollback(args.user, args.name, to=args.to)
    forgotten = _event_ranges(registry.forgotten(args.user, args.name))
    print(f"current version is now v{info.version}")
    if forgotten:
        print(f"feedback events {forgotten} will not be learned again")
    return 0


_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "demo": _demo,
    "generate": _generate,
    "sets": _sets,
    "feedback": _feedback,
    "learn": _learn,
    "versions": _versions,
    "rollback": _rollback,
}

if __name__ == "__main__":
    sys.exit(main())
