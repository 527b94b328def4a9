from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from edge import CorruptModelError, FeatureError, RankerError
from edge.runtime.scoring import Ranker, RankingSession
from edge.training.export import export_onnx
from edge.training.rankers import RankerModule, build_ranker, make_config

D = 32
REPO = Path(__file__).resolve().parents[3]


def _inputs(k: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal(D).astype(np.float32), rng.standard_normal((k, D)).astype(np.float32)


def test_scores_match_torch_and_rank_orders_best_first(
    onnx_file: Path, list_ranker: RankerModule
) -> None:
    session = RankingSession.load(onnx_file)
    assert session.feature_size == D and session.kind == "list"
    inst, cand = _inputs(7)
    scores = session.score(inst, cand)
    with torch.no_grad():
        expected = list_ranker.eval()(torch.from_numpy(inst)[None], torch.from_numpy(cand)[None])
    np.testing.assert_allclose(scores, expected.numpy()[0], atol=1e-4)
    ranking = session.rank(inst, cand)
    assert ranking.best == int(np.argmax(scores))
    assert np.all(np.diff(scores[ranking.order]) <= 0)


def test_loads_from_bytes_and_scores_batches(onnx_file: Path) -> None:
    session = RankingSession.load(onnx_file.read_bytes())
    inst, cand = _inputs(4)
    batch = session.score_batch(np.stack([inst, inst]), np.stack([cand, cand]))
    assert batch.shape == (2, 4)
    np.testing.assert_allclose(batch[0], session.score(inst, cand), atol=1e-6)


def test_float16_is_accepted(onnx_file: Path) -> None:
    session = RankingSession.load(onnx_file)
    inst, cand = _inputs()
    got = session.score(inst.astype(np.float16), cand.astype(np.float16))
    ref = session.score(inst.astype(np.float16).astype(np.float32), cand.astype(np.float16))
    np.testing.assert_array_equal(got, ref)


def test_wrong_size_dtype_and_non_finite_raise_feature_error(onnx_file: Path) -> None:
    session = RankingSession.load(onnx_file)
    inst, cand = _inputs()
    with pytest.raises(FeatureError, match="feature has 16 values, ranker expects 32"):
        session.score(inst, cand[:, :16])
    with pytest.raises(FeatureError, match="has 31 values, ranker expects 32"):
        session.score(inst[:31], cand)
    with pytest.raises(FeatureError, match="dtype int64"):
        session.score(inst.astype(np.int64), cand)
    bad = cand.copy()
    bad[2, 3] = np.nan
    with pytest.raises(FeatureError, match=r"nan at index \(2, 3\)"):
        session.score(inst, bad)
    bad_inst = inst.copy()
    bad_inst[0] = np.inf
    with pytest.raises(FeatureError, match="inf"):
        session.score(bad_inst, cand)
    with pytest.raises(FeatureError, match="empty"):
        session.score(inst, cand[:0])
    with pytest.raises(FeatureError, match="feature has 16 values"):
        session.score_batch(inst[None, :16], cand[None, :, :16])
    # The session still works after rejecting bad input.
    assert session.score(inst, cand).shape == (5,)


def test_corrupt_and_truncated_onnx_raise_corrupt_model_error(
    onnx_file: Path, tmp_path: Path
) -> None:
    data = onnx_file.read_bytes()
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptModelError, match=r"truncated\.onnx"):
        RankingSession.load(truncated)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00not an onnx model" * 10)
    with pytest.raises(CorruptModelError, match=r"garbage\.onnx"):
        RankingSession.load(garbage)
    with pytest.raises(CorruptModelError, match="empty"):
        RankingSession.load(b"")


def test_hot_swap_and_rollback(onnx_file: Path, tmp_path: Path) -> None:
    other = build_ranker(make_config("point", D), seed=9)
    v2 = export_onnx(other, exporter="torchscript")
    ranker = Ranker(onnx_file, version=1)
    inst, cand = _inputs()
    s1 = ranker.score(inst, cand)
    assert ranker.swap(v2, version=2) == 1
    assert ranker.version == 2 and ranker.session.kind == "point"
    assert not np.allclose(ranker.score(inst, cand), s1)
    # A corrupt new version is refused and the active one keeps serving.
    with pytest.raises(CorruptModelError):
        ranker.swap(b"broken", version=3)
    assert ranker.version == 2
    assert ranker.rollback() == 1
    np.testing.assert_array_equal(ranker.score(inst, cand), s1)
    with pytest.raises(RankerError, match="nothing to roll back"):
        ranker.rollback()


def test_swap_while_scoring_from_threads(onnx_file: Path) -> None:
    v2 = export_onnx(build_ranker(make_config("point", D), seed=9), exporter="torchscript")
    ranker = Ranker(onnx_file, version=1)
    inst, cand = _inputs()
    valid = {1: ranker.score(inst, cand)}
    ranker.swap(v2, version=2)
    valid[2] = ranker.score(inst, cand)
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        try:
            while not stop.is_set():
                scores = ranker.score(inst, cand)
                assert any(np.array_equal(scores, v) for v in valid.values())
        except BaseException as exc:  # surfaced in the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for i in range(50):
        if i % 2:
            ranker.swap(v2, version=2)
        else:
            ranker.rollback()
    stop.set()
    for t in threads:
        t.join()
    assert not errors


_NO_TORCH = textwrap.dedent(
    """
    import importlib.abc, sys

    class BlockTorch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ImportError("torch is blocked in this test")
            return None

    sys.meta_path.insert(0, BlockTorch())
    try:
        import torch  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("torch import was not blocked")

    import numpy as np
    import edge
    from edge import Ranker, Registry, FeedbackStore

    ranker = Ranker(sys.argv[1])
    rng = np.random.default_rng(0)
    ranking = ranker.rank(rng.standard_normal(32).astype(np.float32),
                          rng.standard_normal((6, 32)).astype(np.float32))
    assert ranking.scores.shape == (6,)
    try:
        edge.Learner
    except ImportError:
        pass
    else:
        raise SystemExit("edge.Learner imported without torch")
    assert "torch" not in sys.modules
    print("best", ranking.best)
    """
)


def test_ranking_works_where_torch_cannot_be_imported(onnx_file: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-c", _NO_TORCH, str(onnx_file)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("best ")


def _generation(k: int, seed: int = 0, mean: bool = True):
    from edge.runtime.types import Candidate, Generation

    rng = np.random.default_rng(seed)
    cands = tuple(
        Candidate(i, f"answer {i}!" * (i + 1), (1,) * (i + 1), "eos", -1.0 * i,
                  rng.standard_normal(D).astype(np.float32),
                  mean_feature=rng.standard_normal(D).astype(np.float32) if mean else None)
        for i in range(k)
    )  # fmt: skip
    return Generation("p", rng.standard_normal(D).astype(np.float32), cands)


def test_a_graph_without_v2_inputs_ranks_generations_and_ignores_extra_arrays(
    onnx_file: Path,
) -> None:
    ranker = Ranker(onnx_file)
    assert ranker.session.extra_inputs == {}
    assert ranker.session.input_names == ("instruction", "candidates")
    g = _generation(5, mean=False)  # an older server: no mean vectors, and none needed
    plain = ranker.rank(g.instruction, g.features)
    ranking = ranker.rank_generation(g)
    np.testing.assert_array_equal(ranking.scores, plain.scores)
    np.testing.assert_array_equal(ranking.order, plain.order)
    extra = ranker.score(g.instruction, g.features, signals=np.zeros((5, 3), np.float32))
    np.testing.assert_array_equal(extra, plain.scores)


def test_the_ranker_feeds_declared_inputs_through_swaps(onnx_file: Path) -> None:
    from edge.app.taste import TasteHead, compose_ranker
    from edge.runtime.signals import candidate_signals

    rng = np.random.default_rng(3)
    weights = {"last": np.zeros(D, np.float32), "mean": rng.standard_normal(D).astype(np.float32)}
    head = TasteHead(weights)  # type: ignore[arg-type]
    ranker = Ranker(onnx_file, version=1)
    ranker.swap(compose_ranker(head, onnx_file.read_bytes()), version=2)
    assert ranker.session.input_names == ("instruction", "candidates", "mean_candidates")
    g = _generation(4)
    means = np.stack([c.mean_feature for c in g.candidates])
    base = RankingSession.load(onnx_file).score(g.instruction, g.features)
    np.testing.assert_allclose(ranker.score_generation(g), base + means @ weights["mean"],
                               rtol=1e-5, atol=1e-5)  # fmt: skip
    batch = ranker.score_batch(g.instruction[None], g.features[None], mean_candidates=means[None])
    np.testing.assert_allclose(batch[0], ranker.score_generation(g), atol=1e-6)
    with pytest.raises(FeatureError, match="'mean_candidates' is missing"):
        ranker.rank(g.instruction, g.features, signals=candidate_signals(g.candidates))
    assert ranker.rollback() == 1
    assert ranker.rank_generation(_generation(4, mean=False)).scores.shape == (4,)
