"""Shared fixtures: a tiny randomly initialised Llama with a real tokenizer,
saved as a Hugging Face checkpoint directory, and a real gRPC server on a
loopback port that serves it."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_CORPUS = [
    "What is two plus three? The answer is five.",
    "Write a short poem about the sea and the wind.",
    "def add(a, b): return a + b",
    "The quick brown fox jumps over the lazy dog 0123456789.",
    "Please list three colours: red, green, blue!",
] * 20


def build_tiny_checkpoint(directory: Path, *, eos_bias: float = 2.5, hidden_size: int = 64) -> Path:
    """Writes a 4-layer, 64-wide Llama and a byte-level BPE tokenizer to `directory`.

    Random weights rarely pick EOS, so the EOS row of the LM head is tied to
    one hidden dimension: responses then end early at varied lengths, which
    the sampler tests need (mixed EOS and length finishes in one batch).
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(
        _CORPUS,
        trainers.BpeTrainer(
            vocab_size=400,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
    )
    tokenizer.chat_template = TINY_CHAT_TEMPLATE
    eos_id = tokenizer.convert_tokens_to_ids("<|im_end|>")

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=eos_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        model.lm_head.weight[eos_id].zero_()
        model.lm_head.weight[eos_id, 0] = eos_bias
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


class _DeprecatedCacheNames(logging.Handler):
    """Keeps transformers' log lines about a deprecated name of the KV cache.

    Passing ``past_key_values`` warns through `warnings` (pyproject turns that
    into an error); reading it back from an output warns through transformers'
    logger, once a process, which only a handler sees.
    """

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "past_key_values" in message or "cache_params" in message:
            self.seen.append(message)


_DEPRECATED_CACHE_NAMES = _DeprecatedCacheNames()
logging.getLogger("transformers").addHandler(_DEPRECATED_CACHE_NAMES)


@pytest.fixture(autouse=True)
def _no_deprecated_cache_names() -> Iterator[None]:
    yield
    seen, _DEPRECATED_CACHE_NAMES.seen[:] = list(_DEPRECATED_CACHE_NAMES.seen), []
    assert not seen, f"transformers logged a deprecated KV-cache name: {seen[0]}"


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_model(tiny_checkpoint: Path):
    from central.model import load_model

    return load_model(str(tiny_checkpoint))


@pytest.fixture(scope="session")
def served_tiny(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory):
    """The tiny model in a weight format (`--weights`), prepared as `ranker-central serve`
    prepares it (linears packed or int8), loaded once per format."""
    from central.decoding import pack_linears
    from central.model import load_model

    cache = tmp_path_factory.mktemp("tiny-served")
    loaded: dict[str, Any] = {}

    def served(weights: str) -> Any:
        if weights not in loaded:
            loaded[weights] = load_model(str(tiny_checkpoint), weights=weights, cache_dir=cache)
            pack_linears(loaded[weights].model)
        return loaded[weights]

    return served


@pytest.fixture()
def two_torch_threads() -> Iterator[None]:
    """torch computes on two threads during the test, whatever the machine, then as before
    (threads started meanwhile, an engine's, take two as well)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_server(tiny_model) -> Iterator:
    """A real gRPC server on a free loopback port, serving the tiny model."""
    from central.server import ServerConfig, start_server

    running = start_server(ServerConfig(port=0), loaded=tiny_model)
    yield running
    running.stop(grace=0)


@pytest.fixture()
def central_stub(tiny_server) -> Iterator:
    from language_ranker.v1 import ranker_pb2_grpc as pb_grpc

    with grpc.insecure_channel(f"127.0.0.1:{tiny_server.port}") as channel:
        yield pb_grpc.CentralServiceStub(channel)


@pytest.fixture(scope="session")
def default_model():
    """The real embedded default model (SmolLM2-135M-Instruct), loaded once."""
    from central.model import load_model

    return load_model("default")
