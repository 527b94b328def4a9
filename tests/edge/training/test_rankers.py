from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from edge import ConfigError
from edge.app.checkpoint import Checkpoint
from edge.runtime.signals import SIGNAL_NAMES, SIGNALS_VERSION
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
    with pytest.raises(ConfigError, match="unknown ranker kind"):
        make_config("tree", 16)


# -- representation v2: rankers over several parts of a candidate -------------------------
# The state_dict names of the paper's rankers, as every checkpoint before v2 stored them.
_PAPER_KEYS = {
    "list": {
        "proj.weight", "proj.bias", "block.norm1.weight", "block.norm1.bias",
        "block.qkv.weight", "block.qkv.bias", "block.out.weight", "block.out.bias",
        "block.norm2.weight", "block.norm2.bias", "block.ffn.0.weight", "block.ffn.0.bias",
        "block.ffn.2.weight", "block.ffn.2.bias",
    },
    "point": {
        "proj.weight", "proj.bias", "mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias",
    },
}  # fmt: skip


def _parts(b: int, k: int, d: int = 16, s: int = len(SIGNAL_NAMES), seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    return {
        "instruction": torch.randn(b, d, generator=gen),
        "candidates": torch.randn(b, k, d, generator=gen),
        "mean_candidates": torch.randn(b, k, d, generator=gen),
        "signals": torch.randn(b, k, s, generator=gen),
    }


@pytest.mark.parametrize("kind", ["list", "point"])
def test_a_checkpoint_from_before_v2_loads_as_a_last_token_ranker(kind: str) -> None:
    model = build_ranker(make_config(kind, 16), seed=4).eval()
    assert set(model.state_dict()) == _PAPER_KEYS[kind]
    assert model.input_names == ("instruction", "candidates") and model.parts == ("last",)
    ckpt = model.to_checkpoint()
    old_config = {k: v for k, v in ckpt.config.items() if k not in _V2_FIELDS}  # as v1 wrote it
    old = Checkpoint(kind=kind, config=old_config, weights=ckpt.weights)
    restored = from_checkpoint(Checkpoint.from_bytes(old.to_bytes())).eval()
    x = _parts(2, 5)
    assert restored.config == model.config and restored.parts == ("last",)
    assert torch.equal(restored(x["instruction"], x["candidates"]), model(**_only(model, x)))


_V2_FIELDS = {"vectors", "signal_names", "signals_version", "signal_prior"}


def _only(model: object, x: dict) -> dict:
    return {name: x[name] for name in model.input_names}  # type: ignore[attr-defined]


@pytest.mark.parametrize("kind", ["list", "point"])
def test_each_part_has_its_own_input_layers_and_moves_the_scores(kind: str) -> None:
    config = make_config(kind, 16, vectors=("last", "mean"), signals=True)
    assert config.parts == ("last", "mean", "signals")  # type: ignore[union-attr]
    model = build_ranker(config, seed=0).eval()
    keys = set(model.state_dict())
    assert {"proj.weight", "proj_mean.weight", "norms.last.weight", "norms.mean.weight"} <= keys
    assert {"signal_shift", "signal_scale", "signal_proj.weight", "signal_direct.weight"} <= keys
    assert model.state_dict()["signal_direct.weight"].shape == (1, len(SIGNAL_NAMES))
    x = _parts(2, 5)
    base = model(**x)
    assert base.shape == (2, 5) and torch.isfinite(base).all()
    for name in ("candidates", "mean_candidates", "signals"):
        moved = dict(x, **{name: x[name] + torch.randn(x[name].shape)})
        assert not torch.allclose(model(**moved), base), f"{name} does not reach the score"
    with pytest.raises(ValueError, match="pass mean_candidates="):
        model(x["instruction"], x["candidates"], signals=x["signals"])
    # a ranker reading mean vectors alone still declares the last-token input, unread
    mean_only = build_ranker(make_config(kind, 16, vectors=("mean",))).eval()
    assert mean_only.input_names == ("instruction", "candidates", "mean_candidates")
    y = _only(mean_only, x)
    other = dict(y, candidates=torch.randn(2, 5, 16))
    assert torch.equal(mean_only(**y), mean_only(**other))


@pytest.mark.parametrize("kind", ["list", "point"])
@pytest.mark.parametrize("relevance", ["cosine", "linear"])
def test_with_a_prior_an_untrained_ranker_ranks_by_the_highest_mean_logprob(
    kind: str, relevance: str
) -> None:
    config = make_config(
        kind,
        16,
        vectors=("last", "mean"),
        signals=True,
        signal_prior={"mean_logprob": 1.0},
        relevance=relevance,
    )
    model = build_ranker(config, seed=1).eval()
    x = _parts(3, 9, seed=2)
    scores = model(**x)
    logprob = x["signals"][..., SIGNAL_NAMES.index("mean_logprob")]
    assert torch.equal(scores.argsort(-1), logprob.argsort(-1))
    # whatever the vectors say
    y = dict(x, candidates=100 * torch.randn(3, 9, 16), mean_candidates=torch.randn(3, 9, 16))
    assert torch.equal(model(**y).argsort(-1), logprob.argsort(-1))
    # and after the standardisation is fit on data (a positive scale keeps the order)
    model.fit_signal_scaling(
        np.abs(np.random.default_rng(0).normal(size=(50, len(SIGNAL_NAMES)))) * 7 + 3
    )
    assert model.signals_fitted
    assert torch.equal(model(**x).argsort(-1), logprob.argsort(-1))
    # without the prior the gate is open and the vectors count
    plain = build_ranker(make_config(kind, 16, signals=True, relevance=relevance), seed=1).eval()
    assert float(plain.state_dict()["vector_gate"]) == 1.0
    assert float(model.state_dict()["vector_gate"]) == 0.0


def test_representation_fields_are_checked_and_survive_json() -> None:
    import json

    with pytest.raises(ConfigError, match="vectors must be distinct parts"):
        make_config("list", 16, vectors=("last", "last"))
    with pytest.raises(ConfigError, match="vectors must be distinct parts"):
        make_config("list", 16, vectors=())
    with pytest.raises(ConfigError, match="vectors must be distinct parts"):
        make_config("point", 16, vectors=("first",))
    with pytest.raises(ConfigError, match="go together"):
        make_config("point", 16, signal_names=("a", "b"))
    with pytest.raises(ConfigError, match=r"signals the ranker does not read: \['nope'\]"):
        make_config("point", 16, signals=True, signal_prior={"nope": 1.0})
    with pytest.raises(ConfigError, match="'swift' rankers do not read the signals part"):
        make_config("swift", 16, signals=True)
    config = make_config("list", 16, vectors=("mean", "last"), signals=True)
    assert config.vectors == ("last", "mean")  # type: ignore[union-attr]
    assert config.signal_names == SIGNAL_NAMES  # type: ignore[union-attr]
    assert config.signals_version == SIGNALS_VERSION  # type: ignore[union-attr]
    model = build_ranker(config)
    again = from_checkpoint(Checkpoint.from_bytes(model.to_checkpoint().to_bytes()))
    assert again.config == config
    assert json.loads(json.dumps(dataclasses.asdict(config)))["vectors"] == ["last", "mean"]


@pytest.mark.parametrize("kind", ["list", "point"])
def test_parameters_per_representation_at_4096(kind: str) -> None:
    """What each part costs: a mean vector a second d x 64 projection, signals a few hundred."""
    paper = build_ranker(make_config(kind, 4096)).num_parameters()
    mean = build_ranker(make_config(kind, 4096, vectors=("last", "mean"))).num_parameters()
    full = build_ranker(make_config(kind, 4096, vectors=("last", "mean"), signals=True))
    s = len(SIGNAL_NAMES)
    assert mean - paper == 4096 * 64 + 64 + 2 * 2 * 64  # proj_mean, and the two parts' norms
    assert full.num_parameters() - mean == s * 64 + 64 + s + 1  # signal_proj, direct, gate


def test_the_recommended_config_starts_as_likelihood_then_agreement() -> None:
    import numpy as np

    from edge.runtime.signals import SIGNAL_NAMES
    from edge.training import build_ranker, recommended_config

    config = recommended_config("list", 8)
    assert config.parts == ("last", "mean", "signals")
    ranker = build_ranker(config, seed=0)
    rng = np.random.default_rng(0)
    signals = np.zeros((1, 5, len(SIGNAL_NAMES)), np.float32)
    signals[0, :, SIGNAL_NAMES.index("mean_logprob")] = [-3.0, -0.5, -2.0, -1.0, -4.0]
    with torch.no_grad():
        scores = ranker(
            torch.from_numpy(rng.standard_normal((1, 8)).astype(np.float32)),
            torch.from_numpy(rng.standard_normal((1, 5, 8)).astype(np.float32)),
            torch.from_numpy(rng.standard_normal((1, 5, 8)).astype(np.float32)),
            torch.from_numpy(signals),
        )
    assert int(scores.argmax()) == 1  # untrained: the highest mean log-probability wins
