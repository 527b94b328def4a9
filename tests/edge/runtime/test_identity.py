"""Self-describing rankers: a ranker records the features it was trained on (source
model's weights checksum, layer, vector parts), a Generation carries the ones central
produced, and ranking refuses a mismatch. Real central (tiny model), real export,
real onnxruntime."""

from __future__ import annotations

import asyncio
import dataclasses
import json

import numpy as np
import onnx
import pytest

from central.model import weights_sha256
from central.server import ServerConfig, start_server
from edge._errors import ConnectionLostError, FeatureError
from edge.runtime.async_client import AsyncCentralClient
from edge.runtime.client import CentralClient
from edge.runtime.onnx_meta import (
    META_INPUTS,
    META_LAYER,
    META_SOURCE_FORMAT,
    META_SOURCE_MODEL,
    META_SOURCE_SHA256,
    identity_metadata,
    read_identity,
)
from edge.runtime.scoring import Ranker, RankingSession
from edge.runtime.signals import SIGNALS_VERSION
from edge.runtime.types import FeatureIdentity, Generation
from edge.training.export import export_onnx
from edge.training.rankers import build_ranker, make_config

TINY_D, TINY_LAYER = 64, 2  # the tiny model's width and default feature layer
WIDEN = "widen them to float32"


@pytest.fixture(scope="module")
def client(tiny_server):
    with CentralClient(f"127.0.0.1:{tiny_server.port}", timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def generation(client) -> Generation:
    return client.generate("Write a poem", k=3, max_new_tokens=4, seed=0)


def _export(identity: FeatureIdentity | None, **overrides) -> bytes:
    ranker = build_ranker(make_config("list", TINY_D, **overrides), seed=0)
    return export_onnx(ranker, exporter="torchscript", identity=identity)


# ------------------------------------------------------------------ the identity itself


def test_an_identity_keeps_sixteen_hex_digits_and_compares_only_what_both_know() -> None:
    full = "AB" * 32
    ident = FeatureIdentity("SmolLM2", full, 18, ("last",))
    assert ident.model_sha256 == "ab" * 8
    assert ident.describe() == "SmolLM2 (sha abababababababab) layer 18"
    assert FeatureIdentity().describe() == "an unknown model" and not FeatureIdentity().known
    assert ident.mismatch(FeatureIdentity(model_sha256=full[:16])) is None  # layer unknown
    assert ident.mismatch(FeatureIdentity(layer_index=18)) is None  # model unknown
    assert ident.mismatch(FeatureIdentity(layer_index=11)) is not None
    assert ident.mismatch(FeatureIdentity(model_sha256="cd" * 8)) is not None
    assert FeatureIdentity.from_dict(ident.to_dict()) == dataclasses.replace(ident, parts=())
    assert FeatureIdentity.from_dict({"model_name": "x"}) is None  # nothing checkable
    assert FeatureIdentity.from_dict(None) is None


def test_a_ranker_refuses_features_of_another_weight_format() -> None:
    fp32 = FeatureIdentity("SmolLM2", "ab" * 8, 18, weights_format="float32")
    int8 = dataclasses.replace(fp32, weights_format="int8")
    assert fp32.describe() == "SmolLM2 (sha abababababababab, float32 weights) layer 18"
    problem = fp32.mismatch(int8)
    assert problem is not None and "int8 weights" in problem
    assert "ranker-central serve --weights dense --dtype float32" in problem
    assert "--weights int8" in (int8.mismatch(fp32) or "")
    assert fp32.mismatch(dataclasses.replace(int8, weights_format="")) is None  # an old server
    legacy = dataclasses.replace(fp32, weights_format="")  # exported before formats existed
    assert legacy.mismatch(int8) is None and fp32.mismatch(fp32) is None
    assert FeatureIdentity.from_dict(int8.to_dict()) == int8
    assert read_identity(identity_metadata(int8)) == int8
    upper = dataclasses.replace(fp32, weights_format="int8-upper@18")
    assert "serve --weights int8-upper`" in (upper.mismatch(int8) or "")  # the flag, no "@18"
    assert "--weights int8`" in (int8.mismatch(upper) or "")


def test_metadata_entries_round_trip() -> None:
    ident = FeatureIdentity("gemma-3-270m", "0123456789abcdef", 11)
    meta = identity_metadata(ident)
    assert meta == {
        META_SOURCE_MODEL: "gemma-3-270m",
        META_SOURCE_SHA256: "0123456789abcdef",
        META_LAYER: "11",
    }
    assert read_identity(meta) == ident
    assert identity_metadata(None) == {} and read_identity({}) is None
    assert read_identity({META_LAYER: "0"}) == FeatureIdentity(layer_index=0)
    assert read_identity({META_SOURCE_FORMAT: "int8"}) == FeatureIdentity(weights_format="int8")


# ------------------------------------------------------------------ what the client fills in


def test_central_reports_the_weights_checksum_and_a_generation_carries_it(
    client, generation, tiny_checkpoint
) -> None:
    info = client.info()
    assert info.model_sha256 == weights_sha256(tiny_checkpoint)
    assert len(info.model_sha256) == 64 and int(info.model_sha256, 16) >= 0
    assert info.weights_format in ("int8", "float32")  # the tiny model's, per machine
    format_ = info.weights_format
    assert generation.identity == FeatureIdentity(
        info.model_name, info.model_sha256, TINY_LAYER, ("last",), weights_format=format_
    )
    both = client.generate("Hi", k=2, max_new_tokens=4, layer=1, vectors=("last", "mean"))
    assert both.identity is not None
    assert (both.identity.layer_index, both.identity.parts) == (1, ("last", "mean"))
    every = client.generate("Hi", k=2, max_new_tokens=4, vectors=("mean", "embedding_mean"))
    assert every.identity is not None and every.identity.parts == ("mean", "embedding_mean")
    given = client.response_vectors("Hi", ["red", ""], vectors=("last", "embedding_mean"))
    assert given.identity == FeatureIdentity(
        info.model_name,
        info.model_sha256,
        TINY_LAYER,
        ("last", "embedding_mean"),
        weights_format=format_,
    )


def test_the_async_client_fills_the_same_identity(tiny_server, generation) -> None:
    async def run() -> Generation:
        async with AsyncCentralClient(f"127.0.0.1:{tiny_server.port}", timeout=60) as central:
            return await central.generate("Write a poem", k=3, max_new_tokens=4, seed=0)

    assert asyncio.run(run()).identity == generation.identity


@pytest.mark.slow  # several seconds; CI runs it
def test_a_server_restarted_with_another_model_is_asked_again(tiny_model) -> None:
    """The client keeps Info, but drops it when the server is lost."""
    first = start_server(ServerConfig(port=0), loaded=tiny_model)
    port = first.port
    other = dataclasses.replace(tiny_model, name="other-model", weights_sha256="ab" * 32)
    with CentralClient(f"127.0.0.1:{port}", timeout=30) as central:
        before = central.generate("Hi", k=1, max_new_tokens=2)
        first.stop(grace=0)
        with pytest.raises(ConnectionLostError):
            central.generate("Hi", k=1, max_new_tokens=2)
        second = start_server(ServerConfig(port=port), loaded=other)
        try:
            central.wait_ready(timeout=30)  # past the channel's reconnect back-off
            after = central.generate("Hi", k=1, max_new_tokens=2)
        finally:
            second.stop(grace=0)
    assert before.identity is not None and before.identity.model_sha256 != "ab" * 8
    assert after.identity is not None
    assert (after.identity.model_name, after.identity.model_sha256) == ("other-model", "ab" * 8)


# ------------------------------------------------------------------ checks when ranking


def test_a_ranker_trained_on_these_features_ranks_them(generation) -> None:
    data = _export(generation.identity)
    session = RankingSession(data)
    assert session.identity == dataclasses.replace(generation.identity, parts=("last",))
    ranker = Ranker(data)
    assert ranker.identity == session.identity
    ranking = ranker.rank_generation(generation)
    assert sorted(ranking.order.tolist()) == [0, 1, 2]
    expected = session.score(generation.instruction, generation.features)
    np.testing.assert_array_equal(ranking.scores, expected)


def test_a_ranker_exported_on_another_weight_format_is_refused(generation) -> None:
    served = generation.identity.weights_format
    other = "float32" if served == "int8" else "int8"
    ranker = Ranker(_export(dataclasses.replace(generation.identity, weights_format=other)))
    assert ranker.identity is not None and ranker.identity.weights_format == other
    with pytest.raises(FeatureError) as raised:
        ranker.rank_generation(generation)
    assert f"these come from {served} weights of the same model" in str(raised.value)
    assert "ranker-central serve --weights" in str(raised.value)


def test_features_of_another_layer_are_refused_naming_both(client, generation) -> None:
    ranker = Ranker(_export(dataclasses.replace(generation.identity, layer_index=3)))
    name = generation.identity.model_name
    with pytest.raises(FeatureError) as raised:
        ranker.rank_generation(generation)
    message = str(raised.value)
    assert message.startswith(f"ranker was trained on features of {name} (sha ")
    assert "layer 3; these features come from" in message and message.endswith("layer 2")
    with pytest.raises(FeatureError, match="layer 3"):
        ranker.session.score_generation(generation)
    at_three = client.generate("Write a poem", k=3, max_new_tokens=4, seed=0, layer=3)
    assert ranker.rank_generation(at_three).scores.shape == (3,)


def test_another_model_of_the_same_width_is_refused(generation) -> None:
    gemma = FeatureIdentity("gemma-3-270m", "f" * 64, TINY_LAYER)
    ranker = Ranker(_export(gemma))
    ours = generation.identity.model_sha256
    pattern = rf"gemma-3-270m \(sha f{{16}}\) layer 2; these features come from .*{ours}"
    with pytest.raises(FeatureError, match=pattern):
        ranker.rank_generation(generation)


def test_a_ranker_that_records_nothing_accepts_any_generation(client, generation) -> None:
    session = RankingSession(_export(None))  # as every ranker saved before identities
    assert session.identity is None
    other_layer = client.generate("Write a poem", k=3, max_new_tokens=4, seed=0, layer=1)
    for g in (generation, other_layer):
        assert session.score_generation(g).shape == (3,)


def test_a_generation_built_by_hand_is_not_checked(generation) -> None:
    session = RankingSession(_export(FeatureIdentity("other", "e" * 16, 9)))
    by_hand = Generation("p", generation.instruction, generation.candidates)
    assert by_hand.identity is None
    assert session.score_generation(by_hand).shape == (3,)


def test_a_ranker_reading_mean_vectors_says_how_to_get_them(generation) -> None:
    data = _export(generation.identity, vectors=("last", "mean"))
    with pytest.raises(FeatureError, match=r"ask central for vectors=\['last', 'mean'\]"):
        RankingSession(data).score_generation(generation)


def test_features_without_the_embedding_mean_a_ranker_reads_are_refused_naming_the_option(
    client,
) -> None:
    reads = FeatureIdentity(parts=("last", "embedding_mean", "signals"))
    plain = client.generate("Hi", k=2, max_new_tokens=4, seed=0)
    assert plain.identity is not None
    message = reads.mismatch(plain.identity)
    assert message is not None
    assert "ask central for vectors=['last', 'embedding_mean']" in message
    both = client.generate("Hi", k=2, max_new_tokens=4, vectors=("last", "embedding_mean"))
    assert both.identity is not None and reads.mismatch(both.identity) is None


# ------------------------------------------------------------------ what the file says


def test_metadata_and_input_doc_strings_describe_the_inputs(generation) -> None:
    data = _export(generation.identity, vectors=("last", "mean"), signals=True)
    proto = onnx.load_from_string(data)
    meta = {p.key: p.value for p in proto.metadata_props}
    ident = generation.identity
    assert meta[META_SOURCE_MODEL] == ident.model_name
    assert meta[META_SOURCE_SHA256] == ident.model_sha256 and meta[META_LAYER] == "2"
    recorded = read_identity(meta)
    assert recorded is not None
    assert recorded.parts == ("last", "mean", "signals")
    assert recorded.signals_version == SIGNALS_VERSION
    specs = json.loads(meta[META_INPUTS])
    assert [s["name"] for s in specs] == [i.name for i in proto.graph.input]
    assert specs[:2] == [
        {"name": "instruction", "dtype": "float32", "shape": ["batch", TINY_D]},
        {"name": "candidates", "dtype": "float32", "shape": ["batch", "k", TINY_D]},
    ]
    docs = {i.name: i.doc_string for i in proto.graph.input}
    assert set(docs) == {"instruction", "candidates", "mean_candidates", "signals"}
    for name in ("instruction", "candidates", "mean_candidates"):
        assert docs[name].startswith(f"{name}: float32 [batch, ")
        assert f"from {ident.describe()}" in docs[name] and WIDEN in docs[name]
    assert "signal_names" in docs["signals"] and WIDEN not in docs["signals"]


def test_an_export_without_identity_still_documents_its_inputs() -> None:
    proto = onnx.load_from_string(_export(None))
    docs = [i.doc_string for i in proto.graph.input]
    assert docs[0] == (
        "instruction: float32 [batch, 64]; the hidden state of the prompt's last token; "
        "central sends features as fp16 by default: widen them to float32 before feeding"
    )
    keys = {p.key for p in proto.metadata_props}
    assert META_INPUTS in keys and not {META_SOURCE_SHA256, META_LAYER} & keys


def test_a_swift_export_records_the_model_but_not_a_layer(generation) -> None:
    from edge.swift.export import export_swift_onnx
    from edge.swift.train import build_swift

    data = export_swift_onnx(build_swift(8, layers=[3, 4], seed=0), identity=generation.identity)
    proto = onnx.load_from_string(data)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta[META_SOURCE_SHA256] == generation.identity.model_sha256
    assert META_LAYER not in meta  # the head's layers are in its config
    docs = {i.name: i.doc_string for i in proto.graph.input}
    assert docs["tokens"].startswith("tokens: float32 [batch, k, t, 8]") and WIDEN in docs["tokens"]
    assert docs["mask"].startswith("mask: float32 [batch, k, t]") and WIDEN not in docs["mask"]
