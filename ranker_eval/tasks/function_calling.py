"""Function-calling family: given tool signatures, produce the call.

A response is right when its first call parses (Python call syntax) to the
reference name and arguments after normalisation: keyword or positional
arguments are mapped onto the signature, strings are compared case- and
space-insensitively, numbers numerically.
"""

from __future__ import annotations

import ast
import random
import re
from dataclasses import dataclass

from ranker_eval.tasks.base import Problem

# name -> (parameter names, request templates, argument pools aligned with the parameters)
_TOOLS: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[tuple[str, ...], ...]]] = {
    "get_weather": (
        ("city",),
        ("What is the weather in {0}?", "Is it raining in {0} today?", "Weather for {0}, please."),
        (("Paris", "Tokyo", "Berlin", "Lima", "Cairo", "Oslo", "Delhi", "Rome", "Dublin"),),
    ),
    "play_music": (
        ("artist",),
        ("Play some {0}.", "Put on music by {0}.", "I want to listen to {0}."),
        (("Adele", "Queen", "Madonna", "Shakira", "Drake", "Coldplay", "Beyonce", "Metallica"),),
    ),
    "set_timer": (
        ("minutes",),
        ("Set a timer for {0} minutes.", "Start a {0} minute timer.", "Remind me in {0} minutes."),
        (tuple(str(m) for m in (2, 3, 5, 8, 10, 12, 15, 20, 25, 30, 45, 60)),),
    ),
    "get_stock_price": (
        ("symbol",),
        ("What is the price of {0} stock?", "How much is {0} trading at?", "Quote {0} for me."),
        (("AAPL", "MSFT", "TSLA", "AMZN", "NVDA", "IBM", "INTC", "ORCL"),),
    ),
    "translate": (
        ("text", "language"),
        ('Translate "{0}" into {1}.', 'How do you say "{0}" in {1}?'),
        (
            ("good morning", "thank you", "where is the station", "I am hungry", "see you"),
            ("French", "Spanish", "German", "Italian", "Japanese"),
        ),
    ),
}
_CALL = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*\(")
# One worked example per tool, with argument values never drawn for a problem.
_SHOTS: dict[str, tuple[str, str]] = {
    "get_weather": ("Is it sunny in Lyon?", 'get_weather(city="Lyon")'),
    "play_music": ("Play a song by Abba.", 'play_music(artist="Abba")'),
    "set_timer": ("Set a timer for 7 minutes.", "set_timer(minutes=7)"),
    "get_stock_price": ("What is the price of XYZ stock?", 'get_stock_price(symbol="XYZ")'),
    "translate": ('Translate "hello" into Latin.', 'translate(text="hello", language="Latin")'),
}


def _signature(name: str) -> str:
    params = _TOOLS[name][0]
    return f"{name}({', '.join(params)})"


def _literal(value: str) -> str:
    return value if value.isdigit() else f'"{value}"'


def _normalise(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return repr(float(value))
    text = " ".join(str(value).strip().lower().split())
    try:
        return repr(float(text))
    except ValueError:
        return text


def parse_call(response: str) -> tuple[str, dict[str, str]] | None:
    """The first parseable `name(args)` in `response`, arguments normalised by parameter name."""
    for match in _CALL.finditer(response):
        name = match.group(1)
        if name not in _TOOLS:
            continue
        depth, end = 0, None
        for i in range(match.end() - 1, len(response)):
            depth += {"(": 1, ")": -1}.get(response[i], 0)
            if depth == 0:
                end = i + 1
                break
        if end is None:
            return None
        try:
            call = ast.parse(response[match.start() : end], mode="eval").body
        except SyntaxError:
            return None
        if not isinstance(call, ast.Call):
            return None
        return name, _arguments(name, call)
    return None


def _arguments(name: str, call: ast.Call) -> dict[str, str]:
    params = _TOOLS[name][0]
    args: dict[str, str] = {}
    for position, node in enumerate(call.args):
        key = params[position] if position < len(params) else f"_{position}"
        args[key] = _normalise(_value(node))
    for keyword in call.keywords:
        args[str(keyword.arg)] = _normalise(_value(keyword.value))
    return args


def _value(node: ast.expr) -> object:
    try:
        return ast.literal_eval(node)
    except ValueError:
        return ast.unparse(node)  # a bare name such as Paris counts as its text


@dataclass(frozen=True)
class FunctionCallingTask:
    """Exact match of tool name and normalised arguments of the first call in the response."""

    name: str = "function"  # task id
    max_new_tokens: int = 16  # one call with one or two short arguments
    temperature: float = 0.7  # at 1.0 the 135M model almost never emits a call
    stop: tuple[str, ...] = ("\n",)  # the call is the first line
    raw: bool = True  # few-shot completion even for chat models: 135M never calls in chat
    tools_shown: int = 3  # signatures listed per prompt (the right one among distractors)

    def problems(self, count: int, seed: int) -> list[Problem]:
        rng = random.Random(seed)
        seen: set[str] = set()
        out: list[Problem] = []
        names = sorted(_TOOLS)
        while len(out) < count:
            tool = rng.choice(names)
            params, templates, pools = _TOOLS[tool]
            values = [rng.choice(pool) for pool in pools]
            request = rng.choice(templates).format(*values)
            if request in seen:
                continue
            seen.add(request)
            others = rng.sample([n for n in names if n != tool], self.tools_shown - 1)
            shown = sorted([tool, *others], key=lambda _: rng.random())
            args = ", ".join(f"{p}={_literal(v)}" for p, v in zip(params, values, strict=True))
            call = f"{tool}({args})"
            out.append(
                Problem(
                    uid=f"function-{len(out):04d}",
                    question=request,
                    answer=call,
                    meta={"tools": ",".join(shown)},
                )
            )
        return out

    def prompt(self, problem: Problem, chat: bool) -> str:
        # Few-shot completion for every model (see `raw`): one shot per listed tool,
        # with made-up argument values that are never drawn for a problem.
        shown = problem.meta["tools"].split(",")
        tools = ", ".join(_signature(n) for n in shown)
        shots = "".join(f"Request: {_SHOTS[n][0]}\nCall: {_SHOTS[n][1]}\n\n" for n in shown)
        return f"Functions: {tools}.\n\n{shots}Request: {problem.question}\nCall:"

    def extract(self, problem: Problem, response: str) -> str:
        parsed = parse_call(response)
        if parsed is None:
            return ""
        name, args = parsed
        return f"{name}({', '.join(f'{k}={v}' for k, v in sorted(args.items()))})"

    def is_correct(self, problem: Problem, response: str) -> bool:
        return self.extract(problem, response) == self.extract(problem, problem.answer)
