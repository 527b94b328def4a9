"""The engine on its own: continuous batching keeps each request what it is alone.

Requests with different prompts (so different lengths), K, sampling settings
and feature layers share decode steps; a seeded request must come out with
the same tokens, and features within float rounding, as when it runs alone
and as the single-request sampler gives.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import Iterator

import grpc
import numpy as np
import pytest

from central.config import EngineConfig, ServiceLimits
from central.engine import Done, Engine, FeaturesDone, InstructionReady, Overloaded, Ticket
from central.features import FeatureRequest
from central.model import INT8_FORMATS
from central.outbox import StreamEnd
from central.pooling import pool_responses
from central.sampler import SampledCandidate, SamplingConfig, sample
from central.token_features import TokenRequest
from central.validation import FeaturesJob, GenerateJob
from language_ranker.v1 import ranker_pb2 as pb

FP16 = pb.ENCODING_FP16


@pytest.fixture()
def engine(tiny_model) -> Iterator[Engine]:
    running = Engine(tiny_model)
    yield running
    running.close()


def _job(
    model,
    text: str,
    *,
    k: int = 4,
    tokens: int = 12,
    seed: int | None = 0,
    layer: int = 2,
    temperature: float = 1.0,
    top_p: float = 1.0,
    entropy: bool = True,
    greedy_first: bool = False,
    embedding: bool = False,
) -> GenerateJob:
    ids = model.tokenizer(text)["input_ids"]
    sampling = SamplingConfig(
        k=k,
        temperature=temperature,
        top_p=top_p,
        max_new_tokens=tokens,
        seed=seed,
        greedy_first=greedy_first,
    )
    features = FeatureRequest(
        layer=layer, encoding=FP16, mean=True, mean_entropy=entropy, embedding_mean=embedding
    )
    return GenerateJob(ids, sampling, features, None)


def _collect(ticket: Ticket) -> tuple[np.ndarray, dict[int, SampledCandidate], object]:
    instruction, candidates, last = None, {}, None
    try:
        for event in ticket.events():
            if isinstance(event, InstructionReady):
                instruction = event.feature
            elif isinstance(event, SampledCandidate):
                candidates[event.index] = event
            last = event
    finally:
        ticket.release()
    return instruction, candidates, last


def _assert_same(alone: dict[int, SampledCandidate], busy: dict[int, SampledCandidate]) -> None:
    assert sorted(alone) == sorted(busy)
    for index, expected in alone.items():
        got = busy[index]
        assert got.token_ids == expected.token_ids, f"candidate {index}"
        assert got.finished_by_eos == expected.finished_by_eos
        assert got.cumulative_logprob == pytest.approx(expected.cumulative_logprob, abs=1e-4)
        np.testing.assert_allclose(got.feature, expected.feature, atol=1e-4)
        np.testing.assert_allclose(got.mean_feature, expected.mean_feature, atol=1e-4)
        assert got.mean_entropy == pytest.approx(expected.mean_entropy, abs=1e-4)
        if expected.embedding_mean_feature is None:
            assert got.embedding_mean_feature is None
        else:
            assert got.embedding_mean_feature is not None
            np.testing.assert_allclose(
                got.embedding_mean_feature, expected.embedding_mean_feature, atol=1e-5
            )


def test_seeded_requests_are_the_same_alone_and_in_a_busy_batch(engine, tiny_model) -> None:
    # Prompts of many lengths, other K, settings, layers and vectors; staggered, so requests
    # join a batch already decoding, take over rows others left, and make the buffers grow.
    jobs = [
        _job(tiny_model, "Tell me about the sea", k=5, tokens=14, seed=11, embedding=True),
        _job(tiny_model, "hi", k=3, tokens=20, seed=1),
        _job(tiny_model, "a much longer prompt than the others, " * 4, k=7, tokens=9, seed=2),
        _job(tiny_model, "sample me colder", k=2, tokens=16, seed=3, temperature=0.7, top_p=0.9),
        _job(tiny_model, "another layer", k=4, tokens=18, seed=4, layer=4, embedding=True),
        _job(tiny_model, "greedy", k=1, tokens=12, seed=5, temperature=0.0),
        _job(tiny_model, "the longest prompt of them all, it goes on and on, " * 5, k=6, tokens=7),
        _job(tiny_model, "x", k=8, tokens=25, seed=7),
        _job(tiny_model, "one more", k=2, tokens=1, seed=8, embedding=True),
        _job(tiny_model, "greedy row first", k=3, tokens=11, seed=9, greedy_first=True),
    ]
    alone = [_collect(engine.submit_generate(job))[1] for job in jobs]
    results: dict[int, tuple] = {}

    def run(i: int) -> None:
        time.sleep(0.01 * i)
        results[i] = _collect(engine.submit_generate(jobs[i]))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for i, expected in enumerate(alone):
        assert isinstance(results[i][2], Done), results[i][2]
        _assert_same(expected, results[i][1])


@pytest.mark.parametrize("weights", ["dense", *INT8_FORMATS])
def test_requests_joining_together_are_the_same_alone_on_two_threads(
    served_tiny, two_torch_threads, weights
) -> None:
    # Prompts of one length that join in one turn start in one column, so their rows attend
    # in one call (`central.cpu_layers`); on two threads the CPU attention kernel used to
    # give a row other bits when more rows shared its call.
    loaded = served_tiny(weights)
    prompt = loaded.tokenizer("tell me something new")["input_ids"]
    jobs = [
        dataclasses.replace(
            _job(loaded, "", k=2, tokens=16, seed=seed),
            prompt_ids=[(t + 7 * seed) % 300 + 3 for t in prompt],  # as long as the others
        )
        for seed in range(3)
    ]
    engine = Engine(loaded)
    try:
        alone = [_collect(engine.submit_generate(job))[1] for job in jobs]
        # 64 rows decoding: newcomers of 2 rows wait (two steps) for others to join with them.
        busy = engine.submit_generate(_job(loaded, "keep busy", k=64, tokens=40, seed=9))
        events = busy.events()
        assert isinstance(next(events), InstructionReady)  # prefilled: now decoding
        together = [engine.submit_generate(job) for job in jobs]
        results = [_collect(ticket) for ticket in together]
        for _ in events:
            pass
        busy.release()
    finally:
        engine.close()
    for expected, (_, got, last) in zip(alone, results, strict=True):
        assert isinstance(last, Done), last
        assert sorted(got) == sorted(expected)
        for index, want in expected.items():  # bit for bit: the tiny model's tokens rarely move
            assert got[index].token_ids == want.token_ids
            assert got[index].cumulative_logprob == want.cumulative_logprob
            assert got[index].mean_entropy == want.mean_entropy
            np.testing.assert_array_equal(got[index].feature, want.feature)
            np.testing.assert_array_equal(got[index].mean_feature, want.mean_feature)


@pytest.mark.parametrize("ends", ["model", "often"])
def test_the_engine_samples_what_the_single_request_sampler_samples(tiny_model, ends) -> None:
    """With "often" a third of the vocabulary are end tokens: some rows end at once (the EOS
    state, from the prefill), others after a token or two, beside rows cut at the limit."""
    model = tiny_model
    if ends == "often":
        model = dataclasses.replace(tiny_model, eos_token_ids=frozenset(range(2, 140)))
    job = _job(model, "Count to ten", k=10, tokens=10, seed=5, embedding=True)
    events = list(sample(model, job.prompt_ids, job.sampling, 2, entropy=True, embedding_mean=True))
    reference = {c.index: c for c in events[1:] if isinstance(c, SampledCandidate)}
    assert ends == "model" or any(not c.token_ids for c in reference.values())
    engine = Engine(model)
    try:
        instruction, got, _ = _collect(engine.submit_generate(job))
    finally:
        engine.close()
    np.testing.assert_allclose(instruction, events[0], atol=1e-5)
    _assert_same(reference, got)
    assert all(c.embedding_mean_feature is not None for c in got.values())


def test_features_through_the_engine_equal_a_plain_pooling_pass(engine, tiny_model) -> None:
    prompt = tiny_model.tokenizer("Which is better?")["input_ids"]
    responses = [tiny_model.tokenizer(t)["input_ids"] for t in ["yes", "", "no, not at all " * 9]]
    features = FeatureRequest(
        layer=3, encoding=FP16, mean=True, mean_entropy=True, embedding_mean=True
    )
    ticket = engine.submit_features(FeaturesJob(prompt, responses, features))
    events = list(ticket.events())
    ticket.release()
    assert isinstance(events[0], FeaturesDone)
    instruction, pooled = pool_responses(tiny_model, prompt, responses, [3, 0], mean_entropy=True)
    np.testing.assert_allclose(events[0].instruction, instruction[0], atol=1e-5)
    for got, want in zip(events[0].pooled, pooled, strict=True):
        np.testing.assert_allclose(got.last, want.last[:1], atol=1e-5)
        np.testing.assert_allclose(got.mean, want.mean[:1], atol=1e-5)
        assert got.mean_entropy == pytest.approx(want.mean_entropy, abs=1e-5)
        assert got.embedding_mean is not None
        np.testing.assert_allclose(got.embedding_mean, want.mean[1], atol=1e-6)


def test_a_features_call_past_its_deadline_frees_the_engine_within_a_second(tiny_model) -> None:
    # Many small passes: features_pass_tokens bounds each one.
    engine = Engine(tiny_model, ServiceLimits(features_pass_tokens=64, features_batch=2))
    try:
        prompt = tiny_model.tokenizer("Rate these")["input_ids"]
        responses = [tiny_model.tokenizer("word " * 60)["input_ids"]] * 100
        features = FeatureRequest(layer=2, encoding=FP16, mean=True, mean_entropy=True)
        ticket = engine.submit_features(
            FeaturesJob(prompt, responses, features), deadline=time.monotonic() + 0.2
        )
        started = time.monotonic()
        events = list(ticket.events())
        ticket.release()
        assert isinstance(events[-1], StreamEnd)
        assert events[-1].details == "deadline exceeded"
        assert time.monotonic() - started < 0.2 + 1.0
        quick = _job(tiny_model, "still there?", k=1, tokens=2)
        assert isinstance(_collect(engine.submit_generate(quick))[2], Done)
    finally:
        engine.close()


def test_work_beyond_a_limit_is_refused_at_once_naming_it(tiny_model) -> None:
    engine = Engine(
        tiny_model,
        ServiceLimits(max_request_tokens=500, max_features_tokens=10),
        EngineConfig(
            max_batch_requests=1, max_queued_requests=1, max_batch_rows=8, max_buffered_bytes=1
        ),
    )
    try:
        with pytest.raises(Overloaded, match="max_request_tokens"):
            engine.submit_generate(_job(tiny_model, "hi", k=8, tokens=70))
        with pytest.raises(Overloaded, match="max_batch_rows"):
            engine.submit_generate(_job(tiny_model, "hi", k=9, tokens=2))
        features = FeatureRequest(layer=2, encoding=FP16)
        with pytest.raises(Overloaded, match="max_features_tokens"):
            engine.submit_features(FeaturesJob([1, 2], [[3] * 11], features))
        # Per-token features nobody reads: the request holds its place until cancelled.
        holding = _job(tiny_model, "hi", k=2, tokens=40)
        running = engine.submit_generate(
            GenerateJob(
                holding.prompt_ids, holding.sampling, holding.features, TokenRequest((1,), 0, FP16)
            )
        )
        started = time.monotonic() + 10
        while engine.queued and time.monotonic() < started:  # the engine takes it up
            time.sleep(0.001)
        queued = engine.submit_generate(_job(tiny_model, "hi", k=2, tokens=40))
        with pytest.raises(Overloaded, match="max_queued_requests"):
            engine.submit_generate(_job(tiny_model, "hi", k=1, tokens=2))
        for ticket in (running, queued):
            ticket.cancel()
            ticket.release()
        assert engine.wait_idle(10)
    finally:
        engine.close()


def test_one_request_at_a_time_when_the_batch_holds_one(tiny_model) -> None:
    engine = Engine(tiny_model, config=EngineConfig(max_batch_requests=1))
    try:
        jobs = [_job(tiny_model, f"prompt {i}", k=2, tokens=6, seed=i) for i in range(3)]
        tickets = [engine.submit_generate(job) for job in jobs]
        peak = 0
        while any(not t.outbox.closed for t in tickets):
            peak = max(peak, len(engine._decoding))
            time.sleep(0.001)
        assert peak <= 1
        assert all(isinstance(_collect(t)[2], Done) for t in tickets)
    finally:
        engine.close()


def test_a_slow_reader_stops_its_own_work_not_the_others(tiny_model) -> None:
    engine = Engine(tiny_model, config=EngineConfig(max_buffered_bytes=1, stall_seconds=60))
    try:
        heavy = _job(tiny_model, "heavy", k=8, tokens=30)
        heavy = GenerateJob(
            heavy.prompt_ids,
            heavy.sampling,
            heavy.features,
            TokenRequest((1, 2, 3, 4), 0, FP16),
        )
        unread = engine.submit_generate(heavy)  # nobody reads it
        time.sleep(0.5)
        quick = _collect(engine.submit_generate(_job(tiny_model, "quick", k=2, tokens=4)))
        assert isinstance(quick[2], Done)
        # The unread request's per-token passes wait for room: none has run past the bound.
        pending = [e for e in list(unread.outbox._events) if type(e[0]).__name__ == "TokenValues"]
        assert len(pending) <= 1
        unread.cancel()
        unread.release()
        assert engine.wait_idle(10)
    finally:
        engine.close()


@contextlib.contextmanager
def _hooked(model, hook, *, kwargs: bool = False, after: bool = False) -> Iterator[None]:
    """Runs `hook` on every pass of the model's decoder (before it, or after it with
    `after`) inside the block: how these tests make a computation fail or stall in a
    real model."""
    decoder = model.model.model
    if after:
        handle = decoder.register_forward_hook(hook, with_kwargs=True)
    else:
        handle = decoder.register_forward_pre_hook(hook, with_kwargs=kwargs)
    try:
        yield
    finally:
        handle.remove()


def test_a_tiny_temperature_beside_an_innocent_request_harms_neither(engine, tiny_model) -> None:
    innocent = _job(tiny_model, "an innocent request", k=4, tokens=10, seed=21)
    alone = _collect(engine.submit_generate(innocent))[1]
    tiny = _job(tiny_model, "a tiny temperature", k=3, tokens=10, seed=5, temperature=1e-38)
    greedy = _collect(
        engine.submit_generate(
            dataclasses.replace(tiny, sampling=dataclasses.replace(tiny.sampling, temperature=0.0))
        )
    )[1]
    tickets = [engine.submit_generate(tiny), engine.submit_generate(innocent)]
    (_, cold, cold_end), (_, busy, busy_end) = (_collect(t) for t in tickets)
    assert isinstance(cold_end, Done) and isinstance(busy_end, Done), (cold_end, busy_end)
    _assert_same(alone, busy)
    # A temperature that small is greedy decoding, row after row.
    assert [c.token_ids for c in cold.values()] == [greedy[0].token_ids] * 3
    assert engine.wait_idle(5) and engine.admitted == 0


def test_a_request_the_model_fails_on_fails_alone(engine, tiny_model) -> None:
    # NaN logits for one prompt (recognised by its length): its first draw fails.
    culprit = _job(tiny_model, "poison " * 9, k=2, tokens=8, seed=1)
    innocent = _job(tiny_model, "fine", k=3, tokens=8, seed=2)
    alone = _collect(engine.submit_generate(innocent))[1]
    poisoned = len(culprit.prompt_ids)

    def nan_states(module, args, kwargs, output):
        if kwargs["input_ids"].shape[1] == poisoned:
            output.last_hidden_state.fill_(float("nan"))

    with _hooked(tiny_model, nan_states, after=True):
        tickets = [engine.submit_generate(culprit), engine.submit_generate(innocent)]
        (_, _, failed), (_, served, done) = (_collect(t) for t in tickets)
    assert isinstance(failed, StreamEnd) and failed.code == grpc.StatusCode.INTERNAL, failed
    assert "not finite" in failed.details or "not a distribution" in failed.details
    assert isinstance(done, Done)
    _assert_same(alone, served)
    assert engine.wait_idle(5) and engine.admitted == 0


def test_a_shared_decode_step_that_fails_is_retried_without_the_request_that_broke_it(
    engine, tiny_model, caplog
) -> None:
    # The model raises on any pass that feeds a position past 100: only the long
    # prompt's rows get there, but in a shared step everyone's pass fails.
    culprit = _job(tiny_model, "a long prompt, " * 30, k=2, tokens=10, seed=1)
    assert len(culprit.prompt_ids) > 95
    innocent = _job(tiny_model, "short", k=3, tokens=30, seed=2)
    alone = _collect(engine.submit_generate(innocent))[1]

    def too_far(module, args, kwargs):
        positions = kwargs.get("position_ids")
        if positions is not None and positions.shape[1] == 1 and int(positions.max()) > 100:
            raise RuntimeError("position out of range (injected)")

    with _hooked(tiny_model, too_far, kwargs=True):
        tickets = [engine.submit_generate(innocent), engine.submit_generate(culprit)]
        (_, served, done), (_, _, failed) = (_collect(t) for t in tickets)
    assert isinstance(failed, StreamEnd) and failed.code == grpc.StatusCode.INTERNAL, failed
    assert "injected" in failed.details
    assert isinstance(done, Done), done
    _assert_same(alone, served)
    assert any("stepping each alone" in r.getMessage() for r in caplog.records)


def test_a_long_response_features_call_past_its_deadline_stops_within_a_piece(tiny_model) -> None:
    # One response far longer than a Features pass: it is fed a slice at a time.
    engine = Engine(tiny_model, ServiceLimits(features_pass_tokens=16))
    try:
        prompt = tiny_model.tokenizer("Rate this")["input_ids"]
        long = (tiny_model.tokenizer("word " * 200)["input_ids"] * 8)[:220]
        features = FeatureRequest(layer=2, encoding=FP16, mean=True, mean_entropy=True)
        job = FeaturesJob(prompt, [long], features)
        ticket = engine.submit_features(job)
        done = list(ticket.events())
        ticket.release()
        _, pooled = pool_responses(tiny_model, prompt, [long], [2], mean_entropy=True)
        assert isinstance(done[0], FeaturesDone)  # sliced, it is what one pass gives
        np.testing.assert_allclose(done[0].pooled[0].last, pooled[0].last, atol=1e-4)
        np.testing.assert_allclose(done[0].pooled[0].mean, pooled[0].mean, atol=1e-4)
        assert done[0].pooled[0].mean_entropy == pytest.approx(pooled[0].mean_entropy, abs=1e-4)

        slow = threading.Event()

        def crawl(module, args):  # every pass takes 50 ms: the call outlives its deadline
            if not slow.is_set():
                time.sleep(0.05)

        with _hooked(tiny_model, crawl):
            started = time.monotonic()
            ticket = engine.submit_features(job, deadline=started + 0.3)
            events = list(ticket.events())
            ticket.release()
            ended = time.monotonic() - started
            assert isinstance(events[-1], StreamEnd) and events[-1].details == "deadline exceeded"
            assert ended < 0.3 + 0.5  # the stream ends at the deadline, not after the work
            assert engine.wait_idle(1.0)  # and the engine drops it within a piece
        quick = _job(tiny_model, "still there?", k=1, tokens=2)
        assert isinstance(_collect(engine.submit_generate(quick))[2], Done)
    finally:
        engine.close()


def test_a_long_prompt_is_prefilled_in_pieces_while_others_keep_decoding(tiny_model) -> None:
    endless = dataclasses.replace(tiny_model, eos_token_ids=frozenset())  # rows never end early
    engine = Engine(endless, config=EngineConfig(turn_tokens=8))
    passes: list[tuple[int, int]] = []  # (rows, tokens) of every pass, in order

    def record(module, args, kwargs):
        passes.append(tuple(kwargs["input_ids"].shape))

    try:
        running = _job(endless, "keep going", k=2, tokens=60, seed=4)
        long = _job(endless, "a long prompt, " * 12, k=2, tokens=4, seed=5)
        reference = [
            {
                c.index: c
                for c in sample(endless, j.prompt_ids, j.sampling, 2, entropy=True)
                if isinstance(c, SampledCandidate)
            }
            for j in (running, long)
        ]
        with _hooked(endless, record, kwargs=True):
            first = engine.submit_generate(running)
            assert isinstance(next(first.events()), InstructionReady)
            second = engine.submit_generate(long)
            (_, got_running, end_running), (_, got_long, end_long) = (
                _collect(first),
                _collect(second),
            )
        assert isinstance(end_running, Done) and isinstance(end_long, Done)
        _assert_same(reference[0], got_running)
        _assert_same(reference[1], got_long)  # pieces of 8 tokens: the same as one pass
        # The long prompt went in as pieces of 8, with decode steps between them.
        pieces = [i for i, shape in enumerate(passes) if shape == (1, 8)]
        assert len(pieces) >= len(long.prompt_ids) // 8 - 1
        between = passes[pieces[0] : pieces[-1]]
        assert sum(rows == 2 and tokens == 1 for rows, tokens in between) >= len(pieces) - 1
    finally:
        engine.close()


def test_a_cancelled_or_expired_request_gives_its_slot_back_at_once(tiny_model) -> None:
    config = EngineConfig(max_batch_requests=1, max_queued_requests=1)
    engine = Engine(tiny_model, config=config)
    gate = threading.Event()

    def hold(module, args):  # the engine is stuck inside a pass until the gate opens
        gate.wait(30)

    try:
        with _hooked(tiny_model, hold):
            busy = engine.submit_generate(_job(tiny_model, "busy", k=1, tokens=3))
            time.sleep(0.2)
            queued = engine.submit_generate(_job(tiny_model, "queued", k=1, tokens=3))
            with pytest.raises(Overloaded):
                engine.submit_generate(_job(tiny_model, "one too many", k=1, tokens=3))
            started = time.monotonic()
            queued.cancel()
            assert isinstance(list(queued.events())[-1], StreamEnd)
            queued.release()
            expiring = engine.submit_generate(
                _job(tiny_model, "expiring", k=1, tokens=3), deadline=time.monotonic() + 0.2
            )
            assert list(expiring.events())[-1].details == "deadline exceeded"
            expiring.release()
            assert time.monotonic() - started < 0.2 + 1.0  # not when the engine moves on
            busy.cancel()
            busy.release()
            assert engine.admitted == 0  # while the engine is still inside its pass
            gate.set()
        assert engine.wait_idle(10)
        assert isinstance(
            _collect(engine.submit_generate(_job(tiny_model, "next", k=1, tokens=2)))[2], Done
        )
    finally:
        gate.set()
        engine.close()


def test_a_stuck_engine_reports_itself_and_lets_its_requests_go(tiny_model) -> None:
    engine = Engine(tiny_model, config=EngineConfig(stuck_seconds=0.3))
    health: list[bool] = []
    engine.on_health(health.append)
    gate = threading.Event()

    def hold(module, args):
        gate.wait(10)

    try:
        with _hooked(tiny_model, hold):
            stuck = engine.submit_generate(_job(tiny_model, "stuck", k=1, tokens=3))
            end = list(stuck.events())[-1]
            stuck.release()
            assert isinstance(end, StreamEnd) and end.code == grpc.StatusCode.UNAVAILABLE
            assert health == [False] and not engine.serving
            with pytest.raises(Overloaded, match="stuck_seconds") as refused:
                engine.submit_generate(_job(tiny_model, "refused", k=1, tokens=3))
            assert refused.value.unavailable
            gate.set()
            deadline = time.monotonic() + 10
            while not engine.serving and time.monotonic() < deadline:
                time.sleep(0.02)
        assert health == [False, True]
        assert isinstance(
            _collect(engine.submit_generate(_job(tiny_model, "back", k=1, tokens=2)))[2], Done
        )
    finally:
        gate.set()
        engine.close()
