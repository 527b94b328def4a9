"""The committed generated code is exactly what the pinned protoc emits."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GENERATED = ("ranker_pb2.py", "ranker_pb2.pyi", "ranker_pb2_grpc.py")


def _generator():
    spec = importlib.util.spec_from_file_location("gen_protos", ROOT / "scripts" / "gen_protos.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_code_matches_proto(tmp_path: Path) -> None:
    _generator().generate(tmp_path)
    for name in GENERATED:
        fresh = (tmp_path / "language_ranker" / "v1" / name).read_text()
        committed = (ROOT / "protos" / "language_ranker" / "v1" / name).read_text()
        assert fresh == committed, f"{name} is stale: run python scripts/gen_protos.py"


def test_contract_reserves_token_features_without_breaking_old_messages() -> None:
    from language_ranker.v1 import ranker_pb2 as pb

    # A message from a newer server (token feature chunk) parses in this
    # version, and a plain candidate has no token fields set.
    event = pb.GenerateResponse(token_features=pb.TokenFeatures(index=3, token_offset=16))
    parsed = pb.GenerateResponse.FromString(event.SerializeToString())
    assert parsed.WhichOneof("event") == "token_features"
    assert parsed.token_features.index == 3
    # Unknown fields from the future survive a round trip through this version.
    future = pb.Candidate(index=1, text="x").SerializeToString() + bytes([0xA8, 0x06, 0x01])
    assert pb.Candidate.FromString(future).SerializeToString() == future
