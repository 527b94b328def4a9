"""One loop owns the model: every request's work, interleaved at token boundaries.

gRPC threads never touch the model. They `submit` a validated job and get
a `Ticket`; the engine thread does the work and puts results into the
ticket's `Outbox`, from which the gRPC thread streams them. Each turn of
the loop:

1. drops work whose client cancelled, whose deadline passed, or whose
   reader was found stuck (the monitor thread, below, decides those);
2. admits waiting requests (FIFO) while their rows fit. Generate
   newcomers are gathered for up to `_MAX_JOIN_WAIT_STEPS` steps while a
   batch is decoding, so that one cache rebuild serves several (joining
   each at once halved the tokens/s at 50 clients in a P7 run);
3. spends the turn's budget of `turn_tokens` tokens on work outside the
   decode batch, round robin over the requests that have some, each piece
   one forward pass of at most `turn_tokens` tokens: a piece of a prompt's
   prefill (the KV cache carried from piece to piece; when the last piece
   is in, the request's K rows draw their first tokens and join the batch,
   taking over rows others have left: `central.batch`), a slice of a
   Features call's responses, or a pass of per-token features for a
   finished Generate. Work for a client whose outbox is full waits
   (backpressure);
4. runs one decode step over every row in the batch, whatever request it
   belongs to, and hands finished candidates to their requests.

So running requests produce a token at least every decode step plus about
`turn_tokens` tokens of other work, however long a prompt or a response
is, and cancellation is seen between pieces.

One request cannot hurt another. Whatever fails while computing for one
request (its prefill, its draw, its Features or per-token passes) fails
that request alone, with INTERNAL naming the error. A decode step is
shared: if it fails, each request's rows are stepped again alone, and only
those that fail alone fail. A `monitor` thread, independent of the engine
thread, ends a request's stream the moment its deadline passes, its client
cancels or stops reading, so its admission slot comes back at once even
while the engine is inside a long computation; and if the engine makes no
progress for `stuck_seconds` it reports itself unhealthy (health checks
say NOT_SERVING), fails what it holds with UNAVAILABLE and refuses new work
until it moves again.

Each request samples with its own seeded generator, in its own row order,
exactly as `sampler.sample` does alone, so a seeded request gets the same
tokens whatever else shares the batch; its features are computed in the
same pass as its tokens, as before.

Device: the model, the batch's KV buffers, every request's generator and
running vectors live on the model's device (`central.device`). A decode
step copies to the host what the wire needs and nothing else, for all
requests at once: the tokens every row drew (with their log-probabilities
and entropies), then the vectors of the rows that finished, if any. A
prefill copies its request's instruction feature; a Features call, its
pooled vectors once per group of responses.

Memory: the decode batch holds at most `max_batch_rows` rows; a pass
outside it feeds at most `turn_tokens` tokens (and a Features pass at most
`features_pass_tokens`), so its activations are bounded by that times the
hidden size per captured layer, plus, with mean entropy or logits-only
token features, the logits: ``tokens x vocab x 4`` bytes (50 MB at 256
tokens and SmolLM2's 49k vocabulary). Results wait in outboxes of at most
`max_buffered_bytes` (plus one unit) per request.
"""

from __future__ import annotations

import itertools
import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import grpc
import numpy as np
import torch

from ._errors import LimitError
from .batch import DecodeBatch, Joining
from .config import EngineConfig, ServiceLimits
from .decoding import full_cache
from .device import tensor_on, to_host
from .features import EMBEDDING_LAYER, FeatureRequest
from .forward import Forward, Pass, PrefilledPrompt
from .model import LoadedModel
from .outbox import Outbox, StreamEnd
from .pooling import ChunkPooling, Pooled
from .sampler import (
    CandidateRows,
    Draw,
    EosState,
    Finishing,
    SampledCandidate,
    empty_response_state,
    ended_at_once,
    finish,
)
from .token_features import token_feature_passes
from .validation import FeaturesJob, GenerateJob

__all__ = [
    "Done",
    "Engine",
    "FeaturesDone",
    "InstructionReady",
    "Overloaded",
    "Ticket",
    "TokenValues",
]

log = logging.getLogger(__name__)


class Overloaded(LimitError):
    """The engine cannot take this request now (or ever, for its size); names the limit.

    `unavailable` marks the refusals a client should take elsewhere (UNAVAILABLE
    rather than RESOURCE_EXHAUSTED): the server is draining, or its engine is stuck.
    """

    def __init__(self, limit: str, message: str, *, unavailable: bool = False) -> None:
        super().__init__(limit, message)
        self.unavailable = unavailable


# ------------------------------------------------------------------ events


@dataclass(frozen=True)
class InstructionReady:
    """The prompt's own feature (Generate's first message)."""

    feature: np.ndarray  # (hidden,) float32 at the request's feature layer
    prompt_tokens: int


@dataclass(frozen=True)
class TokenValues:
    """One candidate's per-token features (Generate with token features)."""

    index: int  # candidate index
    values: np.ndarray  # (tokens, width) float32


@dataclass(frozen=True)
class Done:
    """A Generate finished: every candidate (and token feature) has been put."""

    generated_tokens: int


@dataclass(frozen=True)
class FeaturesDone:
    """A Features request's result."""

    instruction: np.ndarray  # (hidden,) float32
    pooled: list[Pooled]  # one per response, in request order


# ------------------------------------------------------------------ tickets


_DEADLINE = StreamEnd(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded")
_CANCELLED = StreamEnd(grpc.StatusCode.CANCELLED, "cancelled")


class Ticket:
    """A submitted request, as its gRPC thread sees it."""

    def __init__(self, outbox: Outbox, engine: Engine, task: _Task) -> None:
        self.outbox = outbox
        self._engine = engine
        self._task = task

    def events(self) -> Iterator[object]:
        """Each event as the engine puts it; ends with a `StreamEnd` if the work did not
        finish. Past the request's deadline it ends at once, whatever the engine is doing."""
        while True:
            deadline = self._task.deadline
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                event = self.outbox.take(timeout)
            except TimeoutError:
                self._engine._cancel(self._task, _DEADLINE)
                continue
            if event is None:
                return
            self.outbox.sending(True)
            yield event
            self.outbox.sending(False)
            if isinstance(event, StreamEnd):
                return

    def cancel(self) -> None:
        """Abandons the work (the client went away); safe from any thread, idempotent."""
        self._engine._cancel(self._task, None)

    def release(self) -> None:
        """The gRPC thread is done with this request (it no longer counts as admitted)."""
        self._engine._release(self._task)

    def on_stall(self, callback: Callable[[], object]) -> None:
        """`callback()` runs (on the monitor thread) if the client stalls and is cancelled."""
        self._task.on_stall = callback


@dataclass(eq=False)
class _Task:
    """Engine-side state of one request."""

    id: int
    outbox: Outbox
    deadline: float | None  # monotonic
    cancelled: StreamEnd | None = None  # set (from any thread) when the work is to stop
    on_stall: Callable[[], object] | None = None  # run when the client is cancelled for stalling
    waited_steps: int = 0  # engine turns spent waiting to start

    @property
    def reserved_rows(self) -> int:
        """Batch rows kept for the request until it joins the batch."""
        return 0


@dataclass(eq=False, kw_only=True)
class _GenerateTask(_Task):
    job: GenerateJob
    rows: CandidateRows | None = None  # None until the prompt is prefilled
    slots: list[int] = field(default_factory=list)  # batch slot of each live row, in row order
    generator: torch.Generator | None = None
    final: bool = False  # the rows' newest tokens are their last: one more feed, then done
    responses: dict[int, list[int]] = field(default_factory=dict)
    joining: Joining | None = None  # prefilled, waiting to join the batch

    @property
    def reserved_rows(self) -> int:
        if self.rows is None:
            return self.job.sampling.k
        return 0 if self.joining is None else self.joining.rows


@dataclass(eq=False, kw_only=True)
class _FeaturesTask(_Task):
    job: FeaturesJob


Unit = Iterator[int]  # work outside the batch: each step is one pass, yielding its tokens


# ------------------------------------------------------------------ engine


class Engine:
    """Owns the model; serves Generate and Features work from a single thread."""

    def __init__(
        self,
        loaded: LoadedModel,
        limits: ServiceLimits | None = None,
        config: EngineConfig | None = None,
    ) -> None:
        self.loaded = loaded
        self.limits = limits or ServiceLimits()
        self.config = config or EngineConfig()
        self._batch = DecodeBatch(loaded)
        self._wake = threading.Condition()
        self._waiting: deque[_Task] = deque()  # submitted, not started (FIFO)
        self._side: deque[tuple[_Task, Unit]] = deque()  # work outside the batch
        self._joining: list[_GenerateTask] = []  # prefilled this turn, about to join
        self._decoding: list[_GenerateTask] = []  # rows in the batch
        self._admitted: set[_Task] = set()  # every ticket not yet released
        self._ids = itertools.count()
        self._accepting = True
        self._closing = False
        self._forwards: dict[tuple[int, ...], Forward] = {}
        # Progress, written by the engine thread and read by the monitor.
        self._busy = False  # inside a turn (not waiting for work)
        self._progress_at = time.monotonic()  # when the engine last finished a piece of work
        self._stuck = False
        self._health_listeners: list[Callable[[bool], object]] = []
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="central-engine", daemon=True)
        self._monitor = threading.Thread(
            target=self._watch, name="central-engine-monitor", daemon=True
        )
        self._thread.start()
        self._monitor.start()

    # -------------------------------------------------------------- gRPC side

    def submit_generate(self, job: GenerateJob, deadline: float | None = None) -> Ticket:
        """Queues a Generate; `Overloaded` at once if a limit says no."""
        sampling = job.sampling
        work = len(job.prompt_ids) + sampling.k * sampling.max_new_tokens
        if work > self.limits.max_request_tokens:
            raise Overloaded(
                "max_request_tokens",
                f"the request needs {work} tokens of work (prompt {len(job.prompt_ids)} + "
                f"k {sampling.k} x max_new_tokens {sampling.max_new_tokens}), "
                f"at most {self.limits.max_request_tokens}",
            )
        if sampling.k > self.config.max_batch_rows:
            raise Overloaded(
                "max_batch_rows", f"k {sampling.k} exceeds the {self.config.max_batch_rows} rows"
            )
        task = _GenerateTask(next(self._ids), self._outbox(), deadline, job=job)
        return self._submit(task)

    def submit_features(self, job: FeaturesJob, deadline: float | None = None) -> Ticket:
        """Queues a Features request; `Overloaded` at once if a limit says no."""
        tokens = sum(len(r) or 1 for r in job.responses)
        if tokens > self.limits.max_features_tokens:
            raise Overloaded(
                "max_features_tokens",
                f"the responses hold {tokens} tokens, at most {self.limits.max_features_tokens}",
            )
        task = _FeaturesTask(next(self._ids), self._outbox(), deadline, job=job)
        return self._submit(task)

    def stop_admitting(self) -> None:
        """New submissions are refused from now on (shutting down)."""
        with self._wake:
            self._accepting = False

    def wait_idle(self, timeout: float) -> bool:
        """Waits until every admitted request is released and its work has left the
        engine (no rows in the batch, nothing queued or on the side); False on timeout."""
        end = time.monotonic() + timeout
        with self._wake:
            while self._admitted or self._has_work():
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._wake.wait(min(left, 0.1))
        return True

    def close(self, timeout: float = 10.0) -> bool:
        """Cancels everything still running and stops the engine; False if its thread is
        still inside a computation after `timeout` seconds (it stops after that piece)."""
        with self._wake:
            self._accepting = False
            self._closing = True
            for task in list(self._admitted):
                self._end(
                    task, StreamEnd(grpc.StatusCode.UNAVAILABLE, "the server is shutting down")
                )
            self._wake.notify_all()
        self._stopped.set()
        self._thread.join(timeout=timeout)
        self._monitor.join(timeout=1.0)
        return not self._thread.is_alive()

    def on_health(self, listener: Callable[[bool], object]) -> None:
        """`listener(serving)` runs (on the monitor thread) when the engine gets stuck
        (False: no progress for `stuck_seconds`) and when it moves again (True)."""
        self._health_listeners.append(listener)

    @property
    def serving(self) -> bool:
        """False while the engine is stuck (see `on_health`)."""
        return not self._stuck

    @property
    def queued(self) -> int:
        """Requests waiting to start."""
        return len(self._waiting)

    @property
    def rows_in_flight(self) -> int:
        """Candidate rows decoding in the batch now."""
        return self._batch.live_rows

    @property
    def admitted(self) -> int:
        """Requests admitted and not yet released (queued, running or streaming out)."""
        return len(self._admitted)

    def _outbox(self) -> Outbox:
        return Outbox(self.config.max_buffered_bytes)

    def _submit(self, task: _Task) -> Ticket:
        cfg = self.config
        with self._wake:
            if not self._accepting:
                raise Overloaded("shutting down", "the server is draining", unavailable=True)
            if self._stuck:
                raise Overloaded(
                    "stuck_seconds",
                    f"the engine has made no progress for over {cfg.stuck_seconds:g} s",
                    unavailable=True,
                )
            capacity = cfg.max_batch_requests + cfg.max_queued_requests
            if len(self._admitted) >= capacity or len(self._waiting) >= cfg.max_queued_requests:
                raise Overloaded(
                    "max_queued_requests",
                    f"{len(self._admitted)} requests are already admitted: at most "
                    f"{cfg.max_batch_requests} running and {cfg.max_queued_requests} queued",
                )
            self._admitted.add(task)
            self._waiting.append(task)
            self._wake.notify_all()
        return Ticket(task.outbox, self, task)

    def _cancel(self, task: _Task, end: StreamEnd | None) -> None:
        """Ends the task's stream now (any thread); the engine drops its work at its next
        turn, and a request still waiting leaves the queue at once."""
        with self._wake:
            if task.cancelled is None:
                task.cancelled = end or _CANCELLED
            task.outbox.close(task.cancelled)  # a stream already complete keeps its events
            if task in self._waiting:
                self._waiting.remove(task)
            self._wake.notify_all()

    def _release(self, task: _Task) -> None:
        with self._wake:
            if task.cancelled is None and not task.outbox.closed:
                task.cancelled = _CANCELLED
            self._admitted.discard(task)
            if task in self._waiting:
                self._waiting.remove(task)
            self._wake.notify_all()

    def _end(self, task: _Task, end: StreamEnd | None) -> None:
        """Closes the task's stream (called with `_wake` held or on the engine thread)."""
        if end is not None and task.cancelled is None:
            task.cancelled = end
        task.outbox.close(end)

    # -------------------------------------------------------------- monitor thread

    def _watch(self) -> None:
        """Deadlines, stuck readers and a stuck engine, checked apart from the engine
        thread, so that a request is let go at once however long the engine's turn."""
        while not self._stopped.wait(_WATCH_SECONDS):
            now = time.monotonic()
            with self._wake:
                admitted = list(self._admitted)
            for task in admitted:
                if task.deadline is not None and now > task.deadline:
                    self._cancel(task, _DEADLINE)
                self._check_reader(task, now)
            self._check_progress(now)

    def _check_reader(self, task: _Task, now: float) -> None:
        stuck = task.outbox.stuck_for(now)
        limit = self.config.stall_seconds
        if stuck > limit and task.cancelled is None:
            log.warning(
                "request %d: the client has not read for %.0f s; cancelling it", task.id, stuck
            )
            self._cancel(
                task,
                StreamEnd(grpc.StatusCode.CANCELLED, f"the client did not read for {limit:.0f} s"),
            )
            if task.on_stall is not None:
                task.on_stall()

    def _check_progress(self, now: float) -> None:
        limit = self.config.stuck_seconds
        stuck = self._busy and now - self._progress_at > limit
        if stuck == self._stuck:
            return
        self._stuck = stuck
        if stuck:
            log.error("the engine has made no progress for %.0f s: NOT_SERVING", limit)
            end = StreamEnd(
                grpc.StatusCode.UNAVAILABLE,
                f"the engine has made no progress for over {limit:g} s",
            )
            with self._wake:
                admitted = list(self._admitted)
            for task in admitted:
                self._cancel(task, end)
        else:
            log.warning("the engine is making progress again: SERVING")
        for listener in self._health_listeners:
            listener(not stuck)

    # -------------------------------------------------------------- engine thread

    def _run(self) -> None:
        with torch.inference_mode():
            while self._next_turn():
                try:
                    if not self._turn():
                        self._rest()
                except Exception as error:  # a bug in the engine's own bookkeeping
                    log.exception("engine turn failed outside any one request")
                    self._fail_in_flight(error)
        self._busy = False

    def _has_work(self) -> bool:
        return bool(self._waiting or self._side or self._joining or self._decoding)

    def _next_turn(self) -> bool:
        """Waits for work; False when closing."""
        with self._wake:
            self._busy = False
            while not self._closing and not self._has_work():
                self._wake.wait()
            self._busy, self._progress_at = True, time.monotonic()
            return not self._closing

    def _rest(self) -> None:
        """A turn that found nothing it could do (readers full): wait a little."""
        with self._wake:
            self._busy = False
            self._wake.wait(0.01)

    def _turn(self) -> bool:
        """One turn; False if it did nothing (every piece of work waits for a reader)."""
        self._reap()
        self._admit()
        worked = self._other_work()
        self._join()
        stepped = self._decode_step()
        self._batch.compact()
        return worked or stepped

    def _progressed(self) -> None:
        self._progress_at = time.monotonic()

    def _fail(self, task: _Task, error: Exception) -> None:
        """`task` alone fails (INTERNAL, naming the error); its work leaves the engine."""
        log.error("request %d failed: %s: %s", task.id, type(error).__name__, error, exc_info=error)
        end = StreamEnd(grpc.StatusCode.INTERNAL, f"the engine failed on this request: {error}")
        with self._wake:
            self._end(task, end)
            self._forget(task)

    def _fail_in_flight(self, error: Exception) -> None:
        """Fails every request the engine has started (those still queued wait on)."""
        end = StreamEnd(grpc.StatusCode.INTERNAL, f"the engine failed: {error}")
        with self._wake:
            waiting = set(self._waiting)
            for task in self._admitted | set(self._tasks()):
                if task not in waiting:
                    self._end(task, end)
            self._side.clear()
            self._joining.clear()
            self._decoding.clear()
            self._batch.clear()

    def _tasks(self) -> list[_Task]:
        """Every task with work in the engine, queued or started, once each."""
        return [*self._waiting, *self._started()]

    def _started(self) -> list[_Task]:
        """The tasks started and not finished (on the side, joining, decoding), once each."""
        seen: dict[int, _Task] = {}
        for task in [*(t for t, _ in self._side), *self._joining, *self._decoding]:
            seen.setdefault(task.id, task)
        return list(seen.values())

    def _forget(self, task: _Task) -> None:
        """Removes the task's work from the engine: its rows leave the batch."""
        if task in self._waiting:
            self._waiting.remove(task)
        self._side = deque((t, u) for t, u in self._side if t is not task)
        self._joining = [t for t in self._joining if t is not task]
        if isinstance(task, _GenerateTask) and task in self._decoding:
            self._decoding.remove(task)
            self._batch.finish(task.slots)
            task.slots = []

    # ---- 1. cancellations, deadlines, stuck readers

    def _reap(self) -> None:
        now = time.monotonic()
        with self._wake:
            for task in self._tasks():
                if task.cancelled is None and task.deadline is not None and now > task.deadline:
                    task.cancelled = _DEADLINE
                if task.cancelled is not None:
                    self._end(task, task.cancelled)
                    self._forget(task)

    # ---- 2. admission

    def _admit(self) -> None:
        """Starts waiting requests, oldest first, while they fit."""
        with self._wake:  # gRPC threads add to and take from the queue meanwhile
            while self._waiting and self._should_join():
                task = self._waiting[0]
                started = self._started()
                if len(started) >= self.config.max_batch_requests:
                    break
                unit: Unit
                if isinstance(task, _GenerateTask):
                    rows = self._batch.live_rows + sum(t.reserved_rows for t in started)
                    if rows and rows + task.job.sampling.k > self.config.max_batch_rows:
                        break
                    unit = self._prefill_unit(task)
                else:
                    assert isinstance(task, _FeaturesTask)
                    unit = self._features_unit(task)
                self._waiting.popleft()
                self._side.append((task, unit))
            for waiting in self._waiting:
                waiting.waited_steps += 1

    def _should_join(self) -> bool:
        """Start the head of the queue now, or let Generate newcomers gather so that one
        cache rebuild serves several."""
        live, head = self._batch.live_rows, self._waiting[0]
        if not live or not isinstance(head, _GenerateTask):
            return True
        waiting_rows = sum(t.job.sampling.k for t in self._waiting if isinstance(t, _GenerateTask))
        return waiting_rows * 8 >= live or head.waited_steps >= _MAX_JOIN_WAIT_STEPS

    # ---- 3. work outside the batch: prefills, Features passes, per-token features

    def _other_work(self) -> bool:
        """Pieces of side work, round robin, until the turn's token budget is spent;
        False if none could run."""
        spent, waited, worked = 0, 0, False
        while self._side and spent < self.config.turn_tokens and waited < len(self._side):
            if self._closing:
                break
            task, unit = self._side[0]
            self._side.rotate(-1)
            if not task.outbox.has_room():
                waited += 1
                continue
            waited, worked = 0, True
            try:
                spent += next(unit)
            except StopIteration:
                with self._wake:
                    self._side = deque((t, u) for t, u in self._side if u is not unit)
            except Exception as error:
                self._fail(task, error)
            self._progressed()
        return worked

    def _prefill_unit(self, task: _GenerateTask) -> Unit:
        """Prefills the prompt a piece at a time, then draws each row's first token; the
        rows that go on wait in `_joining` for this turn's join."""
        job, sampling = task.job, task.job.sampling
        layer = job.features.layer
        forward = self._forward(job.features.layers)
        device = self.loaded.device
        cache = full_cache(self.loaded.model)
        ids, piece = job.prompt_ids, self.config.turn_tokens
        for start in range(0, len(ids), piece):
            prefill = forward(tensor_on([ids[start : start + piece]], device), cache)
            if start + piece < len(ids):
                yield piece
        instruction = to_host(prefill.hidden[layer][0, -1])
        task.outbox.put(InstructionReady(instruction, len(ids)), instruction.nbytes)
        seed = sampling.seed if sampling.seed is not None else secrets.randbits(63)
        task.generator = torch.Generator(device=device).manual_seed(seed)
        embedding = job.features.embedding_mean
        rows = CandidateRows(sampling.k, instruction.shape[0], embedding, device)
        assert prefill.logits is not None
        entropy = job.features.mean_entropy
        draw = rows.draw(
            prefill.logits.expand(sampling.k, -1),
            sampling,
            task.generator,
            self.loaded.eos_token_ids,
            entropy,
        )
        at_once: EosState | None = None  # every row that ends here ends at once
        for b, last_entropy in draw.ended:
            row = rows.index[b]
            if at_once is None:
                at_once = empty_response_state(self.loaded, forward, cache, layer)
            candidate = ended_at_once(
                row, rows.logprob[row], at_once, last_entropy if entropy else None
            )
            self._emit(task, candidate)
        keep = draw.keep
        rows.keep(keep)
        task.rows = rows
        if keep:
            task.final = sampling.max_new_tokens <= 1
            task.joining = Joining(cache, len(ids), len(keep), [draw.picked[b] for b in keep])
            self._joining.append(task)
        else:
            self._after_sampling(task)
        yield (len(ids) - 1) % piece + 1

    def _features_unit(self, task: _FeaturesTask) -> Unit:
        """A Features request, one bounded pass a step: the prompt in pieces, then each
        group of responses in slices of columns, the cache carried between them."""
        job = task.job
        layer, entropy = job.features.layer, job.features.mean_entropy
        tokens = min(self.config.turn_tokens, self.limits.features_pass_tokens)
        prompt = PrefilledPrompt(
            self.loaded, job.prompt_ids, job.features.layers, logits=entropy, prefill=False
        )
        while not prompt.ready:
            yield prompt.prefill(tokens)
        instruction = to_host(prompt.hidden[layer])
        pooled: list[Pooled] = []
        groups = _token_budget_groups(
            job.responses, self.limits.features_pass_tokens, self.limits.features_batch
        )
        for group in groups:
            pooling = ChunkPooling(
                len(group),
                layer,
                instruction.shape[0],
                entropy,
                job.features.embedding_mean,
                self.loaded.device,
            )
            for chunk in prompt.chunks(group, columns=max(1, tokens // len(group))):
                pooling.add(chunk)
                yield len(group) * chunk.columns
            pooled.extend(pooling.pooled())
        result = FeaturesDone(instruction, pooled)
        task.outbox.put(result, sum(p.nbytes for p in pooled))
        task.outbox.close()

    def _token_unit(self, task: _GenerateTask) -> Unit:
        """Per-token features of a finished Generate's candidates, one pass a step; a
        candidate's values are put one at a time, each when its reader has room."""
        request = task.job.tokens
        assert request is not None
        order = sorted(task.responses)
        tokens = self.config.turn_tokens
        passes = token_feature_passes(
            self.loaded,
            task.job.prompt_ids,
            [task.responses[i] for i in order],
            [request],
            batch_size=self.limits.token_batch,
            pass_tokens=tokens,
        )
        for finished in passes:
            cost = tokens
            for position, (values,) in finished:
                task.outbox.put(TokenValues(order[position], values), values.nbytes)
                yield cost
                cost = 0
            if cost:
                yield cost
        self._done(task)

    def _join(self) -> None:
        """The requests prefilled this turn join the batch; if that fails, each tries
        alone, and only those that fail alone fail."""
        joining = list(self._joining)
        if not joining:
            return
        try:
            self._join_all(joining)
        except Exception as error:
            if len(joining) == 1:
                self._fail(joining[0], error)
                return
            log.warning(
                "%d requests failed to join the batch (%s); each tries alone", len(joining), error
            )
            for task in joining:
                try:
                    self._join_all([task])
                except Exception as alone:
                    self._fail(task, alone)
        finally:
            # Emptied only once they are in `_decoding` (or failed): a request whose rows
            # are in the batch is always in sight of `wait_idle` and `_reap`.
            self._joining = []

    def _join_all(self, tasks: list[_GenerateTask]) -> None:
        joinings = []
        for task in tasks:
            assert task.joining is not None
            joinings.append(task.joining)
        slots = self._batch.join(joinings)
        for task, task_slots in zip(tasks, slots, strict=True):
            task.slots, task.joining = task_slots, None
            self._decoding.append(task)

    # ---- 4. one decode step

    def _decode_step(self) -> bool:
        if not self._decoding:
            return False
        layers = tuple(sorted({n for t in self._decoding for n in t.job.features.layers}))
        forward = self._forward(layers)
        try:
            out, slots = self._batch.step(forward)
            outputs = self._outputs(out, slots)
        except Exception as error:
            outputs = self._step_each_alone(forward, error)
        self._progressed()
        # What the step sends to the host, each for every request at once: the draws,
        # then the vectors of the rows that finished. A request whose own part fails
        # (its draw, its bookkeeping) fails alone.
        draws = self._record(self._propose(outputs))
        finishing = [_finishing(task, draw) for task, draw in draws]
        still: list[_GenerateTask] = []
        for (task, draw), candidates in zip(draws, finish(finishing), strict=True):
            try:
                for candidate in candidates:
                    self._emit(task, candidate)
                going = self._advance(task, draw)
            except Exception as error:
                self._fail(task, error)
                continue
            if going:
                still.append(task)
        self._decoding = still
        return True

    def _outputs(self, out: Pass, slots: list[int]) -> dict[int, tuple[_Newest, torch.Tensor]]:
        """Each request's part of a shared step, by task id: its rows' newest states and
        their logits, still on the device."""
        assert out.logits is not None
        row_of = {slot: b for b, slot in enumerate(slots)}
        # Every request's rows, request by request: one upload, then slices of it.
        order = tensor_on([row_of[s] for t in self._decoding for s in t.slots], self._batch.device)
        outputs = {}
        at = 0
        for task in self._decoding:
            rows, at = order[at : at + len(task.slots)], at + len(task.slots)
            newest = _newest(out.hidden, task.job.features, rows)
            outputs[task.id] = (newest, out.logits.index_select(0, rows))
        return outputs

    def _propose(
        self, outputs: dict[int, tuple[_Newest, torch.Tensor]]
    ) -> list[tuple[_GenerateTask, torch.Tensor | None]]:
        """Feeds each request its rows' new states and draws their next tokens, on the
        device: per request, `CandidateRows.propose`'s tensor (None in its final step)."""
        proposals: list[tuple[_GenerateTask, torch.Tensor | None]] = []
        for task in list(self._decoding):
            if task.id not in outputs:
                continue  # failed alone
            (newest, embedded), logits = outputs[task.id]
            rows, sampling, features = task.rows, task.job.sampling, task.job.features
            assert rows is not None and task.generator is not None
            try:
                rows.fed(newest, embedded)
                proposal = None
                if not task.final:
                    proposal = rows.propose(logits, sampling, task.generator, features.mean_entropy)
            except Exception as error:
                self._fail(task, error)
                continue
            proposals.append((task, proposal))
        return proposals

    def _record(
        self, proposals: list[tuple[_GenerateTask, torch.Tensor | None]]
    ) -> list[tuple[_GenerateTask, Draw | None]]:
        """Every request's draws, copied to the host at once and recorded in its rows."""
        drawn = [p for _, p in proposals if p is not None]
        host = iter(_split_columns(to_host(torch.cat(drawn, 1)), drawn) if drawn else [])
        draws: list[tuple[_GenerateTask, Draw | None]] = []
        for task, proposal in proposals:
            assert task.rows is not None
            if proposal is None:
                draws.append((task, None))
                continue
            mine = next(host)
            try:
                draws.append((task, task.rows.record(mine, self.loaded.eos_token_ids)))
            except Exception as error:  # a SamplingError: the model's output was broken
                self._fail(task, error)
        return draws

    def _step_each_alone(
        self, forward: Forward, error: Exception
    ) -> dict[int, tuple[_Newest, torch.Tensor]]:
        """After a failed decode step: each request's rows take the step alone; those that
        fail alone fail, the others go on as if the step had succeeded."""
        log.warning(
            "a decode step over %d requests failed (%s: %s); stepping each alone",
            len(self._decoding),
            type(error).__name__,
            error,
        )
        outputs = {}
        for task in list(self._decoding):
            try:
                out = self._batch.step_alone(forward, task.slots)
                assert out.logits is not None
                outputs[task.id] = (_newest(out.hidden, task.job.features), out.logits)
            except Exception as alone:
                self._fail(task, alone)
        self._batch.advance()
        return outputs

    def _advance(self, task: _GenerateTask, draw: Draw | None) -> bool:
        """Moves the task past this step's draw (None: its final step); True while it has
        rows left. Its finished rows' candidates are out already."""
        rows, sampling = task.rows, task.job.sampling
        assert rows is not None
        if draw is None:
            self._batch.finish(task.slots)
            task.slots = []
            self._after_sampling(task)
            return False
        ended = [task.slots[b] for b, _ in draw.ended]
        task.slots = [task.slots[b] for b in draw.keep]
        self._batch.finish(ended)
        rows.keep(draw.keep)
        if not draw.keep:
            self._after_sampling(task)
            return False
        self._batch.feed_next(task.slots, [draw.picked[b] for b in draw.keep])
        task.final = len(rows.tokens[rows.index[0]]) >= sampling.max_new_tokens
        return True

    def _emit(self, task: _GenerateTask, candidate: SampledCandidate) -> None:
        task.responses[candidate.index] = candidate.token_ids
        vectors = (candidate.feature, candidate.mean_feature, candidate.embedding_mean_feature)
        task.outbox.put(candidate, sum(v.nbytes for v in vectors if v is not None))

    def _after_sampling(self, task: _GenerateTask) -> None:
        """Every candidate is out: per-token features next, or the end of the stream."""
        if task.job.tokens is None:
            self._done(task)
            return
        with self._wake:
            self._side.append((task, self._token_unit(task)))

    def _done(self, task: _GenerateTask) -> None:
        generated = sum(len(ids) for ids in task.responses.values())
        task.outbox.put(Done(generated))
        task.outbox.close()

    def _forward(self, layers: tuple[int, ...]) -> Forward:
        forward = self._forwards.get(layers)
        if forward is None:
            forward = self._forwards[layers] = Forward(self.loaded, layers)
        return forward


_MAX_JOIN_WAIT_STEPS = 2  # a newcomer joins after this many steps even alone
_WATCH_SECONDS = 0.1  # how often the monitor looks at deadlines, readers and progress


# A request's rows' newest states from a decode step: (rows, hidden) at its feature
# layer, and (rows, hidden) hidden state 0 when it asked for the embedding mean.
_Newest = tuple[torch.Tensor, torch.Tensor | None]


def _newest(
    hidden: dict[int, torch.Tensor], features: FeatureRequest, rows: torch.Tensor | None = None
) -> _Newest:
    """The newest token's states of batch rows `rows` (an index on the device; all when
    None) that `features` reads."""

    def pick(layer: int) -> torch.Tensor:
        newest = hidden[layer][:, -1]
        return newest if rows is None else newest.index_select(0, rows)

    return pick(features.layer), pick(EMBEDDING_LAYER) if features.embedding_mean else None


def _finishing(task: _GenerateTask, draw: Draw | None) -> Finishing:
    """The rows of `task` that finish with this step's draw (None: its final step, all)."""
    assert task.rows is not None
    entropy = task.job.features.mean_entropy
    if draw is None:  # its final step: every row has its last token fed
        return Finishing(task.rows, list(range(len(task.rows.index))), False, entropy)
    return Finishing(task.rows, [b for b, _ in draw.ended], True, entropy)


def _split_columns(host: np.ndarray, parts: Sequence[torch.Tensor]) -> list[np.ndarray]:
    """`host`, the copy of ``torch.cat(parts, 1)``, cut back into one array per part."""
    bounds = list(itertools.accumulate(part.shape[1] for part in parts))[:-1]
    return np.split(host, bounds, axis=1)


def _token_budget_groups(
    responses: Sequence[list[int]], budget: int, most: int
) -> Iterator[list[list[int]]]:
    """Consecutive responses, at most `most` a group and rows x longest within `budget` tokens."""
    group: list[list[int]] = []
    longest = 0
    for response in responses:
        length = max(len(response), 1)
        if group and (len(group) >= most or (len(group) + 1) * max(longest, length) > budget):
            yield group
            group, longest = [], 0
        group.append(response)
        longest = max(longest, length)
    if group:
        yield group
