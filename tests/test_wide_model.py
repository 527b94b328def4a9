"""A model of Llama-3.1-8B's width, end to end: from a real central to a user's head.

The wire was sized for the 8B class the papers use: 4096-d vectors. This runs
that regime on the CPU with a randomly initialised Llama of that width and
head layout (hidden 4096, 32 query heads, 8 key/value heads, MLP 14,336) and
two layers, built from a config (nothing is downloaded), with the default
model's tokenizer (SmolLM2's 49,152-token vocabulary) and its embeddings tied
to the LM head (8B does not tie; tying keeps the model at 2.6 GB of float32).
A real gRPC server serves it; the edge side decodes the vectors, computes the
signals, ranks with onnxruntime, records feedback in SQLite and fits a
personal head at 4096-d, through the public `PersonalRanker`.

About 40 s here, half of it initialising the 640M random weights.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from language_ranker.v1 import ranker_pb2 as pb
from language_ranker.v1 import ranker_pb2_grpc as pb_grpc

pytestmark = pytest.mark.slow  # ~40 s (see above); CI runs it

WIDTH = 4096
LAYERS = 2
FEATURE_LAYER = 1  # the default 0.6 of two layers


def _default_tokenizer() -> Any:
    """The default model's tokenizer, from its converted copy (converting it once if needed)."""
    from transformers import AutoTokenizer

    from central.model import converted_dir, load_model, resolve_model_path

    directory = converted_dir(resolve_model_path("default"))
    if not (directory / "tokenizer_config.json").exists():
        return load_model("default").tokenizer  # converts the GGUF into the cache once
    return AutoTokenizer.from_pretrained(directory, local_files_only=True)


@pytest.fixture(scope="module")
def wide() -> Iterator[tuple[Any, Any]]:
    """(running server, loaded model): the 8B-shaped two-layer model, served."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from central.model import LoadedModel
    from central.server import ServerConfig, start_server

    tokenizer = _default_tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=WIDTH,
        intermediate_size=14336,
        num_hidden_layers=LAYERS,
        num_attention_heads=32,
        num_key_value_heads=8,
        max_position_embeddings=8192,
        rope_theta=500000.0,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = LlamaForCausalLM(config).eval()
    loaded = LoadedModel(
        name="llama-3.1-8b-shaped-2-layers",
        model=model,
        tokenizer=tokenizer,
        num_layers=LAYERS,
        hidden_size=WIDTH,
        context_length=config.max_position_embeddings,
        eos_token_ids=frozenset({tokenizer.eos_token_id}),
    )
    running = start_server(ServerConfig(port=0), loaded=loaded)
    yield running, loaded
    running.stop(grace=0)


def _plain_state(loaded: Any, ids: list[int]) -> np.ndarray:
    """The feature layer's state of the last of `ids`, from a plain forward pass."""
    import torch

    with torch.inference_mode():
        out = loaded.model(torch.tensor([ids]), output_hidden_states=True)
    return out.hidden_states[FEATURE_LAYER][0, -1].numpy()


def test_generate_streams_8207_byte_fp16_vectors_of_the_model(wide) -> None:
    running, loaded = wide
    request = pb.GenerateRequest(
        prompt=pb.Prompt(text="Write a haiku about rivers."),
        k=3,
        sampling=pb.SamplingParams(max_new_tokens=4, seed=1),
        features=pb.FeatureSpec(
            encoding=pb.ENCODING_FP16,
            vectors=[pb.FEATURE_VECTOR_LAST, pb.FEATURE_VECTOR_MEAN],
            mean_entropy=True,
        ),
    )
    with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        stub = pb_grpc.CentralServiceStub(channel)
        info = stub.Info(pb.InfoRequest(), timeout=30)
        events = list(stub.Generate(request, timeout=300))
    assert (info.hidden_size, info.num_layers) == (WIDTH, LAYERS)
    from central.prompting import render_prompt

    prompt_ids = render_prompt(loaded, request.prompt)
    assert events[0].instruction.prompt_tokens == len(prompt_ids)
    candidates = [e.candidate for e in events if e.WhichOneof("event") == "candidate"]
    assert len(candidates) == 3
    for candidate in candidates:
        alone = pb.GenerateResponse(candidate=pb.Candidate(feature=candidate.feature))
        both = pb.GenerateResponse(
            candidate=pb.Candidate(
                feature=candidate.feature,
                mean_feature=candidate.mean_feature,
                mean_entropy=candidate.mean_entropy,
            )
        )
        assert alone.ByteSize() == 8207  # 8 KB of fp16 values and the message's framing
        assert both.ByteSize() == 16417  # last + mean + mean entropy: 16.4 KB
        assert list(candidate.feature.shape) == [WIDTH]
        assert candidate.feature.dtype == pb.DTYPE_FLOAT16
        last = np.frombuffer(candidate.feature.data, "<f2").astype(np.float32)
        fed = prompt_ids + list(candidate.token_ids)
        expected = _plain_state(loaded, fed)
        np.testing.assert_allclose(last, expected, rtol=2e-3, atol=2e-3 * np.abs(expected).max())


def test_edge_decodes_ranks_records_and_learns_a_4096_d_head(wide, tmp_path: Path) -> None:
    from edge import CentralClient, PersonalRanker
    from edge.runtime.signals import candidate_signals

    running, _ = wide
    with CentralClient(f"127.0.0.1:{running.port}", timeout=300) as central:
        me = PersonalRanker(central, tmp_path, "alice", "chat")
        for i in range(3):
            shown = me.generate(f"Write a poem number {i}", k=4, max_new_tokens=4, seed=i)
            candidates = shown.generation.candidates
            assert shown.generation.instruction.shape == (WIDTH,)
            for c in candidates:
                assert c.feature.shape == c.mean_feature.shape == (WIDTH,)
                assert c.feature.dtype == np.float32 and np.isfinite(c.feature).all()
                assert c.mean_entropy is not None
            signals = candidate_signals(candidates)
            assert signals.shape[0] == 4 and np.isfinite(signals).all()
            for c in candidates:  # this user likes the second candidate best
                me.thumbs(shown, c.index, up=c.index == 1)
        assert len(me.store.events("alice")) == 12  # in SQLite
        report = me.learn()
        assert report.updated and me.version == 1
        assert me.registry.open("alice", "chat").feature_size == WIDTH
        shown = me.generate("Write a poem number 0", k=4, max_new_tokens=4, seed=0)
    assert shown.ranker_version == 1  # ranked by the learned ONNX ranker (onnxruntime)
    scores = me.rank(shown.generation).scores
    assert scores.shape == (4,) and np.isfinite(scores).all() and np.ptp(scores) > 0
    assert shown.order[0] == 1  # what it was taught on this prompt, sampled alike
