"""Where the model runs: ``--device`` and ``--dtype`` resolved and refused before
anything loads, and the engine keeping its work on the model's device.

This machine has no GPU, so the CUDA path itself cannot run here. What can:

- the choice of device and dtype, and the one-line refusals (no CUDA, a
  device index this machine lacks, out of memory while loading);
- that every tensor the engine, sampler and feature passes create is placed
  on the model's device explicitly: they run with torch's default device set
  to ``meta``, where a tensor created without a device cannot meet the
  model's without an error;
- that a decode step copies to the host only what goes on the wire, in at
  most two copies for every row of every request;
- a bfloat16 model through the same engine (the dtype a GPU serves in).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

import central.engine
import central.sampler
from central._errors import ConfigError, ModelLoadError
from central.cli import main as central_main
from central.config import EngineConfig, ServerConfig, ServiceLimits, validate_config
from central.decoding import PackedLinear, pack_linears
from central.device import resolve_device, resolve_dtype
from central.engine import Done, Engine, FeaturesDone, InstructionReady, Ticket, TokenValues
from central.features import FeatureRequest
from central.model import load_model
from central.pooling import pool_responses
from central.sampler import SampledCandidate, SamplingConfig, sample
from central.scale.config import ScaleConfig, replica_device, validate_scale_config
from central.token_features import TokenRequest, compute_token_features
from central.validation import FeaturesJob, GenerateJob
from language_ranker.v1 import ranker_pb2 as pb

from .test_engine import _collect, _hooked, _job

HAS_CUDA = torch.cuda.is_available()


# ------------------------------------------------------------------ choosing


@pytest.mark.parametrize("name", ["auto", "cpu", "cuda", "cuda:0", "cuda:3"])
def test_device_names_pass_the_flag_check(name: str) -> None:
    assert validate_config(ServerConfig(device=name), {}).device == name


@pytest.mark.parametrize("name", ["gpu", "CUDA", "cuda:", "cuda:x", "cuda:-1", "mps", ""])
def test_other_device_names_are_refused_with_the_flag_named(name: str) -> None:
    with pytest.raises(ConfigError) as raised:
        validate_config(ServerConfig(device=name), {})
    assert raised.value.option == "--device"
    assert "auto, cpu, cuda or cuda:N" in str(raised.value)


def test_auto_takes_a_cuda_device_when_torch_sees_one_else_the_cpu() -> None:
    expected = torch.device("cuda", 0) if HAS_CUDA else torch.device("cpu")
    assert resolve_device("auto") == expected
    assert resolve_device("cpu") == torch.device("cpu")


def test_a_cuda_device_this_machine_lacks_is_refused_saying_why() -> None:
    name = f"cuda:{torch.cuda.device_count()}" if HAS_CUDA else "cuda"
    with pytest.raises(ConfigError) as raised:
        resolve_device(name)
    message = str(raised.value)
    assert message.startswith(f"--device {name}: ") and "\n" not in message
    if not HAS_CUDA:
        assert "without CUDA" in message or "sees no CUDA device" in message


def test_dtype_auto_is_float32_on_the_cpu_and_explicit_dtypes_pass() -> None:
    cpu = torch.device("cpu")
    assert resolve_dtype("auto", cpu) == "float32"
    for dtype in ("float32", "bfloat16", "float16"):
        assert resolve_dtype(dtype, cpu) == dtype
    if HAS_CUDA:  # bfloat16 where the GPU has it, float16 where it does not
        bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
        assert resolve_dtype("auto", torch.device("cuda", 0)) == ("bfloat16" if bf16 else "float16")


def test_serve_on_a_device_this_machine_lacks_fails_at_once_before_loading(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    # A checkpoint directory that cannot load: had the model been read first, the
    # error would be about it, not the device.
    broken = tmp_path / "broken"
    broken.mkdir()
    name = f"cuda:{torch.cuda.device_count()}" if HAS_CUDA else "cuda"
    proc = subprocess.run(
        [sys.executable, "-m", "central.cli", "serve", "--device", name, "--model", str(broken)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"ranker-central: --device {name}: ")


def test_a_misspelt_device_is_one_line_before_torch(capsys: pytest.CaptureFixture[str]) -> None:
    assert central_main(["serve", "--device", "gpu0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["ranker-central: --device must be auto, cpu, cuda or cuda:N, got 'gpu0'"]


def test_device_auto_serves_here_on_the_cpu_in_float32_with_packed_weights(
    tiny_checkpoint: Path,
) -> None:
    from central.server import start_server

    dense = ServerConfig(model=str(tiny_checkpoint), port=0, device="auto", weights="dense")
    running = start_server(dense)
    try:
        loaded = running.servicer.loaded
        expected = "cuda" if HAS_CUDA else "cpu"
        assert loaded.device.type == expected
        assert loaded.model.dtype == (torch.bfloat16 if HAS_CUDA else torch.float32)
        packed = [m for m in loaded.model.modules() if isinstance(m, PackedLinear)]
        assert bool(packed) == (not HAS_CUDA)  # the CPU path keeps its oneDNN packing
    finally:
        running.stop(grace=0)


def test_device_auto_with_the_default_weights_is_int8_on_a_cpu_and_dense_on_a_gpu(
    tiny_checkpoint: Path,
) -> None:
    from central.quantized import Int8Linear, int8_usable
    from central.server import start_server

    running = start_server(ServerConfig(model=str(tiny_checkpoint), port=0, device="auto"))
    try:
        loaded = running.servicer.loaded
        int8 = not HAS_CUDA and int8_usable()  # --weights auto: int8 only on a CPU
        assert loaded.weights_format == ("int8" if int8 else str(loaded.model.dtype)[6:])
        assert any(isinstance(m, Int8Linear) for m in loaded.model.modules()) == int8
    finally:
        running.stop(grace=0)


def test_running_out_of_memory_while_loading_is_one_line_naming_it(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    """A checkpoint declaring an MLP of 2**40 columns whose weights it lacks: the real
    CPU allocator refuses the 2 PB transformers asks for while initialising them."""
    from safetensors.torch import load_file, save_file

    huge = tmp_path / "huge"
    shutil.copytree(tiny_checkpoint, huge)
    config = json.loads((huge / "config.json").read_text())
    config["intermediate_size"] = 2**40
    (huge / "config.json").write_text(json.dumps(config))
    weights = load_file(huge / "model.safetensors")
    kept = {name: tensor for name, tensor in weights.items() if ".mlp." not in name}
    save_file(kept, huge / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ModelLoadError) as raised:
        load_model(str(huge))
    message = str(raised.value)
    assert message.startswith("out of memory loading huge onto cpu in float32")
    assert "can't allocate memory" in message and "\n" not in message


def test_replicas_run_on_the_gpus_they_reserve() -> None:
    def config(**fields: object) -> ScaleConfig:
        return validate_scale_config(ScaleConfig(**fields), {})  # type: ignore[arg-type]

    assert replica_device(config()) == "cpu"
    assert replica_device(config(gpus_per_replica=1.0)) == "cuda"
    assert replica_device(config(gpus_per_replica=0.5)) == "cuda"  # a shared GPU
    assert replica_device(config(device="cuda:1", gpus_per_replica=2.0)) == "cuda:1"
    refusals = [
        ({"device": "cuda"}, "--device", "needs --gpus-per-replica above 0"),
        ({"device": "cpu", "gpus_per_replica": 1.0}, "--gpus-per-replica", "never uses"),
        ({"device": "cuda:1", "gpus_per_replica": 1.0}, "--device", "sees 1 GPU(s)"),
        ({"device": "tpu"}, "--device", "must be auto, cpu, cuda or cuda:N"),
    ]
    for fields, option, words in refusals:
        with pytest.raises(ConfigError) as raised:
            config(**fields)
        assert raised.value.option == option and words in str(raised.value)


# ------------------------------------------------------------------ placement


@contextmanager
def _default_device_meta() -> Iterator[None]:
    """Tensors created without a device land on ``meta`` (in this thread)."""
    with torch.device("meta"):
        yield


def test_the_sampler_places_every_tensor_it_creates(tiny_model) -> None:
    ids = tiny_model.tokenizer("Where does the river go?")["input_ids"]
    config = SamplingConfig(k=5, max_new_tokens=9, seed=4, greedy_first=True, top_p=0.9)
    expected = list(sample(tiny_model, ids, config, 2, entropy=True, embedding_mean=True))
    with _default_device_meta():
        got = list(sample(tiny_model, ids, config, 2, entropy=True, embedding_mean=True))
    np.testing.assert_array_equal(got[0], expected[0])
    for mine, theirs in zip(got[1:], expected[1:], strict=True):
        assert isinstance(mine, SampledCandidate) and isinstance(theirs, SampledCandidate)
        assert (mine.index, mine.token_ids) == (theirs.index, theirs.token_ids)
        np.testing.assert_array_equal(mine.feature, theirs.feature)
        np.testing.assert_array_equal(mine.mean_feature, theirs.mean_feature)
        assert theirs.embedding_mean_feature is not None
        np.testing.assert_array_equal(mine.embedding_mean_feature, theirs.embedding_mean_feature)


def test_feature_passes_place_every_tensor_they_create(tiny_model) -> None:
    prompt = tiny_model.tokenizer("Which is better?")["input_ids"]
    responses = [tiny_model.tokenizer(t)["input_ids"] for t in ["yes", "", "no, not at all"]]
    request = TokenRequest((2, 4), 0, pb.ENCODING_FP16)
    logits_request = TokenRequest((), 3, pb.ENCODING_FP16)

    def run() -> tuple:
        pooled = pool_responses(tiny_model, prompt, responses, [1, 3], mean_entropy=True)
        tokens = list(compute_token_features(tiny_model, prompt, responses, request))
        logits = list(compute_token_features(tiny_model, prompt, responses, logits_request))
        return pooled, tokens, logits

    (instruction, pooled), tokens, logits = run()
    with _default_device_meta():
        (meta_instruction, meta_pooled), meta_tokens, meta_logits = run()
    np.testing.assert_array_equal(meta_instruction, instruction)
    for mine, theirs in zip(meta_pooled, pooled, strict=True):
        np.testing.assert_array_equal(mine.last, theirs.last)
        np.testing.assert_array_equal(mine.mean, theirs.mean)
        assert mine.mean_entropy == theirs.mean_entropy
    for (_, mine), (_, theirs) in zip(meta_tokens + meta_logits, tokens + logits, strict=True):
        np.testing.assert_array_equal(mine, theirs)


def _every_kind_of_work(model) -> list[GenerateJob | FeaturesJob]:
    """A Generate of each kind (with the embedding mean, with per-token features, a
    long prompt prefilled in pieces) and a Features call fed in slices."""
    prompt = model.tokenizer("Which is better?")["input_ids"]
    responses = [model.tokenizer(t)["input_ids"] for t in ["yes", "", "no, not at all " * 6]]
    features = FeatureRequest(
        layer=3, encoding=pb.ENCODING_FP16, mean=True, mean_entropy=True, embedding_mean=True
    )
    with_tokens = _job(model, "hi", k=3, tokens=20, seed=1, greedy_first=True)
    return [
        _job(model, "Tell me about the sea", k=5, tokens=14, seed=11, embedding=True),
        dataclasses.replace(with_tokens, tokens=TokenRequest((1, 3), 0, pb.ENCODING_FP16)),
        _job(model, "a long prompt, " * 12, k=2, tokens=6, seed=3, temperature=0.7, top_p=0.9),
        FeaturesJob(prompt, responses, features),
    ]


def _run_all(engine: Engine, jobs: list[GenerateJob | FeaturesJob]) -> list[list[object]]:
    """Every event of every job, submitted together."""

    def submit(job: GenerateJob | FeaturesJob) -> Ticket:
        if isinstance(job, FeaturesJob):
            return engine.submit_features(job)
        return engine.submit_generate(job)

    tickets = [submit(job) for job in jobs]
    return [_events_within(ticket, 60) for ticket in tickets]


def _events_within(ticket: Ticket, seconds: float) -> list[object]:
    """The ticket's events, failing after `seconds` rather than waiting for ever: an
    engine that fails while admitting a request leaves its stream open (the request is
    in no list the engine ends on failure)."""
    done: list[list[object]] = []

    def read() -> None:
        try:
            done.append(list(ticket.events()))
        finally:
            ticket.release()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(seconds)
    assert done, f"no result within {seconds} s"
    return done[0]


def _assert_same_events(got: list[object], expected: list[object]) -> None:
    assert [type(e) for e in got] == [type(e) for e in expected], (got[-1:], expected[-1:])
    assert isinstance(got[-1], (Done, FeaturesDone)), got[-1]
    for mine, theirs in zip(got, expected, strict=True):
        if isinstance(theirs, SampledCandidate):
            assert isinstance(mine, SampledCandidate)
            assert (mine.index, mine.token_ids) == (theirs.index, theirs.token_ids)
            vectors = ("feature", "mean_feature", "embedding_mean_feature")
        elif isinstance(theirs, FeaturesDone):
            assert isinstance(mine, FeaturesDone)
            np.testing.assert_allclose(mine.instruction, theirs.instruction, atol=1e-5)
            for row, want in zip(mine.pooled, theirs.pooled, strict=True):
                for name in ("last", "mean", "embedding_mean"):
                    np.testing.assert_allclose(getattr(row, name), getattr(want, name), atol=1e-5)
                assert row.mean_entropy == pytest.approx(want.mean_entropy, abs=1e-5)
            continue
        else:
            vectors = {InstructionReady: ("feature",), TokenValues: ("values",)}.get(
                type(theirs), ()
            )
        for name in vectors:
            want = getattr(theirs, name)
            if want is None:
                assert getattr(mine, name) is None, name
            else:
                np.testing.assert_allclose(getattr(mine, name), want, atol=1e-5, err_msg=name)


def test_the_engine_places_every_tensor_it_creates(
    tiny_model, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Every path of the engine, run with the engine thread's default device ``meta``:
    prefill in pieces, decode steps, a shared step that fails and is retried per
    request (`DecodeBatch.step_alone`), the embedding mean, a Features call fed in
    slices, per-token features; it computes what it computes on the default device."""
    config = EngineConfig(turn_tokens=16)  # the long prompt and the Features call in pieces
    limits = ServiceLimits(features_pass_tokens=16)
    jobs = _every_kind_of_work(tiny_model)
    failed = {"shared steps": 0}

    def fail_the_third_shared_step(module: object, args: object, kwargs: dict) -> None:
        rows, columns = kwargs["input_ids"].shape
        # More rows than any one request has (k = 5, 3, 2): a step several requests share.
        if columns == 1 and rows > 5 and failed["shared steps"] < 3:
            failed["shared steps"] += 1
            if failed["shared steps"] == 3:
                raise RuntimeError("a shared step fails (injected)")

    def run(engine: Engine) -> list[list[object]]:
        failed["shared steps"] = 0
        with _hooked(tiny_model, fail_the_third_shared_step, kwargs=True):
            try:
                return _run_all(engine, jobs)
            finally:
                engine.close()

    expected = run(Engine(tiny_model, limits, config))
    retried = sum("stepping each alone" in r.getMessage() for r in caplog.records)
    assert retried == 1, "the shared step should have failed once and been retried"
    plain_run = Engine._run

    def run_with_meta_default(self: Engine) -> None:  # the engine thread's default: meta
        with _default_device_meta():
            plain_run(self)

    monkeypatch.setattr(Engine, "_run", run_with_meta_default)
    got = run(Engine(tiny_model, limits, config))
    assert sum("stepping each alone" in r.getMessage() for r in caplog.records) == 2
    for mine, theirs in zip(got, expected, strict=True):
        _assert_same_events(mine, theirs)


def test_a_decode_step_copies_only_the_wire_values_to_the_host(
    tiny_model, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At most two copies a step, whatever the rows: the draws of every row (3 values
    each), then the vectors of the rows that finished (2 per row, 3 with the embedding
    mean), requests with and without the embedding mean in the same copy."""
    copies: list[tuple[int, tuple[int, ...]]] = []  # (step, shape) of each copy to the host
    step = {"count": 0, "now": 0}  # decode steps so far; the one running (0: none)
    to_host = central.engine.to_host

    def counted(tensor: torch.Tensor) -> np.ndarray:
        copies.append((step["now"], tuple(tensor.shape)))
        return to_host(tensor)

    decode_step = Engine._decode_step

    def numbered_step(self: Engine) -> None:
        step["count"] += 1
        step["now"] = step["count"]
        try:
            decode_step(self)
        finally:
            step["now"] = 0  # prefills and the first draws copy outside any step

    monkeypatch.setattr(central.engine, "to_host", counted)
    monkeypatch.setattr(central.sampler, "to_host", counted)
    monkeypatch.setattr(Engine, "_decode_step", numbered_step)
    engine = Engine(tiny_model)
    try:
        jobs = [
            _job(tiny_model, f"prompt number {i}", k=6, tokens=10, seed=i, embedding=i % 2 == 1)
            for i in range(4)
        ]
        tickets = [engine.submit_generate(job) for job in jobs]
        results = [_collect(ticket) for ticket in tickets]
    finally:
        engine.close()
    assert all(isinstance(last, Done) for _, _, last in results)
    width = tiny_model.hidden_size
    in_steps: dict[int, list[tuple[int, ...]]] = {}
    for step, shape in copies:
        if step > 0:
            in_steps.setdefault(step, []).append(shape)
    assert in_steps, "no decode step ran"
    busiest, vector_values = 0, 0
    for shapes in in_steps.values():
        assert len(shapes) <= 2, shapes
        draws = [s for s in shapes if len(s) == 2]
        vectors = [s for s in shapes if len(s) == 1]  # every finished row's, flattened
        assert len(draws) <= 1 and len(vectors) <= 1, shapes
        assert all(s[0] == 3 for s in draws)  # token, log-probability, entropy per row
        vector_values += sum(s[0] for s in vectors)
        busiest = max([busiest, *(s[1] for s in draws)])
    assert busiest > 6, "several requests' rows should have shared a step"
    # Last and summed state per finished row, and the summed embedding where asked for:
    # nothing more crossed (rows that ended at once were sent from the prefill).
    finished = [
        (c, job.features.embedding_mean)
        for job, (_, candidates, _) in zip(jobs, results, strict=True)
        for c in candidates.values()
        if c.token_ids
    ]
    assert vector_values == sum((3 if embedding else 2) * width for _, embedding in finished)


# ------------------------------------------------------------------ bfloat16


@pytest.fixture(scope="module")
def bf16_model(tiny_checkpoint: Path):
    return load_model(str(tiny_checkpoint), dtype="bfloat16")


def test_a_bfloat16_model_skips_the_cpu_fp32_fast_path(bf16_model) -> None:
    assert bf16_model.model.dtype == torch.bfloat16
    assert pack_linears(bf16_model.model) == 0
    assert not any(isinstance(m, PackedLinear) for m in bf16_model.model.modules())


def test_a_bfloat16_model_serves_float32_vectors_of_a_plain_pass(bf16_model) -> None:
    engine = Engine(bf16_model)
    try:
        job = _job(bf16_model, "What is two plus three?", k=4, tokens=8, seed=2)
        instruction, candidates, last = _collect(engine.submit_generate(job))
    finally:
        engine.close()
    assert isinstance(last, Done) and sorted(candidates) == [0, 1, 2, 3]
    assert instruction.dtype == np.float32 and instruction.shape == (bf16_model.hidden_size,)
    for candidate in candidates.values():
        fed = job.prompt_ids + (candidate.token_ids or [bf16_model.tokenizer.eos_token_id])
        with torch.inference_mode():
            out = bf16_model.model(torch.tensor([fed]), output_hidden_states=True)
        expected = out.hidden_states[2][0, -1].float().numpy()
        assert candidate.feature.dtype == np.float32
        np.testing.assert_allclose(candidate.feature, expected, rtol=0.05, atol=0.05)
