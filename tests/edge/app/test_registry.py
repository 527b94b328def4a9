from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from edge import CorruptModelError, RegistryError, UnknownUserError
from edge._errors import CorruptVersionWarning
from edge.app.registry import Registry

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def model_v1(onnx_file: Path) -> bytes:
    return onnx_file.read_bytes()


def test_save_versions_load_and_list(tmp_path: Path, model_v1: bytes) -> None:
    reg = Registry(tmp_path)
    a = reg.save("alice", "chat", model_v1, weights=b"w1", metadata={"cursor": 3})
    b = reg.save("alice", "chat", model_v1 + b"", metadata={"cursor": 5})
    reg.save("alice", "math", model_v1)
    reg.save("bob", "chat", model_v1)
    assert (a.version, b.version) == (1, 2)
    assert (tmp_path / "users/alice/chat/v000001.onnx").exists()
    assert reg.users() == ["alice", "bob"]
    assert reg.rankers("alice") == ["chat", "math"]
    assert [v.version for v in reg.versions("alice", "chat")] == [1, 2]
    assert reg.current("alice", "chat").metadata == {"cursor": 5}
    assert reg.load_model("alice", "chat", 1) == model_v1
    assert reg.load_weights("alice", "chat", 1) == b"w1"
    assert reg.load_weights("alice", "chat") is None
    ranker = reg.open("alice", "chat")
    assert ranker.version == 2 and ranker.feature_size == 32


def test_rollback_moves_current_and_keeps_files(tmp_path: Path, model_v1: bytes) -> None:
    reg = Registry(tmp_path)
    for _ in range(3):
        reg.save("u", "chat", model_v1)
    assert reg.rollback("u", "chat").version == 2
    assert reg.current("u", "chat").version == 2
    assert reg.rollback("u", "chat", to=1).version == 1
    with pytest.raises(RegistryError, match="no version before 1"):
        reg.rollback("u", "chat")
    assert [v.version for v in reg.versions("u", "chat")] == [1, 2, 3]
    assert reg.save("u", "chat", model_v1).version == 4


def test_corrupt_latest_version_is_detected_and_older_survive(
    tmp_path: Path, model_v1: bytes
) -> None:
    reg = Registry(tmp_path)
    reg.save("u", "chat", model_v1)
    reg.save("u", "chat", model_v1)
    latest = reg.model_path("u", "chat")
    latest.write_bytes(model_v1[: len(model_v1) // 2])  # torn write / disk damage
    with pytest.raises(CorruptModelError, match=r"v000002\.onnx.*checksum mismatch"):
        reg.load_model("u", "chat")
    with pytest.raises(CorruptModelError, match="v000002"):
        reg.open("u", "chat")
    assert reg.load_model("u", "chat", 1) == model_v1
    with pytest.warns(CorruptVersionWarning):
        assert reg.open("u", "chat", fallback=True).version == 1
    assert reg.rollback("u", "chat").version == 1
    assert reg.open("u", "chat").version == 1


def test_ids_are_validated_against_path_traversal(tmp_path: Path, model_v1: bytes) -> None:
    reg = Registry(tmp_path / "root")
    for bad in ["../evil", "a/b", "", ".hidden", "x" * 200, "a\\b", "..", "a..b"]:
        with pytest.raises(RegistryError, match="invalid user id"):
            reg.save(bad, "chat", model_v1)
        with pytest.raises(RegistryError, match="invalid ranker name"):
            reg.save("ok", bad, model_v1)
    assert not (tmp_path / "evil").exists()


def test_unknown_user_and_unknown_ranker(tmp_path: Path, model_v1: bytes) -> None:
    reg = Registry(tmp_path)
    with pytest.raises(UnknownUserError, match="'nobody'"):
        reg.current("nobody", "chat")
    with pytest.raises(UnknownUserError):
        reg.rankers("nobody")
    reg.save("u", "chat", model_v1)
    with pytest.raises(RegistryError, match="no ranker named 'math'"):
        reg.load_model("u", "math")
    with pytest.raises(RegistryError, match="no version 9"):
        reg.load_model("u", "chat", 9)


def test_global_rankers_live_apart_from_users(tmp_path: Path, model_v1: bytes) -> None:
    reg = Registry(tmp_path)
    reg.save_global("math", model_v1, weights=b"global-weights")
    assert reg.rankers(None) == ["math"]
    assert reg.users() == []
    assert reg.load_weights(None, "math") == b"global-weights"


def test_a_damaged_manifest_is_read_from_its_backup_and_reported(
    tmp_path: Path, model_v1: bytes
) -> None:
    reg = Registry(tmp_path)
    reg.save("u", "chat", model_v1, metadata={"cursor": 4})
    reg.save("u", "chat", model_v1, metadata={"cursor": 9})
    manifest = tmp_path / "users/u/chat/manifest.json"
    manifest.write_text(manifest.read_text()[:20])  # damaged on disk
    with pytest.warns(CorruptVersionWarning, match=r"manifest\.json: unreadable.*backup"):
        assert [v.version for v in reg.versions("u", "chat")] == [1, 2]
    with pytest.warns(CorruptVersionWarning):
        ranker = Registry(tmp_path).open("u", "chat")
    assert ranker.version == 2
    with pytest.warns(CorruptVersionWarning):  # the next save writes both again
        assert reg.save("u", "chat", model_v1).version == 3
    assert json.loads(manifest.read_text())["current"] == 3
    manifest.unlink()  # a lost manifest: the backup still names every version
    with pytest.warns(CorruptVersionWarning, match="missing"):
        assert reg.has("u", "chat") and reg.current("u", "chat").version == 3


def test_a_manifest_damaged_with_its_backup_is_an_error(tmp_path: Path, model_v1: bytes) -> None:
    reg = Registry(tmp_path)
    reg.save("u", "chat", model_v1)
    for name in ("manifest.json", "manifest.backup.json"):
        path = tmp_path / "users/u/chat" / name
        path.write_text(path.read_text()[:20])
    with pytest.raises(CorruptModelError, match=r"manifest\.json"):
        reg.versions("u", "chat")


def test_falling_back_from_a_corrupt_version_is_reported(tmp_path: Path, model_v1: bytes) -> None:
    reg = Registry(tmp_path)
    reg.save("u", "chat", model_v1)
    reg.save("u", "chat", model_v1)
    reg.model_path("u", "chat").write_bytes(b"garbage")
    assert reg.verify("u", "chat", 1) is None
    damage = reg.verify("u", "chat")
    assert damage is not None and "v000002.onnx" in str(damage)
    with pytest.warns(CorruptVersionWarning, match="version 2 is corrupt.*ranking with version 1"):
        assert reg.open("u", "chat", fallback=True).version == 1


def test_rollback_refuses_a_corrupt_target(tmp_path: Path, model_v1: bytes) -> None:
    reg = Registry(tmp_path)
    for _ in range(3):
        reg.save("u", "chat", model_v1)
    reg.model_path("u", "chat", 2).write_bytes(b"garbage")
    with pytest.raises(CorruptModelError, match="v000002"):
        reg.rollback("u", "chat")
    assert reg.current("u", "chat").version == 3
    assert reg.rollback("u", "chat", to=1).version == 1


def test_a_rollback_forgets_the_events_of_the_versions_left(
    tmp_path: Path, model_v1: bytes
) -> None:
    reg = Registry(tmp_path)
    assert reg.forgotten("u", "chat") == ()  # no ranker yet
    reg.save("u", "chat", model_v1, metadata={"cursor": 5})
    reg.save("u", "chat", model_v1, metadata={"cursor": 10})
    reg.save("u", "chat", model_v1, metadata={"cursor": 12})
    assert reg.forgotten("u", "chat") == ()
    reg.rollback("u", "chat")  # 3 -> 2: events 11..12 forgotten by v2's line
    assert reg.forgotten("u", "chat") == ((10, 12),)
    reg.rollback("u", "chat")  # 2 -> 1: and 6..10 (2 had reached 12)
    assert reg.forgotten("u", "chat") == ((5, 12),)
    # A learner saving on top of v1 records the ranges in its metadata.
    reg.save("u", "chat", model_v1, metadata={"cursor": 15, "forgotten": [[5, 12]]})
    assert reg.forgotten("u", "chat") == ((5, 12),)
    reg.rollback("u", "chat", to=3)  # any move forgets what only the line left learned
    assert reg.forgotten("u", "chat") == ((12, 15),)
    reg.rollback("u", "chat", to=4)
    assert reg.forgotten("u", "chat") == ((5, 12),)
    reg.rollback("u", "chat", to=2)  # from v4 (cursor 15): 11..15 too
    assert reg.forgotten("u", "chat") == ((10, 15),)
    assert Registry(tmp_path).forgotten("u", "chat") == ((10, 15),)  # kept on disk


_CRASH = textwrap.dedent(
    """
    import os, sys
    from edge.app.registry import Registry

    root, target, model = sys.argv[1], sys.argv[2], sys.argv[3]
    real_replace = os.replace

    def crashing_replace(src, dst):
        if str(dst).endswith(target):
            os._exit(17)  # the process dies between write+fsync and the rename
        return real_replace(src, dst)

    os.replace = crashing_replace
    Registry(root).save("u", "chat", open(model, "rb").read() + b"", weights=b"new")
    """
)


@pytest.mark.parametrize("crash_at", [".onnx", "manifest.json"])
def test_crash_during_save_keeps_last_good_version(
    tmp_path: Path, model_v1: bytes, onnx_file: Path, crash_at: str
) -> None:
    reg = Registry(tmp_path)
    reg.save("u", "chat", model_v1, weights=b"old", metadata={"cursor": 1})
    before = (tmp_path / "users/u/chat/manifest.json").read_bytes()
    proc = subprocess.run(
        [sys.executable, "-c", _CRASH, str(tmp_path), crash_at, str(onnx_file)],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 17, proc.stderr
    assert (tmp_path / "users/u/chat/manifest.json").read_bytes() == before
    fresh = Registry(tmp_path)
    assert fresh.current("u", "chat").version == 1
    assert fresh.load_model("u", "chat") == model_v1
    assert fresh.load_weights("u", "chat") == b"old"
    ranker = fresh.open("u", "chat")
    assert ranker.score(np.zeros(32, np.float32), np.ones((3, 32), np.float32)).shape == (3,)
    # The next save works and never reuses a number a crashed save may have written.
    info = fresh.save("u", "chat", model_v1)
    assert info.version >= 2
    assert json.loads((tmp_path / "users/u/chat/manifest.json").read_text())["current"] == (
        info.version
    )


# -- over time and under concurrency ----------------------------------------------------
def _files(root: Path) -> set[str]:
    return {p.name for p in (root / "users/u/chat").iterdir() if not p.name.startswith(".")}


def test_versions_are_pruned_but_never_the_current_one_or_its_rollback_target(
    tmp_path: Path, model_v1: bytes
) -> None:
    reg = Registry(tmp_path, keep=3)
    for i in range(6):
        reg.save("u", "chat", model_v1, weights=f"w{i}".encode())
    assert [v.version for v in reg.versions("u", "chat")] == [4, 5, 6]
    assert _files(tmp_path) == {"manifest.json", "manifest.backup.json"} | {
        f"v{n:06d}.{ext}" for n in (4, 5, 6) for ext in ("onnx", "weights.npz")
    }
    reg.rollback("u", "chat", to=4)
    for _ in range(3):
        reg.save("u", "chat", model_v1)
    # 7, 8, 9 are the newest three; 9 is current and 8 its rollback target; 4, 5, 6 go.
    assert [v.version for v in reg.versions("u", "chat")] == [7, 8, 9]
    assert reg.rollback("u", "chat").version == 8
    reg.save("u", "chat", model_v1)  # current 10, rollback target 9, plus 8
    with pytest.raises(RegistryError, match="keep must be at least 1"):
        Registry(tmp_path, keep=0)
    single = Registry(tmp_path, keep=1)
    single.save("u", "chat", model_v1)
    assert [v.version for v in single.versions("u", "chat")] == [10, 11]
    assert single.rollback("u", "chat").version == 10


def test_a_save_is_a_compare_and_swap_when_asked(tmp_path: Path, model_v1: bytes) -> None:
    reg = Registry(tmp_path)
    assert reg.save("u", "chat", model_v1, expect_current=0).version == 1
    with pytest.raises(RegistryError, match="version 1 is current, expected 0"):
        reg.save("u", "chat", model_v1, expect_current=0)
    reg.save("u", "chat", model_v1, expect_current=1)
    before = _files(tmp_path)
    with pytest.raises(RegistryError, match="version 2 is current, expected 1; another writer"):
        reg.save("u", "chat", model_v1, weights=b"late", expect_current=1)
    assert _files(tmp_path) == before and reg.current("u", "chat").version == 2


def test_leftovers_of_interrupted_writes_are_removed_on_open(
    tmp_path: Path, model_v1: bytes
) -> None:
    reg = Registry(tmp_path)
    reg.save("u", "chat", model_v1, weights=b"w")
    directory = tmp_path / "users/u/chat"
    (directory / ".v000002.onnx.x1y2.tmp").write_bytes(b"half a model")
    (directory / ".manifest.json.abc.tmp").write_bytes(b"{")
    (directory / "v000007.onnx").write_bytes(model_v1)  # saved, never committed
    (directory / "v000007.weights.npz").write_bytes(b"w7")
    (directory / "notes.txt").write_text("not ours: left alone")
    assert reg.open("u", "chat").version == 1
    assert {p.name for p in directory.iterdir()} == {
        ".lock", "manifest.json", "manifest.backup.json", "notes.txt", "v000001.onnx",
        "v000001.weights.npz",
    }  # fmt: skip
    # A version number once written is not handed out again.
    assert reg.save("u", "chat", model_v1).version == 2


def test_learning_continues_from_the_newest_intact_weights(tmp_path: Path, model_v1: bytes) -> None:
    reg = Registry(tmp_path)
    reg.save("u", "chat", model_v1, weights=b"one")
    reg.save("u", "chat", model_v1)  # a version saved without weights
    reg.save("u", "chat", model_v1, weights=b"three")
    info, weights = reg.last_good_weights("u", "chat") or (None, None)
    assert info is not None and (info.version, weights) == (3, b"three")
    (tmp_path / "users/u/chat/v000003.weights.npz").write_bytes(b"thr")  # damaged
    info, weights = reg.last_good_weights("u", "chat") or (None, None)
    assert info is not None and (info.version, weights) == (1, b"one")
    reg.rollback("u", "chat", to=1)
    (tmp_path / "users/u/chat/v000001.weights.npz").unlink()
    assert reg.last_good_weights("u", "chat") is None


_FILL_THE_REGISTRY = """
import os, sys
from edge import DiskFullError, Registry

root, model = sys.argv[1], open(os.environ["MODEL"], "rb").read()
registry = Registry(root, keep=1000)
saved = 0
try:
    while True:
        registry.save("u", "chat", model, weights=os.urandom(20_000))
        saved += 1
except DiskFullError as error:
    print("FULL", error)
current = registry.current("u", "chat")
assert current.version == saved, (current.version, saved)  # the last good one stays current
assert registry.verify("u", "chat") is None
registry.open("u", "chat")
leftovers = [p for p in os.listdir(root + "/users/u/chat") if p.endswith(".tmp")]
assert not leftovers, leftovers
print("OK", saved)
"""


def test_a_full_disk_is_named_and_leaves_the_last_version_current(onnx_file: Path) -> None:
    from tests.edge.app._full_disk import run_on_small_disk

    os.environ["MODEL"] = str(onnx_file)
    try:
        proc = run_on_small_disk(_FILL_THE_REGISTRY, size_kb=400)
    finally:
        del os.environ["MODEL"]
    assert proc.returncode == 0, proc.stderr
    assert "FULL no space left to write" in proc.stdout and "OK" in proc.stdout
