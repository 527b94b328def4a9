"""One loop owns the model: every request's work, interleaved at token boundaries.

gRPC threads never touch the model. They `submit` a validated job and get
a `Ticket`; the engine thread does the work and puts results into the
ticket's `Outbox`, from which the gRPC thread streams them. Each turn of
the loop:

1. drops work whose client cancelled, whose deadline passed, or whose
   reader has been stuck in one send for `stall_seconds`;
2. admits waiting Generate requests (FIFO) while their rows fit: each
   prompt is prefilled once on its own, its K rows draw their first tokens
   from that pass, and they join the running batch, taking over rows others
   have left (`central.batch`). Newcomers are gathered for up to
   `_MAX_JOIN_WAIT_STEPS` steps and up to `prefill_tokens_per_step` prompt
   tokens are prefilled in one turn: joining each at once with a 512-token
   prefill budget halved the tokens/s at 50 clients in a P7 run (cause not
   yet found), so newcomers start in groups;
3. runs one unit of side work, round robin: a Features pass over a bounded
   slice of responses, or a pass of per-token features for a finished
   Generate. Work for a client whose outbox is full waits (backpressure);
4. runs one decode step over every row in the batch, whatever request it
   belongs to, and hands finished candidates to their requests.

Each request samples with its own seeded generator, in its own row order,
exactly as `sampler.sample` does alone, so a seeded request gets the same
tokens whatever else shares the batch; its features are computed in the
same pass as its tokens, as before.

Device: the model, the batch's KV buffers, every request's generator and
running vectors live on the model's device (`central.device`). A decode
step copies to the host what the wire needs and nothing else, for all
requests at once: the tokens every row drew (with their log-probabilities
and entropies), then the vectors of the rows that finished, if any. A
prefill copies its request's instruction feature.

Memory: the decode batch holds at most `max_batch_rows` rows; a Features
pass feeds at most `features_pass_tokens` tokens (rows x longest response;
a longer single response goes alone), so its activations are bounded by
that times the hidden size per captured layer, plus, with mean entropy, the
logits: ``features_pass_tokens x vocab x 4`` bytes (200 MB at SmolLM2's
49k vocabulary), computed and reduced per pass. Results wait in outboxes of
at most `max_buffered_bytes` (plus one unit) per request.
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

from ._errors import ServiceError
from .batch import DecodeBatch, Joining
from .config import EngineConfig, ServiceLimits
from .decoding import full_cache
from .device import tensor_on, to_host
from .forward import Forward, Pass, PrefilledPrompt
from .model import LoadedModel
from .outbox import Outbox, StreamEnd
from .pooling import Pooled, pool_response_passes
from .sampler import (
    CandidateRows,
    Draw,
    Finishing,
    SampledCandidate,
    empty_response_state,
    ended_at_once,
    finish,
)
from .token_features import compute_token_features
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


class Overloaded(ServiceError):
    """The engine cannot take this request now (or ever, for its size); names the limit."""

    def __init__(self, limit: str, message: str, *, shutting_down: bool = False) -> None:
        super().__init__(f"{message} ({limit})")
        self.limit = limit
        self.shutting_down = shutting_down


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


class Ticket:
    """A submitted request, as its gRPC thread sees it."""

    def __init__(self, outbox: Outbox, engine: Engine, task: _Task) -> None:
        self.outbox = outbox
        self._engine = engine
        self._task = task

    def events(self) -> Iterator[object]:
        """Each event as the engine puts it; ends with a `StreamEnd` if the work did not finish."""
        while True:
            event = self.outbox.take()
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
        """`callback()` runs (on the engine thread) if the client stalls and is cancelled."""
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
    def rows_wanted(self) -> int:
        """Batch rows the request takes when it starts."""
        return 0


@dataclass(eq=False, kw_only=True)
class _GenerateTask(_Task):
    job: GenerateJob
    rows: CandidateRows | None = None
    slots: list[int] = field(default_factory=list)  # batch slot of each live row, in row order
    generator: torch.Generator | None = None
    final: bool = False  # the rows' newest tokens are their last: one more feed, then done
    responses: dict[int, list[int]] = field(default_factory=dict)

    @property
    def rows_wanted(self) -> int:
        return self.job.sampling.k


@dataclass(eq=False, kw_only=True)
class _FeaturesTask(_Task):
    job: FeaturesJob


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
        self._decoding: list[_GenerateTask] = []  # rows in the batch
        self._side: deque[tuple[_Task, Iterator[None]]] = deque()  # passes outside the batch
        self._admitted: set[_Task] = set()  # every ticket not yet released
        self._ids = itertools.count()
        self._accepting = True
        self._closing = False
        self._forwards: dict[tuple[int, ...], Forward] = {}
        self._thread = threading.Thread(target=self._run, name="central-engine", daemon=True)
        self._thread.start()

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
            while self._admitted or self._waiting or self._decoding or self._side:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._wake.wait(min(left, 0.1))
        return True

    def close(self) -> None:
        """Cancels everything still running and stops the engine thread."""
        with self._wake:
            self._accepting = False
            self._closing = True
            for task in list(self._admitted):
                self._end(
                    task, StreamEnd(grpc.StatusCode.UNAVAILABLE, "the server is shutting down")
                )
            self._wake.notify_all()
        self._thread.join(timeout=10)

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
                raise Overloaded("shutting down", "the server is draining", shutting_down=True)
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
        with self._wake:
            if task.cancelled is None:
                task.cancelled = end or StreamEnd(grpc.StatusCode.CANCELLED, "cancelled")
            self._wake.notify_all()

    def _release(self, task: _Task) -> None:
        with self._wake:
            if task.cancelled is None and not task.outbox.closed:
                task.cancelled = StreamEnd(grpc.StatusCode.CANCELLED, "cancelled")
            self._admitted.discard(task)
            self._wake.notify_all()

    def _end(self, task: _Task, end: StreamEnd | None) -> None:
        """Closes the task's stream (called with `_wake` held or on the engine thread)."""
        if end is not None and task.cancelled is None:
            task.cancelled = end
        task.outbox.close(end)

    # -------------------------------------------------------------- engine thread

    def _run(self) -> None:
        with torch.inference_mode():
            while self._next_turn():
                try:
                    self._turn()
                except Exception as error:  # a bug or an exhausted machine: fail, keep serving
                    log.exception("engine turn failed; failing the requests in it")
                    self._fail_everything(error)

    def _next_turn(self) -> bool:
        """Waits for work; False when closing."""
        with self._wake:
            while not self._closing and not (self._waiting or self._decoding or self._side):
                # Wake now and then while tickets are open, to notice stuck readers.
                self._wake.wait(0.25 if self._admitted else None)
                if self._admitted:
                    self._reap_stalled()
            return not self._closing

    def _turn(self) -> None:
        self._reap()
        self._admit()
        self._side_unit()
        self._decode_step()
        self._batch.compact()

    def _fail_everything(self, error: Exception) -> None:
        end = StreamEnd(grpc.StatusCode.INTERNAL, f"the engine failed: {error}")
        with self._wake:
            for task in [*self._waiting, *self._decoding, *(t for t, _ in self._side)]:
                self._end(task, end)
            self._waiting.clear()
            self._decoding.clear()
            self._side.clear()
            self._batch.clear()

    # ---- 1. cancellations, deadlines, stuck readers

    def _reap(self) -> None:
        now = time.monotonic()
        self._reap_stalled()
        with self._wake:
            for task in [*self._decoding, *self._waiting, *(t for t, _ in self._side)]:
                if task.cancelled is None and task.deadline is not None and now > task.deadline:
                    task.cancelled = StreamEnd(
                        grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded"
                    )
            self._waiting = deque(t for t in self._waiting if not self._dropped(t))
            self._side = deque((t, u) for t, u in self._side if not self._dropped(t))
            live = []
            for task in self._decoding:
                if self._dropped(task):
                    self._batch.finish(task.slots)
                else:
                    live.append(task)
            self._decoding = live

    def _dropped(self, task: _Task) -> bool:
        if task.cancelled is None:
            return False
        self._end(task, task.cancelled)
        return True

    def _reap_stalled(self) -> None:
        now = time.monotonic()
        limit = self.config.stall_seconds
        with self._wake:
            admitted = list(self._admitted)
        for task in admitted:
            stuck = task.outbox.stuck_for(now)
            if stuck > limit and task.cancelled is None:
                log.warning(
                    "request %d: the client has not read for %.0f s; cancelling it", task.id, stuck
                )
                task.cancelled = StreamEnd(
                    grpc.StatusCode.CANCELLED, f"the client did not read for {limit:.0f} s"
                )
                task.outbox.close(task.cancelled)
                if task.on_stall is not None:
                    task.on_stall()

    # ---- 2. admission into the batch

    def _admit(self) -> None:
        """Starts waiting requests, oldest first, while they fit."""
        joining: list[tuple[_GenerateTask, Joining]] = []
        prefilled = 0
        while self._waiting and self._should_join():
            task = self._waiting[0]
            running = len(self._decoding) + len(joining) + len(self._side)
            if running >= self.config.max_batch_requests:
                break
            if isinstance(task, _FeaturesTask):
                self._pop_waiting()
                self._side.append((task, self._features_units(task)))
                continue
            assert isinstance(task, _GenerateTask)
            rows = self._batch.live_rows + sum(j.rows for _, j in joining)
            if rows and rows + task.job.sampling.k > self.config.max_batch_rows:
                break
            prompt = len(task.job.prompt_ids)
            if prefilled and prefilled + prompt > self.config.prefill_tokens_per_step:
                break
            self._pop_waiting()
            prefilled += prompt
            if (join := self._start(task)) is not None:
                joining.append((task, join))
        with self._wake:  # gRPC threads append to the queue meanwhile
            for waiting in self._waiting:
                waiting.waited_steps += 1
        if joining:
            slots = self._batch.join([j for _, j in joining])
            for (task, _), task_slots in zip(joining, slots, strict=True):
                task.slots = task_slots
                self._decoding.append(task)

    def _pop_waiting(self) -> None:
        with self._wake:
            self._waiting.popleft()

    def _should_join(self) -> bool:
        """Start the head of the queue now, or let Generate newcomers gather so that one
        cache rebuild serves several."""
        live, head = self._batch.live_rows, self._waiting[0]
        if not live or not isinstance(head, _GenerateTask):
            return True
        with self._wake:
            waiting_rows = sum(t.rows_wanted for t in self._waiting)
        return waiting_rows * 8 >= live or head.waited_steps >= _MAX_JOIN_WAIT_STEPS

    def _start(self, task: _GenerateTask) -> Joining | None:
        """Prefills the prompt and draws each row's first token; the rows that go on."""
        job, sampling = task.job, task.job.sampling
        layer = job.features.layer
        forward = self._forward((layer,))
        device = self.loaded.device
        seed = sampling.seed if sampling.seed is not None else secrets.randbits(63)
        task.generator = torch.Generator(device=device).manual_seed(seed)
        cache = full_cache(self.loaded.model)
        prefill = forward(tensor_on([job.prompt_ids], device), cache)
        instruction = to_host(prefill.hidden[layer][0, -1])
        task.outbox.put(InstructionReady(instruction, len(job.prompt_ids)), instruction.nbytes)
        rows = CandidateRows(sampling.k, instruction.shape[0], device)
        task.rows = rows
        assert prefill.logits is not None
        entropy = job.features.mean_entropy
        draw = rows.draw(
            prefill.logits.expand(sampling.k, -1),
            sampling,
            task.generator,
            self.loaded.eos_token_ids,
            entropy,
        )
        at_once: np.ndarray | None = None  # every row that ends here ends at once
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
        if not keep:
            self._after_sampling(task)
            return None
        task.final = sampling.max_new_tokens <= 1
        return Joining(cache, len(job.prompt_ids), len(keep), [draw.picked[b] for b in keep])

    # ---- 3. side work: Features passes, per-token features

    def _side_unit(self) -> None:
        """One pass of the next side task whose client has room for more."""
        for _ in range(len(self._side)):
            task, units = self._side[0]
            self._side.rotate(-1)
            if not task.outbox.has_room():
                continue
            try:
                next(units)
            except StopIteration:
                with self._wake:
                    self._side = deque((t, u) for t, u in self._side if t is not task)
            return

    def _features_units(self, task: _FeaturesTask) -> Iterator[None]:
        """A Features request, one bounded pass per unit."""
        job = task.job
        layer, entropy = job.features.layer, job.features.mean_entropy
        prompt = PrefilledPrompt(self.loaded, job.prompt_ids, [layer], logits=entropy)
        instruction = to_host(prompt.hidden[layer])
        pooled: list[Pooled] = []
        groups = _token_budget_groups(
            job.responses, self.limits.features_pass_tokens, self.limits.features_batch
        )
        for group in groups:
            yield
            pooled += pool_response_passes(list(prompt.feed(group, len(group))), [layer])
        result = FeaturesDone(instruction, pooled)
        task.outbox.put(result, sum(p.last.nbytes + p.mean.nbytes for p in pooled))
        task.outbox.close()

    def _token_units(self, task: _GenerateTask) -> Iterator[None]:
        """Per-token features of a finished Generate's candidates, one pass per unit."""
        request = task.job.tokens
        assert request is not None
        order = sorted(task.responses)
        computed = compute_token_features(
            self.loaded,
            task.job.prompt_ids,
            [task.responses[i] for i in order],
            request,
            batch_size=self.limits.token_batch,
        )
        for position, values in computed:
            task.outbox.put(TokenValues(order[position], values), values.nbytes)
            yield
        self._done(task)

    # ---- 4. one decode step

    def _decode_step(self) -> None:
        if not self._decoding:
            return
        layers = tuple(sorted({t.job.features.layer for t in self._decoding}))
        out, slots = self._batch.step(self._forward(layers))
        # What the step sends to the host, each for every request at once: the draws,
        # then the vectors of the rows that finished.
        draws = self._record(self._propose(out, slots))
        finishing = []
        for task, draw in zip(self._decoding, draws, strict=True):
            assert task.rows is not None
            entropy = task.job.features.mean_entropy
            if draw is None:  # its final step: every row has its last token fed
                every = list(range(len(task.rows.index)))
                finishing.append(Finishing(task.rows, every, False, entropy))
            else:
                finishing.append(Finishing(task.rows, [b for b, _ in draw.ended], True, entropy))
        still: list[_GenerateTask] = []
        for task, draw, candidates in zip(self._decoding, draws, finish(finishing), strict=True):
            for candidate in candidates:
                self._emit(task, candidate)
            if self._advance(task, draw):
                still.append(task)
        self._decoding = still

    def _propose(self, out: Pass, slots: list[int]) -> list[torch.Tensor | None]:
        """Feeds each request its rows' new states and draws their next tokens, on the
        device: per request, `CandidateRows.propose`'s tensor (None in its final step)."""
        assert out.logits is not None
        row_of = {slot: b for b, slot in enumerate(slots)}
        # Every request's rows, request by request: one upload, then slices of it.
        order = tensor_on([row_of[s] for t in self._decoding for s in t.slots], self._batch.device)
        proposals: list[torch.Tensor | None] = []
        at = 0
        for task in self._decoding:
            assert task.rows is not None and task.generator is not None
            features = task.job.features
            rows, at = order[at : at + len(task.slots)], at + len(task.slots)
            task.rows.fed(out.hidden[features.layer].index_select(0, rows)[:, -1])
            if task.final:
                proposals.append(None)
                continue
            logits = out.logits.index_select(0, rows)
            sampling = task.job.sampling
            proposals.append(
                task.rows.propose(logits, sampling, task.generator, features.mean_entropy)
            )
        return proposals

    def _record(self, proposals: list[torch.Tensor | None]) -> list[Draw | None]:
        """Every request's draws, copied to the host at once and recorded in its rows."""
        drawn = [p for p in proposals if p is not None]
        host = iter(_split_columns(to_host(torch.cat(drawn, 1)), drawn) if drawn else [])
        draws: list[Draw | None] = []
        for task, proposal in zip(self._decoding, proposals, strict=True):
            assert task.rows is not None
            ends = self.loaded.eos_token_ids
            draws.append(None if proposal is None else task.rows.record(next(host), ends))
        return draws

    def _advance(self, task: _GenerateTask, draw: Draw | None) -> bool:
        """Moves the task past this step's draw (None: its final step); True while it has
        rows left. Its finished rows' candidates are out already."""
        rows, sampling = task.rows, task.job.sampling
        assert rows is not None
        if draw is None:
            self._batch.finish(task.slots)
            self._after_sampling(task)
            return False
        self._batch.finish([task.slots[b] for b, _ in draw.ended])
        rows.keep(draw.keep)
        task.slots = [task.slots[b] for b in draw.keep]
        if not draw.keep:
            self._after_sampling(task)
            return False
        self._batch.feed_next(task.slots, [draw.picked[b] for b in draw.keep])
        task.final = len(rows.tokens[rows.index[0]]) >= sampling.max_new_tokens
        return True

    def _emit(self, task: _GenerateTask, candidate: SampledCandidate) -> None:
        task.responses[candidate.index] = candidate.token_ids
        task.outbox.put(candidate, candidate.feature.nbytes + candidate.mean_feature.nbytes)

    def _after_sampling(self, task: _GenerateTask) -> None:
        """Every candidate is out: per-token features next, or the end of the stream."""
        if task.job.tokens is None:
            self._done(task)
            return
        with self._wake:
            self._side.append((task, self._token_units(task)))

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
