from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from edge import ExportError
from edge.runtime.onnx_meta import META_CONFIG, META_FEATURE_SIZE, META_FORMAT, META_KIND
from edge.runtime.scoring import RankingSession
from edge.training.export import check_parity, export_onnx
from edge.training.rankers import RankerModule


@pytest.mark.parametrize("fixture", ["list_ranker", "point_ranker"])
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
