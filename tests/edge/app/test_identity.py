"""The identity of features through the app: a user's head composed over a global graph
keeps what the global graph recorded, and PersonalRanker's saved rankers record the
generations they learned from and refuse other models' and layers' (real central,
SQLite, ONNX)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import onnx
import pytest

from edge._errors import FeatureError
from edge.app.learning import IDENTITY_KEY
from edge.app.personal import PersonalRanker
from edge.app.registry import Registry
from edge.app.taste import TasteHead, TasteLearner, compose_ranker
from edge.runtime.client import CentralClient
from edge.runtime.scoring import RankingSession
from edge.runtime.signals import SIGNALS_VERSION
from edge.runtime.types import FeatureIdentity
from edge.training.export import export_onnx
from edge.training.rankers import build_ranker, make_config

D = 16
SMOL = FeatureIdentity("SmolLM2-135M-Instruct", "1a2b3c4d5e6f7a8b", 18)
GEMMA = FeatureIdentity("gemma-3-270m", "9f8e7d6c5b4a3921", 11)


def _global(identity: FeatureIdentity | None) -> bytes:
    ranker = build_ranker(make_config("point", D), seed=0)
    return export_onnx(ranker, exporter="torchscript", identity=identity)


def test_a_composed_graph_keeps_the_global_graphs_identity_and_documents_every_input() -> None:
    composed = compose_ranker(TasteHead.zeros(D), _global(SMOL))
    assert RankingSession(composed).identity == dataclasses.replace(
        SMOL, parts=("last", "mean", "signals"), signals_version=SIGNALS_VERSION
    )
    docs = {i.name: i.doc_string for i in onnx.load_from_string(composed).graph.input}
    assert set(docs) == {"instruction", "candidates", "mean_candidates", "signals"}
    assert all(doc.startswith(f"{name}: float32 [") for name, doc in docs.items())
    assert f"from {SMOL.describe()}" in docs["mean_candidates"]  # an input the head added


def test_a_head_from_another_model_or_layer_is_refused_on_the_global_graph() -> None:
    global_model = _global(SMOL)
    with pytest.raises(FeatureError, match=r"cannot put this head on the global ranker"):
        compose_ranker(TasteHead.zeros(D), global_model, identity=GEMMA)
    other_layer = dataclasses.replace(SMOL, layer_index=17)
    with pytest.raises(FeatureError, match=r"layer 18; these features come from .* layer 17"):
        compose_ranker(TasteHead.zeros(D), global_model, identity=other_layer)
    same_model_name_only = FeatureIdentity(SMOL.model_name)  # nothing checkable: accepted
    compose_ranker(TasteHead.zeros(D), global_model, identity=same_model_name_only)


def test_the_heads_identity_is_recorded_over_an_old_global_graph_and_alone() -> None:
    for global_model in (_global(None), None):
        composed = compose_ranker(TasteHead.zeros(D), global_model, identity=GEMMA)
        identity = RankingSession(composed).identity
        assert identity is not None
        assert (identity.model_sha256, identity.layer_index) == (GEMMA.model_sha256, 11)


# ------------------------------------------------------------------ PersonalRanker


@pytest.fixture()
def central(tiny_server):
    with CentralClient(f"127.0.0.1:{tiny_server.port}", timeout=60) as client:
        yield client


def _teach(user: PersonalRanker, prompts: int, first: int = 0) -> FeatureIdentity | None:
    shown = None
    for i in range(first, first + prompts):
        shown = user.generate(f"Write a poem number {i}", k=4, max_new_tokens=4, seed=i)
        user.thumbs(shown, 1, up=True)
    return shown.generation.identity if shown else None


def _recorded(user: PersonalRanker) -> FeatureIdentity | None:
    model = user.registry.load_model(user.user, user.name)
    identity = RankingSession(model).identity
    return dataclasses.replace(identity, parts=(), signals_version=None) if identity else None


def test_personal_ranker_records_what_it_learned_from_and_refuses_another_layer(
    central, tmp_path: Path
) -> None:
    user = PersonalRanker(central, tmp_path, "erin", "chat")
    shown_from = _teach(user, 2)
    assert shown_from is not None and shown_from.layer_index == 2
    assert user.learn().updated
    assert _recorded(user) == dataclasses.replace(shown_from, parts=())
    with pytest.raises(FeatureError, match=r"layer 2; these features come from .* layer 1"):
        user.generate("Write a poem", k=4, max_new_tokens=4, layer=1)
    shown = user.generate("Write a poem", k=4, max_new_tokens=4, layer=2)
    assert shown.ranker_version == 1


def test_a_later_update_without_an_identity_keeps_the_recorded_one(central, tmp_path: Path) -> None:
    user = PersonalRanker(central, tmp_path, "fred", "chat")
    shown_from = _teach(user, 2)
    assert shown_from is not None
    user.learn()
    _teach(user, 1, first=2)
    report = TasteLearner(user.store, user.registry).learn("fred", "chat")  # no identity
    assert report.updated and report.saved is not None
    recorded = FeatureIdentity.from_dict(report.saved.metadata[IDENTITY_KEY])
    assert recorded == dataclasses.replace(shown_from, parts=())
    assert _recorded(user) == dataclasses.replace(shown_from, parts=())


def test_a_new_user_on_a_global_ranker_of_another_model_is_refused(central, tmp_path: Path) -> None:
    Registry(tmp_path / "rankers").save_global("chat", _global_64(GEMMA))
    early = PersonalRanker(central, tmp_path, "gina", "chat", cold_start="global")
    with pytest.raises(FeatureError, match=r"gemma-3-270m \(sha 9f8e7d6c5b4a3921\) layer 11"):
        early.generate("Write a poem", k=4, max_new_tokens=4)
    # By default a new user sees the first sample, and the first update refuses to put
    # a head on features of this model on top of the other model's global ranker.
    user = PersonalRanker(central, tmp_path, "gina", "chat")
    shown = user.generate("Write a poem", k=4, max_new_tokens=4)
    assert shown.order == (0, 1, 2, 3)
    user.pick(shown, 1)
    with pytest.raises(FeatureError, match=r"gemma-3-270m \(sha 9f8e7d6c5b4a3921\) layer 11"):
        user.learn()


def _global_64(identity: FeatureIdentity) -> bytes:
    ranker = build_ranker(make_config("point", 64), seed=0)  # the tiny model's width
    return export_onnx(ranker, exporter="torchscript", identity=identity)


def test_the_torch_learner_records_the_identity_too(central, tmp_path: Path) -> None:
    from edge.training.learner import LearnerConfig
    from edge.training.loop import TrainConfig

    fast = LearnerConfig(kind="point", train=TrainConfig(min_steps=5), parity_ks=(2,))
    user = PersonalRanker(central, tmp_path, "hugo", "chat", learner=fast)
    shown_from = _teach(user, 2)
    assert shown_from is not None and user.learn().updated
    assert _recorded(user) == dataclasses.replace(shown_from, parts=())
    with pytest.raises(FeatureError, match="layer 2; these features come from"):
        user.generate("Write a poem", k=4, max_new_tokens=4, layer=3)
