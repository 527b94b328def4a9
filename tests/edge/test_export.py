from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from edge import ExportError
from edge._onnx_meta import META_CONFIG, META_FEATURE_SIZE, META_FORMAT, META_KIND
from edge.export import check_parity, export_onnx
from edge.rankers import RankerModule
from edge.runtime import RankingSession


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
