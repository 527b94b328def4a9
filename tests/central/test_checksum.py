"""The weights checksum central reports: what it covers, that it is cached, and when it
is computed again."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from central.model import weights_sha256
from language_ranker.v1 import ranker_pb2 as pb


def _by_hand(directory: Path, names: list[str]) -> str:
    digest = hashlib.sha256()
    for name in sorted(names):
        digest.update(name.encode() + b"\0" + (directory / name).read_bytes())
    return digest.hexdigest()


def _checkpoint(directory: Path) -> Path:
    directory.mkdir()
    (directory / "model-00001-of-00002.safetensors").write_bytes(b"first shard")
    (directory / "model-00002-of-00002.safetensors").write_bytes(b"second shard")
    (directory / "config.json").write_text("{}")
    (directory / "tokenizer.json").write_text("{}")
    return directory


def test_a_checkpoint_hashes_its_weight_files_by_name_and_bytes(tmp_path: Path) -> None:
    model = _checkpoint(tmp_path / "model")
    shards = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    digest = weights_sha256(model, tmp_path / "cache")
    assert digest == _by_hand(model, shards)
    (model / "config.json").write_text('{"edited": true}')  # not the weights
    assert weights_sha256(model, tmp_path / "other-cache") == digest


def test_a_gguf_file_is_hashed_whole(tmp_path: Path) -> None:
    gguf = tmp_path / "model.Q4_1.gguf"
    gguf.write_bytes(b"GGUF" + bytes(range(256)) * 64)
    assert weights_sha256(gguf, tmp_path / "cache") == hashlib.sha256(gguf.read_bytes()).hexdigest()


def test_the_digest_is_cached_and_recomputed_when_a_file_changes(tmp_path: Path) -> None:
    model = _checkpoint(tmp_path / "model")
    cache = tmp_path / "cache"
    digest = weights_sha256(model, cache)
    (record,) = (cache / "checksums").iterdir()
    assert record.read_text().strip() == digest
    planted = "0" * 64  # a later start reads the record instead of the weights
    record.write_text(planted + "\n")
    assert weights_sha256(model, cache) == planted
    shard = model / "model-00002-of-00002.safetensors"
    shard.write_bytes(b"retrained shard")
    os.utime(shard, ns=(1, 1))  # size and mtime both change: a new key
    fresh = weights_sha256(model, cache)
    assert fresh not in (planted, digest) and len(list((cache / "checksums").iterdir())) == 2


def test_an_unwritable_cache_only_costs_the_hashing(tmp_path: Path) -> None:
    model = _checkpoint(tmp_path / "model")
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("a file where the cache directory would be")
    assert weights_sha256(model, blocked) == weights_sha256(model, tmp_path / "cache")


def test_a_directory_without_weight_files_has_no_checksum(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert weights_sha256(tmp_path / "empty", tmp_path / "cache") == ""


@pytest.mark.slow  # several seconds; CI runs it
def test_the_loaded_model_and_info_carry_the_checksum(
    central_stub, tiny_model, tiny_checkpoint
) -> None:
    names = [p.name for p in tiny_checkpoint.glob("*.safetensors")]
    assert names and tiny_model.weights_sha256 == _by_hand(tiny_checkpoint, names)
    info = central_stub.Info(pb.InfoRequest(), timeout=5)
    assert info.model_sha256 == tiny_model.weights_sha256
