"""The Node.js example client (examples/node) against a real central server.

The client is run as a user would run it (``node rank.mjs ...``) against the
tiny model served on loopback, with a ranker the SDK exported; its candidates,
decoded features and scores must be the Python SDK's for the same request.
wire.mjs, the client's tensor decoding, is also checked on its own against
numpy, on every fp16 bit pattern.

Skipped, with the reason, where node (or, for the client, npm) is missing.
The first run installs the example's pinned packages with ``npm ci`` (about
30 s); later runs reuse them while package-lock.json is unchanged.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from central.server import RunningServer, ServerConfig, start_server
from edge.runtime.client import CentralClient
from edge.runtime.scoring import Ranker
from edge.runtime.wire import decode_tensor
from edge.training.export import export_onnx
from edge.training.rankers import build_ranker, make_config
from language_ranker.v1 import ranker_pb2 as pb

NODE_DIR = Path(__file__).resolve().parents[2] / "examples" / "node"
CLIENT = NODE_DIR / "rank.mjs"
WIRE = NODE_DIR / "wire.mjs"  # the client's tensor decoding; no packages needed
# Written after a successful `npm ci`: the hash of the lock file it installed.
STAMP = NODE_DIR / "node_modules" / ".installed-lock.sha256"
TOKEN_ENV = "RANKER_CENTRAL_TOKEN"  # where the Node client reads its bearer token

PROMPT = "What is two plus three?"
K = 4
SEED = 7
MAX_NEW_TOKENS = 8


def _npm_ci() -> None:
    """Installs the example's locked packages unless node_modules already holds them.

    onnxruntime-node's post-install step would download CUDA binaries on
    linux/x64; ONNXRUNTIME_NODE_INSTALL=skip keeps it to the CPU binaries the
    npm package ships.
    """
    digest = hashlib.sha256((NODE_DIR / "package-lock.json").read_bytes()).hexdigest()
    if STAMP.is_file() and STAMP.read_text() == digest:
        return
    env = {**os.environ, "ONNXRUNTIME_NODE_INSTALL": "skip"}
    done = subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund"],
        cwd=NODE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        pytest.fail(f"npm ci failed in {NODE_DIR}:\n{done.stdout}\n{done.stderr}")
    STAMP.write_text(digest)


def _node_major() -> int:
    version = subprocess.run(["node", "--version"], capture_output=True, text=True, check=True)
    return int(version.stdout.strip().lstrip("v").split(".")[0])


def _require(*tools: str) -> None:
    """Skips the test, naming what is missing, without Node 20+ (and the other `tools`)."""
    missing = [tool for tool in ("node", *tools) if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not on PATH: the Node.js example needs Node 20+")
    if _node_major() < 20:
        pytest.skip(f"the Node.js example needs Node 20+, found {_node_major()}")


@pytest.fixture(scope="module")
def node_client() -> Path:
    """The client script, its packages installed; skips where Node 20+ and npm are missing."""
    _require("npm")
    _npm_ci()
    return CLIENT


@pytest.fixture(scope="module")
def ranker_file(tmp_path_factory: pytest.TempPathFactory, tiny_server: RunningServer) -> Path:
    """A list ranker for the tiny model's hidden size, exported by the SDK."""
    with CentralClient(f"127.0.0.1:{tiny_server.port}", timeout=30) as client:
        hidden = client.info().hidden_size
    path = tmp_path_factory.mktemp("node-ranker") / "list.onnx"
    export_onnx(build_ranker(make_config("list", hidden), seed=1), path, exporter="torchscript")
    return path


@pytest.fixture(scope="module")
def secured_server(
    tmp_path_factory: pytest.TempPathFactory, tiny_model: Any
) -> Iterator[tuple[RunningServer, Path, str]]:
    """The tiny model behind TLS (self-signed certificate) and a bearer token."""
    from tests.central.test_server import _self_signed

    cert, key = _self_signed(tmp_path_factory.mktemp("node-tls"))
    token = "node-example-token"
    config = ServerConfig(port=0, tls_cert=cert, tls_key=key, auth_token=token)
    running = start_server(config, loaded=tiny_model)
    yield running, cert, token
    running.stop(grace=0)


def _run_node(
    client: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
    return subprocess.run(
        ["node", str(client), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**environment, **(env or {})},
    )


def _rank_with_node(
    client: Path, target: str, ranker: Path, *extra: str, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """The client's JSON for the module's request; fails the test with its stderr."""
    args = ["--ranker", str(ranker), "--target", target, "--prompt", PROMPT, "--k", str(K)]
    args += ["--seed", str(SEED), "--max-new-tokens", str(MAX_NEW_TOKENS), *extra]
    done = _run_node(client, *args, env=env)
    assert done.returncode == 0, f"node client failed ({done.returncode}):\n{done.stderr}"
    result: dict[str, Any] = json.loads(done.stdout)
    return result


@pytest.mark.parametrize("encoding", ["fp16", "fp32", "int8"])
def test_node_client_matches_the_python_sdk(
    node_client: Path, tiny_server: RunningServer, ranker_file: Path, encoding: str
) -> None:
    target = f"127.0.0.1:{tiny_server.port}"
    node = _rank_with_node(node_client, target, ranker_file, "--encoding", encoding, "--features")

    with CentralClient(target, timeout=30) as client:
        generation = client.generate(
            PROMPT, K, seed=SEED, max_new_tokens=MAX_NEW_TOKENS, encoding=encoding
        )
    ranking = Ranker(ranker_file).rank(generation.instruction, generation.features)

    assert node["texts"] == generation.texts
    assert node["layer_index"] == generation.layer_index
    # Decoded by hand in JS, the features are numpy's float32 values exactly.
    np.testing.assert_array_equal(
        np.asarray(node["instruction"], np.float32), generation.instruction
    )
    np.testing.assert_array_equal(np.asarray(node["features"], np.float32), generation.features)
    np.testing.assert_allclose(node["scores"], ranking.scores, rtol=0, atol=1e-4)
    assert node["best"] == ranking.best
    assert node["order"] == ranking.order.tolist()


@pytest.mark.parametrize("encoding", ["fp16", "int8"])
def test_node_client_decodes_the_embedding_mean_as_the_python_sdk_does(
    node_client: Path, tiny_server: RunningServer, ranker_file: Path, encoding: str
) -> None:
    target = f"127.0.0.1:{tiny_server.port}"
    extra = ("--embedding-mean", "--encoding", encoding, "--features")
    node = _rank_with_node(node_client, target, ranker_file, *extra)
    with CentralClient(target, timeout=30) as client:
        generation = client.generate(
            PROMPT,
            K,
            seed=SEED,
            max_new_tokens=MAX_NEW_TOKENS,
            encoding=encoding,
            vectors=("last", "embedding_mean"),
        )
    assert node["texts"] == generation.texts
    means = np.stack([c.embedding_mean_feature for c in generation.candidates])
    np.testing.assert_array_equal(np.asarray(node["embedding_means"], np.float32), means)
    np.testing.assert_array_equal(np.asarray(node["features"], np.float32), generation.features)
    expected = Ranker(ranker_file).score(generation.instruction, generation.features)
    np.testing.assert_allclose(node["scores"], expected, rtol=0, atol=1e-4)
    plain = _rank_with_node(node_client, target, ranker_file, "--features")
    assert "embedding_means" not in plain  # not asked: the v1 request, nothing more


@pytest.mark.slow  # several seconds; CI runs it
def test_node_client_reaches_a_secured_central(
    node_client: Path,
    tiny_server: RunningServer,
    ranker_file: Path,
    secured_server: tuple[RunningServer, Path, str],
) -> None:
    running, cert, token = secured_server
    target = f"localhost:{running.port}"  # the name the certificate is issued to
    tls = ("--tls-ca", str(cert))
    node = _rank_with_node(node_client, target, ranker_file, *tls, env={TOKEN_ENV: token})
    with CentralClient(f"127.0.0.1:{tiny_server.port}", timeout=30) as client:
        plain = client.generate(PROMPT, K, seed=SEED, max_new_tokens=MAX_NEW_TOKENS)
    assert node["texts"] == plain.texts  # same model, same seed, same candidates
    expected = Ranker(ranker_file).score(plain.instruction, plain.features)
    np.testing.assert_allclose(node["scores"], expected, rtol=0, atol=1e-4)

    args = ["--ranker", str(ranker_file), "--target", target, *tls]
    refused = _run_node(node_client, *args, env={TOKEN_ENV: "wrong"})
    assert refused.returncode == 1
    assert refused.stderr.startswith("error: central answered UNAUTHENTICATED")


def _graph_with_inputs(path: Path, names: list[str], hidden: int) -> Path:
    """A loadable ONNX graph taking `names` and giving `scores`: mean of the candidates."""
    shapes: dict[str, list[str | int | None]] = {
        "instruction": ["batch", hidden],
        "candidates": ["batch", "k", hidden],
    }
    inputs = [
        helper.make_tensor_value_info(name, TensorProto.FLOAT, shapes.get(name, ["batch", "k"]))
        for name in names
    ]
    scores = helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", "k"])
    node = helper.make_node("ReduceMean", ["candidates"], ["scores"], axes=[2], keepdims=0)
    graph = helper.make_graph([node], "not-quite-a-ranker", inputs, [scores])
    # IR version 8, as the SDK's exporter writes: onnxruntime refuses versions newer than it knows.
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    onnx.save(model, path)
    return path


def test_node_client_refuses_a_graph_with_inputs_it_does_not_know(
    node_client: Path, tmp_path: Path
) -> None:
    graph = _graph_with_inputs(
        tmp_path / "swift-like.onnx", ["instruction", "candidates", "tokens", "mask"], 64
    )
    # No server is needed: the ranker is checked before the call.
    done = _run_node(node_client, "--ranker", str(graph), "--target", "127.0.0.1:9")
    assert done.returncode == 1
    assert "inputs this client does not know: tokens, mask" in done.stderr


def test_node_client_refuses_features_of_another_width(
    node_client: Path, tiny_server: RunningServer, tmp_path: Path
) -> None:
    graph = _graph_with_inputs(tmp_path / "narrow.onnx", ["instruction", "candidates"], 32)
    done = _run_node(
        node_client, "--ranker", str(graph), "--target", f"127.0.0.1:{tiny_server.port}"
    )
    assert done.returncode == 1
    assert "instruction feature has shape [64], expected [32]" in done.stderr


# ------------------------------------------------------------ wire.mjs alone

_DECODE = """
import { readFileSync } from 'node:fs';
import { decodeTensor } from '%s';
const tensor = JSON.parse(readFileSync(0, 'utf8'));
tensor.data = Buffer.from(tensor.data, 'base64');
try {
  const { values } = decodeTensor(tensor);
  process.stdout.write(Buffer.from(values.buffer).toString('base64'));
} catch (error) {
  process.stderr.write(error.message);
  process.exitCode = 1;
}
"""


def _decode_with_node(tensor: pb.Tensor) -> np.ndarray:
    """wire.mjs's decodeTensor on `tensor` (fed as proto-loader hands it over)."""
    message = {
        "dtype": pb.DType.Name(tensor.dtype),
        "shape": list(tensor.shape),
        "data": base64.b64encode(tensor.data).decode(),
        "scales": list(tensor.scales),
    }
    done = subprocess.run(
        ["node", "--input-type=module", "-e", _DECODE % WIRE.as_uri()],
        input=json.dumps(message),
        capture_output=True,
        text=True,
        timeout=60,
    )
    if done.returncode != 0:
        raise ValueError(done.stderr)
    return np.frombuffer(base64.b64decode(done.stdout), dtype="<f4")


def _assert_same_float32(node: np.ndarray, python: np.ndarray) -> None:
    """Equal bit for bit (signed zeros included); NaN only where numpy has NaN."""
    python = python.reshape(-1)
    nan = np.isnan(python)
    np.testing.assert_array_equal(np.isnan(node), nan)
    np.testing.assert_array_equal(node[~nan].view("<u4"), python[~nan].view("<u4"))


def test_wire_decodes_every_fp16_value_as_numpy_does() -> None:
    _require()
    bits = np.arange(1 << 16, dtype="<u2")  # every half: zeros, subnormals, normals, inf, NaN
    tensor = pb.Tensor(dtype=pb.DTYPE_FLOAT16, shape=[bits.size], data=bits.tobytes())
    _assert_same_float32(_decode_with_node(tensor), decode_tensor(tensor))


def test_wire_decodes_fp32_and_int8_rows_as_numpy_does() -> None:
    _require()
    rng = np.random.default_rng(0)
    values = rng.standard_normal((3, 5)).astype("<f4") * np.float32(1e30)
    fp32 = pb.Tensor(dtype=pb.DTYPE_FLOAT32, shape=[3, 5], data=values.tobytes())
    _assert_same_float32(_decode_with_node(fp32), decode_tensor(fp32))
    q = rng.integers(-128, 128, size=(3, 5), dtype=np.int8)
    int8 = pb.Tensor(
        dtype=pb.DTYPE_INT8, shape=[3, 5], data=q.tobytes(), scales=[0.1, 3.0e-3, 7.5]
    )  # one scale per row
    _assert_same_float32(_decode_with_node(int8), decode_tensor(int8))


def test_wire_refuses_a_tensor_whose_bytes_do_not_match_its_shape() -> None:
    _require()
    short = pb.Tensor(dtype=pb.DTYPE_FLOAT16, shape=[4], data=b"\0" * 6)
    with pytest.raises(ValueError, match=r"declares shape \[4\] .* but carries 6 bytes"):
        _decode_with_node(short)
    unscaled = pb.Tensor(dtype=pb.DTYPE_INT8, shape=[2, 3], data=b"\1" * 6, scales=[1.0])
    with pytest.raises(ValueError, match="int8 feature has 1 scales for 2 rows"):
        _decode_with_node(unscaled)


RECIPE = NODE_DIR / "recipe.mjs"  # the device's parts in JS; no packages needed
LEXICON_DIR = Path(__file__).resolve().parents[2] / "edge" / "runtime" / "lexicon_data"
# Texts that exercise every rule of the two recipes: lists, code, line breaks of
# several kinds, contractions with both apostrophes, accents, emoji, names after
# a sentence end or not, plurals, numbers and a superscript digit, empty answers.
RECIPE_TEXTS = [
    "- Save money.\n- Don't spend it!\n1) Paris in May costs 300 euros?",
    "",
    "   ",
    "Caf\u00e9 owners in M\u00fcnchen say: \u201cI'm sure you\u2019ll love it\u201d \U0001f600. "
    "I think Berlin's parks are great.",
    "```py\nprint(1)\n```\nThe children's libraries and companies... Perhaps, maybe.",
    "Money money money.",
    "A\r\nB\u2028C\fD",
    "Dollars, pennies, and batteries; USA 2024 x\u00b2.",
]


def test_the_node_recipe_computes_signals_and_lexicon_as_python_does() -> None:
    """recipe.mjs against edge.runtime.signals and edge.runtime.lexicon, value for value."""
    from edge.runtime.lexicon import lexicon_block
    from edge.runtime.scalars import Scalars
    from edge.runtime.signals import text_signals

    _require()
    scalars = Scalars(
        num_tokens=(10, 0, None, 5, 7, 3, 4, 9),
        cumulative_logprobs=(-3.5, None, -1e6, -0.2, 0.0, -4.0, -2.0, -1.0),
        mean_entropies=(1.5, None, 0.2, None, 0.3, 0.1, 2.0, 0.0),
        finish_reasons=("eos", "length", None, "eos", "length", "eos", "eos", "eos"),
    )
    rows = [
        {"numTokens": n, "cumulativeLogprob": c, "meanEntropy": e, "finishReason": f}
        for n, c, e, f in zip(*scalars.columns().values(), strict=True)
    ]
    script = (
        f"import {{ textSignals, lexiconBlock, loadLexicon }} from {json.dumps(RECIPE.as_uri())};\n"
        "import { readFileSync } from 'node:fs';\n"
        "const { texts, scalars, dir } = JSON.parse(readFileSync(0, 'utf8'));\n"
        "const rows = (block) => block.map((row) => Array.from(row));\n"
        "console.log(JSON.stringify({ signals: rows(textSignals(texts, scalars)),\n"
        "  lexicon: rows(lexiconBlock(texts, loadLexicon(dir))) }));\n"
    )
    given = json.dumps({"texts": RECIPE_TEXTS, "scalars": rows, "dir": str(LEXICON_DIR)})
    done = subprocess.run(
        ["node", "--input-type=module", "-e", script],
        input=given, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    node = json.loads(done.stdout)
    np.testing.assert_allclose(
        np.asarray(node["signals"], np.float32), text_signals(RECIPE_TEXTS, scalars), atol=1e-6
    )
    lexicon = lexicon_block(RECIPE_TEXTS)
    assert lexicon.any()  # the texts do hit categories
    np.testing.assert_allclose(np.asarray(node["lexicon"], np.float32), lexicon, atol=1e-6)


def test_node_client_scores_a_personal_ranker_as_the_python_sdk(
    node_client: Path, tiny_server: RunningServer, ranker_file: Path, tmp_path: Path
) -> None:
    """A ranker as PersonalRanker saves it (the global ranker plus a head over the
    last and mean vectors, the signals and the lexicon): the Node client asks central
    for the mean vectors and the mean entropy, computes the device's parts and gives
    Python's scores."""
    from edge.app.taste import TasteHead, compose_ranker
    from edge.runtime.lexicon import LEXICON_WIDTH, candidate_lexicon
    from edge.runtime.signals import SIGNAL_NAMES, candidate_signals

    target = f"127.0.0.1:{tiny_server.port}"
    with CentralClient(target, timeout=30) as client:
        generation = client.generate(
            PROMPT, K, seed=SEED, max_new_tokens=MAX_NEW_TOKENS,
            vectors=("last", "mean"), mean_entropy=True,
        )  # fmt: skip
    hidden = generation.instruction.shape[0]
    rng = np.random.default_rng(5)
    widths = {
        "last": hidden,
        "mean": hidden,
        "signals": len(SIGNAL_NAMES),
        "lexicon": LEXICON_WIDTH,
    }
    weights = {p: rng.standard_normal(w).astype(np.float32) for p, w in widths.items()}
    head = TasteHead(weights, global_weight=0.5)  # type: ignore[arg-type]
    personal = tmp_path / "personal.onnx"
    personal.write_bytes(compose_ranker(head, ranker_file.read_bytes()))
    ranking = Ranker(personal).rank_generation(generation)

    node = _rank_with_node(node_client, target, personal, "--features")
    assert node["texts"] == generation.texts
    np.testing.assert_allclose(node["signals"], candidate_signals(generation.candidates), atol=1e-6)
    lexicon = candidate_lexicon(generation.candidates)
    np.testing.assert_allclose(node["lexicon"], lexicon, atol=1e-6)
    means = np.stack([c.mean_feature for c in generation.candidates])  # type: ignore[misc]
    np.testing.assert_array_equal(np.asarray(node["mean_candidates"], np.float32), means)
    np.testing.assert_allclose(node["scores"], ranking.scores, rtol=0, atol=1e-4)
    assert node["order"] == ranking.order.tolist()
