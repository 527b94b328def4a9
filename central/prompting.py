"""Turning a wire `Prompt` into the token ids the model sees."""

from __future__ import annotations

from language_ranker.v1 import ranker_pb2 as pb

from ._errors import RequestError
from .model import LoadedModel

__all__ = ["render_prompt", "response_ids"]

_ROLES = frozenset({"system", "user", "assistant"})


def render_prompt(loaded: LoadedModel, prompt: pb.Prompt, field: str = "prompt") -> list[int]:
    """Token ids for `prompt`, chat template applied where the model has one.

    Plain text becomes one user message unless `raw` is set; chat messages
    need a template. Without a template, text is tokenized with the model's
    own special tokens (a BOS for models that expect one).
    """
    kind = prompt.WhichOneof("kind")
    if kind == "chat":
        messages = _chat_messages(prompt.chat, field)
        if not loaded.has_chat_template:
            raise RequestError(f"{field}.chat", f"model {loaded.name} has no chat template")
        return _apply_template(loaded, messages)
    if kind != "text" or not prompt.text.strip():
        raise RequestError(field, "is empty")
    if loaded.has_chat_template and not prompt.raw:
        return _apply_template(loaded, [{"role": "user", "content": prompt.text}])
    return list(loaded.tokenizer(prompt.text, add_special_tokens=True)["input_ids"])


def _chat_messages(chat: pb.Chat, field: str) -> list[dict[str, str]]:
    if not chat.messages:
        raise RequestError(f"{field}.chat.messages", "is empty")
    messages = []
    for i, message in enumerate(chat.messages):
        if message.role not in _ROLES:
            raise RequestError(
                f"{field}.chat.messages[{i}].role",
                f"must be one of {sorted(_ROLES)}, got {message.role!r}",
            )
        if not message.content.strip():
            raise RequestError(f"{field}.chat.messages[{i}].content", "is empty")
        messages.append({"role": message.role, "content": message.content})
    return messages


def _apply_template(loaded: LoadedModel, messages: list[dict[str, str]]) -> list[int]:
    text = loaded.tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True
    )
    # The template writes its own special tokens (BOS included), so none are added here.
    return list(loaded.tokenizer(text, add_special_tokens=False)["input_ids"])


def response_ids(loaded: LoadedModel, response: str) -> list[int]:
    """Token ids of a response text appended to an already rendered prompt."""
    return list(loaded.tokenizer(response, add_special_tokens=False)["input_ids"])
