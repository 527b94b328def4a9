"""The conversion cache keys on content, a converted directory keeps its GGUF's identity,
and stale conversions go (`central.model`)."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from central.model import (
    ORIGIN_FILE,
    STALE_AFTER_DAYS,
    _converted_gguf,
    _write_origin,
    converted_dir,
    default_cache_dir,
    load_model,
    model_identity,
    prune_conversions,
    resolve_model_path,
    weights_sha256,
)

OLD = time.time() - (STALE_AFTER_DAYS + 1) * 24 * 3600


def _conversion(models: Path, name: str, *, origin: bool, old: bool) -> Path:
    directory = models / name
    directory.mkdir(parents=True)
    (directory / "config.json").write_text("{}")
    (directory / "model.safetensors").write_bytes(b"weights")
    stamp = directory / "config.json"
    if origin:
        stamp = directory / ORIGIN_FILE
        stamp.write_text("{}")
    if old:
        os.utime(stamp, (OLD, OLD))
    return directory


def test_stale_conversions_and_leftovers_are_pruned(tmp_path: Path) -> None:
    models, prepared = tmp_path / "models", tmp_path / "prepared"
    stale = _conversion(models, "a.Q4-0123456789abcdef", origin=True, old=True)
    fresh = _conversion(models, "b.Q4-0123456789abcdef", origin=True, old=False)
    legacy_old = _conversion(models, "c.Q4-fedcba9876543210", origin=False, old=True)
    legacy_new = _conversion(models, "d.Q4-fedcba9876543210", origin=False, old=False)
    kept = _conversion(models, "e.Q4-0123456789abcdef", origin=True, old=True)
    foreign = models / "my-own-checkpoint"  # not named as this module names conversions
    foreign.mkdir()
    (foreign / "config.json").write_text("{}")
    os.utime(foreign / "config.json", (OLD, OLD))
    killed = models / ".converting-x1"
    killed.mkdir()
    os.utime(killed, (OLD, OLD))
    prepared.mkdir()
    old_int8, new_int8 = prepared / "a-0123-int8-v1.safetensors", prepared / "b-int8.safetensors"
    for file in (old_int8, new_int8):
        file.write_bytes(b"x")
    os.utime(old_int8, (OLD, OLD))

    removed = prune_conversions(tmp_path, keep=kept)

    assert sorted(removed) == sorted([stale, legacy_old, killed, old_int8])
    for entry in (fresh, legacy_new, kept, foreign, new_int8):
        assert entry.exists()
    assert prune_conversions(tmp_path / "nowhere") == []


def _checkpoint(directory: Path) -> Path:
    directory.mkdir()
    (directory / "model.safetensors").write_bytes(b"dequantised weights")
    (directory / "config.json").write_text("{}")
    return directory


def test_a_converted_directory_reports_its_ggufs_identity(tmp_path: Path) -> None:
    gguf = tmp_path / "Model.Q4_1.gguf"
    gguf.write_bytes(b"GGUF" + bytes(range(200)))
    directory = _checkpoint(tmp_path / "Model.Q4_1-0123456789abcdef")
    _write_origin(directory, gguf, weights_sha256(gguf, tmp_path / "cache"))
    copied = shutil.copytree(directory, tmp_path / "elsewhere" / "renamed")
    want = model_identity(gguf, tmp_path / "cache")
    assert want == ("Model.Q4_1", weights_sha256(gguf, tmp_path / "cache"))
    assert model_identity(directory, tmp_path / "cache") == want
    assert model_identity(copied, tmp_path / "cache") == want  # wherever it is served from


def test_edited_weights_are_a_model_of_their_own(tmp_path: Path, caplog) -> None:
    gguf = tmp_path / "Model.Q4_1.gguf"
    gguf.write_bytes(b"GGUF" + bytes(range(200)))
    directory = _checkpoint(tmp_path / "fine-tuned")
    _write_origin(directory, gguf, weights_sha256(gguf, tmp_path / "cache"))
    (directory / "model.safetensors").write_bytes(b"fine-tuned weights")
    name, sha = model_identity(directory, tmp_path / "cache")
    assert (name, sha) == ("fine-tuned", weights_sha256(directory, tmp_path / "cache"))
    assert "changed since" in caplog.text
    (directory / ORIGIN_FILE).write_text(json.dumps({"source_name": 3}))  # a bad record
    assert model_identity(directory, tmp_path / "cache")[0] == "fine-tuned"


@pytest.mark.slow  # hashes and loads the real default model
def test_a_copy_of_a_gguf_reuses_its_conversion_and_identity(tmp_path: Path) -> None:
    gguf = resolve_model_path("default")
    cache = default_cache_dir()
    converted = _converted_gguf(gguf, cache)
    stamp = (converted / "model.safetensors").stat().st_mtime_ns
    copy = shutil.copy2(gguf, tmp_path / gguf.name)
    assert converted_dir(Path(copy), cache) == converted
    assert _converted_gguf(Path(copy), cache) == converted
    assert (converted / "model.safetensors").stat().st_mtime_ns == stamp  # not converted again
    from_gguf = load_model(str(copy), weights="dense")
    from_directory = load_model(str(converted), weights="dense")
    assert (from_directory.name, from_directory.weights_sha256) == (
        from_gguf.name,
        from_gguf.weights_sha256,
    )
    assert from_gguf.name == "SmolLM2-135M-Instruct.Q4_1"
