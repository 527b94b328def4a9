from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from edge import ExportError, FeatureError
from edge.runtime.onnx_meta import (
    META_CONFIG,
    META_FEATURE_SIZE,
    META_FORMAT,
    META_KIND,
    META_REPRESENTATION,
    META_SIGNAL_NAMES,
    META_SIGNALS_VERSION,
)
from edge.runtime.scoring import RankingSession
from edge.runtime.signals import SIGNAL_NAMES, SIGNALS_VERSION, candidate_signals
from edge.runtime.types import Candidate, Generation
from edge.training.export import check_parity, export_onnx
from edge.training.rankers import RankerModule


@pytest.mark.parametrize("fixture", ["list_ranker", "point_ranker"])
@pytest.mark.slow  # several seconds; CI runs it
def test_dynamo_export_matches_torch_at_several_k(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    model: RankerModule = request.getfixturevalue(fixture)
    data = export_onnx(model, exporter="dynamo")
    report = check_parity(model, data, ks=(2, 5, 17), batch=3)
    assert set(report.max_abs_diff) == {2, 5, 17}
    assert report.ok and max(report.max_abs_diff.values()) < 1e-4
    session = RankingSession.load(data)
    assert session.score(np.ones(32, np.float32), np.ones((1, 32), np.float32)).shape == (1,)


def test_the_default_export_is_the_fast_tracer(point_ranker: RankerModule) -> None:
    """Issue 24: the default was torch.export, 7-31 s a ranker; the legacy tracer
    (0.03-0.1 s, benchmarks/export_speed.py) gives the same graph bytes."""
    assert export_onnx(point_ranker) == export_onnx(point_ranker, exporter="torchscript")


@pytest.mark.slow  # torch.export takes seconds a graph
@pytest.mark.parametrize("kind", ["list", "point"])
def test_the_default_and_torch_export_graphs_score_identically(kind: str) -> None:
    from edge.training.rankers import build_ranker, recommended_config

    model = build_ranker(recommended_config(kind, 32), seed=3)
    fast, slow = (RankingSession.load(export_onnx(model, exporter=e)) for e in ("auto", "dynamo"))
    rng = np.random.default_rng(0)
    for k in (1, 3, 8):
        inputs = {
            "candidates": rng.standard_normal((k, 32)).astype(np.float32),
            "mean_candidates": rng.standard_normal((k, 32)).astype(np.float32),
            "signals": rng.standard_normal((k, len(SIGNAL_NAMES))).astype(np.float32),
        }
        instruction = rng.standard_normal(32).astype(np.float32)
        np.testing.assert_array_equal(
            fast.score(instruction, **inputs), slow.score(instruction, **inputs)
        )


def test_torchscript_export_and_metadata(point_ranker: RankerModule, tmp_path) -> None:
    path = tmp_path / "p.onnx"
    export_onnx(point_ranker, path, exporter="torchscript", metadata={"app.user": "u1"})
    assert check_parity(point_ranker, path, ks=(2, 5, 17)).ok
    meta = {p.key: p.value for p in onnx.load(path).metadata_props}
    assert meta[META_KIND] == "point"
    assert meta[META_FEATURE_SIZE] == "32"
    assert meta[META_FORMAT] == "1"
    assert meta["app.user"] == "u1"
    assert json.loads(meta[META_CONFIG])["hidden_size"] == 64


def test_parity_failure_is_reported(list_ranker: RankerModule, point_ranker) -> None:
    other = export_onnx(point_ranker, exporter="torchscript")
    with pytest.raises(ExportError, match="differ from torch"):
        check_parity(list_ranker, other, ks=(3,))


@pytest.mark.parametrize("kind", ["list", "point"])
@pytest.mark.parametrize("relevance", ["cosine", "linear"])
def test_template_export_swaps_weights_into_one_traced_graph(kind: str, relevance: str) -> None:
    import torch

    from edge.training.export import _TEMPLATES
    from edge.training.rankers import build_ranker, make_config

    # A fresh ranker: its LayerNorms hold equal values, which the exporter would merge.
    model = build_ranker(make_config(kind, 32, relevance=relevance), seed=3)
    first = export_onnx(model, exporter="template")
    assert check_parity(model, first, ks=(1, 2, 5, 17)).ok
    template = _TEMPLATES.get(model)
    assert template is not None
    with torch.no_grad():  # every weight moves, the two LayerNorms differently
        for i, tensor in enumerate(model.state_dict().values()):
            tensor.add_(0.01 * (i + 1) * torch.randn(tensor.shape))
    second = export_onnx(model, exporter="template", metadata={"app.user": "u1"})
    assert _TEMPLATES.get(model) is template  # reused, not re-traced
    assert check_parity(model, second, ks=(1, 2, 5, 17)).ok
    traced = export_onnx(model, exporter="torchscript")
    inst = np.random.default_rng(0).standard_normal((2, 32)).astype(np.float32)
    cand = np.random.default_rng(1).standard_normal((2, 6, 32)).astype(np.float32)
    np.testing.assert_allclose(
        RankingSession.load(second).score_batch(inst, cand),
        RankingSession.load(traced).score_batch(inst, cand),
        atol=1e-4,
    )
    meta = {p.key: p.value for p in onnx.load_from_string(second).metadata_props}
    assert meta[META_KIND] == kind and meta["app.user"] == "u1"


def test_parity_tolerance_scales_with_scores(point_ranker: RankerModule) -> None:
    data = export_onnx(point_ranker, exporter="torchscript")
    report = check_parity(point_ranker, data, ks=(2,), atol=0.0, rtol=1e-3)
    assert report.tolerance(2) == pytest.approx(1e-3 * report.max_abs_score[2])
    assert report.ok
    with pytest.raises(ExportError, match="rtol"):
        check_parity(point_ranker, data, ks=(2,), atol=-1.0)


def test_export_replaces_the_file_atomically_and_durably(
    point_ranker: RankerModule, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    path = tmp_path / "models" / "p.onnx"
    path.parent.mkdir()
    path.write_bytes(b"the previous version")
    synced: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    data = export_onnx(point_ranker, path, exporter="torchscript")
    assert path.read_bytes() == data
    assert synced, "the exported file was not fsynced"
    assert sorted(p.name for p in path.parent.iterdir()) == ["p.onnx"]  # no temp file left


# -- representation v2: graphs over several named inputs ----------------------------------
_FULL = {"vectors": ("last", "mean"), "signals": True}


@pytest.mark.parametrize(
    ("kind", "exporter"),
    # dynamo takes ~15 s a graph on 2 cores: one kind suffices for it
    [("list", "dynamo"), *((k, e) for k in ("list", "point") for e in ("torchscript", "template"))],
)
@pytest.mark.slow  # several seconds; CI runs it
def test_a_multi_part_graph_declares_exactly_its_inputs_and_matches_torch(
    kind: str, exporter: str
) -> None:
    from edge.training.rankers import build_ranker, make_config

    model = build_ranker(make_config(kind, 32, **_FULL), seed=5)
    model.fit_signal_scaling(np.random.default_rng(0).normal(3.0, 10.0, (40, len(SIGNAL_NAMES))))
    data = export_onnx(model, exporter=exporter)  # type: ignore[arg-type]
    graph = onnx.load_from_string(data)
    inputs = [(i.name, [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim])
              for i in graph.graph.input]  # fmt: skip
    assert inputs == [
        ("instruction", ["batch", 32]),
        ("candidates", ["batch", "k", 32]),
        ("mean_candidates", ["batch", "k", 32]),
        ("signals", ["batch", "k", len(SIGNAL_NAMES)]),
    ]
    meta = {p.key: p.value for p in graph.metadata_props}
    assert json.loads(meta[META_REPRESENTATION]) == ["last", "mean", "signals"]
    assert meta[META_SIGNALS_VERSION] == str(SIGNALS_VERSION)
    assert json.loads(meta[META_SIGNAL_NAMES]) == list(SIGNAL_NAMES)
    assert json.loads(meta[META_CONFIG])["vectors"] == ["last", "mean"]
    report = check_parity(model, data, ks=(1, 2, 5, 17), batch=3)
    assert report.ok and max(report.max_abs_diff.values()) < 1e-4
    session = RankingSession.load(data)
    assert session.input_names == ("instruction", "candidates", "mean_candidates", "signals")
    assert session.signals_version == SIGNALS_VERSION
    with pytest.raises(FeatureError, match="ranker input 'mean_candidates' is missing"):
        session.score(np.ones(32, np.float32), np.ones((2, 32), np.float32))


def test_a_paper_graph_records_its_one_part_and_no_signals(point_ranker: RankerModule) -> None:
    meta = {
        p.key: p.value
        for p in onnx.load_from_string(
            export_onnx(point_ranker, exporter="torchscript")
        ).metadata_props
    }
    assert json.loads(meta[META_REPRESENTATION]) == ["last"]
    assert META_SIGNALS_VERSION not in meta and META_SIGNAL_NAMES not in meta


@pytest.mark.parametrize("kind", ["list", "point"])
def test_a_mean_only_graph_still_takes_the_last_token_input(kind: str) -> None:
    from edge.training.rankers import build_ranker, make_config

    model = build_ranker(make_config(kind, 32, vectors=("mean",)))
    for exporter in ("torchscript", "template"):
        data = export_onnx(model, exporter=exporter)  # type: ignore[arg-type]
        session = RankingSession.load(data)  # refuses a graph without "candidates"
        assert session.input_names == ("instruction", "candidates", "mean_candidates")
        assert check_parity(model, data, ks=(3,)).ok


def _generation(d: int, k: int, seed: int) -> Generation:
    """A generation as CentralClient returns it with mean vectors, log-probs and entropies."""
    rng = np.random.default_rng(seed)
    texts = ["Yes!", "- one\n- two", "", "It depends, doesn't it?", "42", "Sure. " * 30][:k]
    cands = tuple(
        Candidate(
            i,
            text,
            tuple(range(len(text.split()) + 1)),
            "length" if i == 5 else "eos",
            float(-rng.uniform(0.5, 20.0)),
            rng.standard_normal(d).astype(np.float32),
            mean_feature=rng.standard_normal(d).astype(np.float32),
            mean_entropy=None if i == 3 else float(rng.uniform(0.1, 3.0)),
        )
        for i, text in enumerate(texts)
    )
    return Generation("a prompt", rng.standard_normal(d).astype(np.float32), cands)


@pytest.mark.parametrize("kind", ["list", "point"])
def test_an_exported_last_mean_signals_ranker_ranks_generations_without_torch(
    kind: str, tmp_path: Path
) -> None:
    """edge.Ranker feeds the graph from a Generation: mean vectors and computed signals."""
    import torch

    from edge import Ranker
    from edge.training import TrainConfig, planted_dataset, train
    from edge.training.rankers import build_ranker, make_config

    d = 32
    model = build_ranker(make_config(kind, d, **_FULL), seed=2)
    data = planted_dataset(20, 6, d, mean=True, signals=len(SIGNAL_NAMES), seed=3)
    train(model, data, TrainConfig(epochs=2))  # fits the signals' standardisation too
    assert model.signals_fitted
    path = tmp_path / "ranker.onnx"
    export_onnx(model, path, exporter="torchscript")
    ranker = Ranker(path)
    for seed in range(3):
        generation = _generation(d, 6, seed)
        ranking = ranker.rank_generation(generation)
        cands = generation.candidates
        with torch.no_grad():
            expected = model(
                torch.from_numpy(generation.instruction)[None],
                torch.from_numpy(generation.features)[None],
                torch.from_numpy(np.stack([c.mean_feature for c in cands]))[None],  # type: ignore[misc]
                torch.from_numpy(candidate_signals(cands))[None],
            )[0].numpy()
        np.testing.assert_allclose(ranking.scores, expected, atol=1e-4)
        assert ranking.best == int(np.argmax(expected))
    # a candidate without its mean vector (an older server) is refused by name
    old = Generation(
        "p", generation.instruction, (dataclasses.replace(cands[0], mean_feature=None),)
    )
    with pytest.raises(FeatureError, match="candidate 0 has no mean_feature"):
        ranker.rank_generation(old)


def test_a_user_head_composes_with_a_multi_part_global_ranker() -> None:
    """The torch-free personal learner's head sits on top of the exported graph."""
    from edge.app.taste import TasteHead, compose_ranker
    from edge.training.rankers import build_ranker, make_config

    d = 32
    model = build_ranker(make_config("list", d, **_FULL), seed=6)
    global_model = export_onnx(model, exporter="torchscript")
    rng = np.random.default_rng(0)
    weights = {
        "last": rng.standard_normal(d).astype(np.float32),
        "mean": rng.standard_normal(d).astype(np.float32),
        "signals": rng.standard_normal(len(SIGNAL_NAMES)).astype(np.float32),
    }
    head = TasteHead(weights)  # type: ignore[arg-type]
    personal = RankingSession.load(compose_ranker(head, global_model))
    assert personal.input_names == RankingSession.load(global_model).input_names
    generation = _generation(d, 6, seed=4)
    cands = generation.candidates
    mean = np.stack([c.mean_feature for c in cands])  # type: ignore[misc]
    signals = candidate_signals(cands)
    expected = RankingSession.load(global_model).score_generation(generation) + head.score(
        generation.features, mean, signals
    )
    np.testing.assert_allclose(personal.score_generation(generation), expected, atol=1e-4)
