from __future__ import annotations

import pytest
import torch

from edge.app.checkpoint import Checkpoint
from edge.training.rankers import build_ranker, count_parameters, from_checkpoint, make_config


@pytest.mark.parametrize("kind", ["list", "point"])
def test_under_half_a_million_parameters_at_4096(kind: str) -> None:
    model = build_ranker(make_config(kind, 4096))
    assert model.num_parameters() == count_parameters(model)
    assert 200_000 < model.num_parameters() < 500_000


@pytest.mark.parametrize("kind", ["list", "point"])
@pytest.mark.parametrize("relevance", ["cosine", "linear"])
def test_forward_shape_any_batch_and_k(kind: str, relevance: str) -> None:
    model = build_ranker(make_config(kind, 16, relevance=relevance))
    for b, k in [(1, 1), (3, 7)]:
        scores = model(torch.randn(b, 16), torch.randn(b, k, 16))
        assert scores.shape == (b, k)
        assert torch.isfinite(scores).all()


def test_same_seed_same_weights_different_seed_differs() -> None:
    a, b, c = (build_ranker(make_config("list", 16), seed=s) for s in (5, 5, 6))
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name
    assert any(not torch.equal(x, y) for x, y in zip(a.parameters(), c.parameters(), strict=True))


def test_point_scores_do_not_depend_on_other_candidates_but_list_scores_do() -> None:
    inst, cand = torch.randn(1, 16), torch.randn(1, 4, 16)
    other = cand.clone()
    other[0, 3] = torch.randn(16)
    point = build_ranker(make_config("point", 16)).eval()
    lst = build_ranker(make_config("list", 16)).eval()
    assert torch.allclose(point(inst, cand)[0, :3], point(inst, other)[0, :3])
    assert not torch.allclose(lst(inst, cand)[0, :3], lst(inst, other)[0, :3])


@pytest.mark.parametrize("kind", ["list", "point"])
def test_checkpoint_round_trip_through_bytes(kind: str) -> None:
    model = build_ranker(make_config(kind, 16, hidden_size=8), seed=3).eval()
    restored = from_checkpoint(Checkpoint.from_bytes(model.to_checkpoint().to_bytes())).eval()
    x = (torch.randn(2, 16), torch.randn(2, 5, 16))
    assert restored.config == model.config
    assert torch.equal(model(*x), restored(*x))


def test_unknown_kind_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown ranker kind"):
        make_config("tree", 16)
