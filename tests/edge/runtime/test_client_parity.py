"""The blocking and the asyncio client are one client: same options, same values, same errors.

Every request below goes through `CentralClient` and `AsyncCentralClient`
against the same real server (tiny Llama on loopback); the results are compared
field by field, numpy arrays by dtype and value. Seeded sampling is
deterministic, so any difference is the clients' doing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import socket
from typing import Any

import numpy as np
import pytest

from central.server import ServerConfig, start_server
from edge._errors import (
    ConnectionLostError,
    DeadlineExceededError,
    InvalidRequestError,
    ServerError,
)
from edge.runtime.async_client import AsyncCentralClient
from edge.runtime.client import CentralClient, Instruction
from edge.runtime.token_wire import CandidateTokens, TokenFeatureRequest
from edge.runtime.types import Usage
from edge.swift.train import build_swift
from edge.training.rankers import build_ranker, make_config

CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]

# name -> (method, positional arguments, keyword options)
CASES: dict[str, tuple[str, tuple[Any, ...], dict[str, Any]]] = {
    "info": ("info", (), {}),
    "generate": ("generate", ("Write a poem", 3), {"max_new_tokens": 6, "seed": 4}),
    "sampling options, fp32, layer fraction": (
        "generate",
        ("What is two plus three?", 2),
        {
            "max_new_tokens": 5,
            "seed": 1,
            "temperature": 0.7,
            "top_p": 0.9,
            "top_k": 20,
            "encoding": "fp32",
            "layer": 0.25,
        },
    ),
    "int8, layer index": (
        "generate",
        ("Hi", 2),
        {"max_new_tokens": 4, "seed": 1, "encoding": "int8", "layer": 4},
    ),
    "chat prompt": ("generate", (CHAT, 2), {"max_new_tokens": 4, "seed": 2}),
    "raw prompt": (
        "generate",
        ("def add(a, b):", 2),
        {"max_new_tokens": 4, "seed": 3, "raw": True},
    ),
    "token features": (
        "generate",
        ("Write a short poem.", 3),
        {"max_new_tokens": 8, "seed": 2, "token_features": True},
    ),
    "logits-only token features": (
        "generate",
        ("Write a short poem.", 2),
        {
            "max_new_tokens": 5,
            "seed": 2,
            "token_features": TokenFeatureRequest(top_logprobs=3, encoding="fp32"),
        },
    ),
    "stream": ("stream", ("Write a poem", 4), {"max_new_tokens": 6, "seed": 3}),
    "stream with token features": (
        "stream",
        ("List colours.", 2),
        {"max_new_tokens": 6, "seed": 5, "token_features": TokenFeatureRequest(layers=(2,))},
    ),
    "features": (
        "features",
        ("List colours", ["red", "green and blue"]),
        {"layer": 1, "encoding": "int8"},
    ),
    "features of no responses": ("features", ("List colours", []), {}),
    "every vector and the entropy": (
        "generate",
        ("Write a poem", 3),
        {
            "max_new_tokens": 6,
            "seed": 4,
            "vectors": ("last", "mean", "embedding_mean"),
            "mean_entropy": True,
        },
    ),
    "the embedding mean alone, streamed": (
        "stream",
        ("List colours.", 2),
        {"max_new_tokens": 5, "seed": 6, "vectors": ("embedding_mean",), "encoding": "int8"},
    ),
    "response vectors": (
        "response_vectors",
        ("List colours", ["red", "", "green and blue"]),
        {"vectors": ("mean", "embedding_mean"), "mean_entropy": True, "layer": 3},
    ),
}


def _run_both(address: str, method: str, args: tuple[Any, ...], options: dict[str, Any]) -> Any:
    """(the blocking client's result, the asyncio client's result) of one request."""
    with CentralClient(address, timeout=60) as central:
        result = getattr(central, method)(*args, **options)
        expected = list(result) if method == "stream" else result

    async def run() -> Any:
        async with AsyncCentralClient(address, timeout=60) as central:
            call = getattr(central, method)(*args, **options)
            return [e async for e in call] if method == "stream" else await call

    return expected, asyncio.run(run())


def _assert_same(expected: Any, actual: Any, where: str = "result") -> None:
    """Equal in type and value, field by field; arrays equal in dtype (float32) and values."""
    assert type(actual) is type(expected), f"{where}: {type(actual)} != {type(expected)}"
    if isinstance(expected, np.ndarray):
        assert expected.dtype == np.float32, f"{where}: the blocking client gave {expected.dtype}"
        assert actual.dtype == expected.dtype, f"{where}: {actual.dtype} != {expected.dtype}"
        assert actual.shape == expected.shape, f"{where}: {actual.shape} != {expected.shape}"
        np.testing.assert_array_equal(actual, expected, err_msg=where)
    elif isinstance(expected, Usage):  # the wall time differs from call to call
        assert (actual.prompt_tokens, actual.generated_tokens) == (
            expected.prompt_tokens,
            expected.generated_tokens,
        ), where
    elif dataclasses.is_dataclass(expected):
        for f in dataclasses.fields(expected):
            _assert_same(getattr(expected, f.name), getattr(actual, f.name), f"{where}.{f.name}")
    elif isinstance(expected, tuple | list):
        assert len(actual) == len(expected), f"{where}: {len(actual)} != {len(expected)} items"
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            _assert_same(e, a, f"{where}[{i}]")
    else:
        assert actual == expected, f"{where}: {actual!r} != {expected!r}"


@pytest.mark.parametrize("case", CASES)
def test_both_clients_return_the_same_values(tiny_server, case: str) -> None:
    method, args, options = CASES[case]
    expected, actual = _run_both(f"127.0.0.1:{tiny_server.port}", method, args, options)
    _assert_same(expected, actual)


def test_the_compared_values_are_the_full_ones(tiny_server) -> None:
    """The parity above compares populated fields: token features, usage, float32 zeros."""
    address = f"127.0.0.1:{tiny_server.port}"
    _, tokens = _run_both(address, *CASES["token features"])
    assert all(c.token_features.shape == (len(c.token_ids), 256) for c in tokens.candidates)
    assert tokens.usage.prompt_tokens > 0 and tokens.usage.seconds > 0
    assert tokens.usage.generated_tokens == sum(c.num_tokens for c in tokens.candidates)
    _, events = _run_both(address, *CASES["stream with token features"])
    assert isinstance(events[0], Instruction) and events[0].token_feature_size == 64
    assert [type(e) for e in events[3:]] == [CandidateTokens, CandidateTokens]
    _, (instruction, none) = _run_both(address, *CASES["features of no responses"])
    assert instruction.shape == (64,) and none.shape == (0, 64) and none.dtype == np.float32
    _, every = _run_both(address, *CASES["every vector and the entropy"])
    assert all(c.embedding_mean_feature.shape == (64,) for c in every.candidates)
    _, given = _run_both(address, *CASES["response vectors"])
    assert given.embedding_mean.shape == (3, 64) and given.mean_entropy.shape == (3,)


def test_a_ranker_decides_token_features_in_both_clients(tiny_server) -> None:
    address = f"127.0.0.1:{tiny_server.port}"
    swift = build_swift(4 * 64, layers=[1, 2, 3, 4], seed=0)
    expected, actual = _run_both(address, "generate", ("Hi", 2), {"seed": 1, "ranker": swift})
    _assert_same(expected, actual)
    assert [t.shape[1] for t in actual.token_features] == [256, 256]
    point = build_ranker(make_config("point", 64))
    expected, actual = _run_both(address, "generate", ("Hi", 2), {"seed": 1, "ranker": point})
    _assert_same(expected, actual)
    assert actual.token_features == []


def test_both_clients_offer_the_same_methods_and_options() -> None:
    def public(cls: type) -> dict[str, inspect.Signature]:
        return {
            name: inspect.signature(member)
            for name, member in inspect.getmembers(cls, inspect.isfunction)
            if not name.startswith("_")
        }

    blocking, awaiting = public(CentralClient), public(AsyncCentralClient)
    assert sorted(blocking) == sorted(awaiting)
    for name, signature in blocking.items():
        assert list(awaiting[name].parameters.values()) == list(signature.parameters.values())
    assert inspect.signature(CentralClient) == inspect.signature(AsyncCentralClient)


# ------------------------------------------------------------------ the same errors


def _async_raises(address: str, method: str, *args: Any, **options: Any) -> BaseException:
    async def run() -> None:
        async with AsyncCentralClient(address, timeout=30) as central:
            result = getattr(central, method)(*args, **options)
            if method == "stream":
                [e async for e in result]
            else:
                await result

    with pytest.raises(Exception) as raised:
        asyncio.run(run())
    return raised.value


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"k": 100}, InvalidRequestError),
        ({"k": 1, "temperature": -1.0}, InvalidRequestError),
        ({"k": 1, "encoding": "bf16"}, ValueError),
        ({"k": 1, "layer": True}, TypeError),
        ({"k": 1, "temprature": 0.5}, TypeError),  # a misspelt option is refused, not ignored
        ({"k": 1, "token_features": TokenFeatureRequest(encoding="bf16")}, ValueError),
    ],
)
def test_both_clients_raise_the_same_error(tiny_server, options: dict[str, Any], error) -> None:
    address = f"127.0.0.1:{tiny_server.port}"
    for method in ("generate", "stream"):
        with CentralClient(address, timeout=30) as central, pytest.raises(error) as raised:
            result = getattr(central, method)("hi", **options)
            if method == "stream":
                list(result)
        expected = raised.value
        actual = _async_raises(address, method, "hi", **options)
        assert type(actual) is type(expected) and str(actual) == str(expected)


def test_async_deadline_raises_deadline_exceeded(tiny_server) -> None:
    address = f"127.0.0.1:{tiny_server.port}"
    raised = _async_raises(
        address, "generate", "Write a poem", 32, max_new_tokens=200, timeout=0.01
    )
    assert isinstance(raised, DeadlineExceededError)
    raised = _async_raises(address, "features", "Write a poem", ["x"] * 64, timeout=0.001)
    assert isinstance(raised, DeadlineExceededError)


def test_async_unreachable_server_raises_connection_lost() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    address = f"127.0.0.1:{port}"
    assert isinstance(_async_raises(address, "info"), ConnectionLostError)
    assert isinstance(_async_raises(address, "wait_ready", timeout=0.5), ConnectionLostError)


def test_async_wait_ready_returns_once_connected(tiny_server) -> None:
    async def run() -> int:
        async with AsyncCentralClient(f"127.0.0.1:{tiny_server.port}") as central:
            await central.wait_ready(timeout=10)
            return (await central.info()).hidden_size

    assert asyncio.run(run()) == 64


def test_breaking_out_of_an_async_stream_cancels_generation(tiny_server) -> None:
    async def run() -> type:
        async with AsyncCentralClient(f"127.0.0.1:{tiny_server.port}", timeout=60) as central:
            async for event in central.stream("Write a poem", 32, max_new_tokens=200, seed=0):
                return type(event)
        raise AssertionError("the stream yielded nothing")

    assert asyncio.run(run()) is Instruction
    engine = tiny_server.servicer.engine  # the server dropped the rows and the request
    assert engine.wait_idle(10)
    assert engine.rows_in_flight == 0


def test_both_clients_send_the_token_the_same_way(tiny_model) -> None:
    running = start_server(ServerConfig(port=0, auth_token="tok"), loaded=tiny_model)
    address = f"127.0.0.1:{running.port}"

    async def info(token: str) -> int:
        async with AsyncCentralClient(address, token=token) as central:
            return (await central.info()).hidden_size

    try:
        assert asyncio.run(info("tok")) == 64
        with pytest.raises(ServerError, match="UNAUTHENTICATED"):
            asyncio.run(info("bad"))
        with CentralClient(address, token="tok") as central:
            assert central.info().hidden_size == 64
    finally:
        running.stop(grace=0)
