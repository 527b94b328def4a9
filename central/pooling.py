"""A response's vectors, from responses the caller already has.

The sampler captures a candidate's vectors in the passes that generate it;
this module computes the same vectors for given responses (the Features RPC,
the quality harness), with one batched pass over prompt + responses through
`forward.PrefilledPrompt`. Tests check that both agree with a plain forward
pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .forward import PrefilledPrompt
from .model import LoadedModel

__all__ = ["Pooled", "pool_responses"]


@dataclass(frozen=True)
class Pooled:
    """One response's vectors at each requested layer."""

    last: np.ndarray  # (layers, hidden) float32, hidden state of the last token


def pool_responses(
    loaded: LoadedModel,
    prompt_ids: Sequence[int],
    responses: Sequence[Sequence[int]],
    layers: Sequence[int],
    *,
    batch_size: int = 8,
) -> tuple[np.ndarray, list[Pooled]]:
    """((layers, hidden) instruction feature, one `Pooled` per response, in order)."""
    prompt = PrefilledPrompt(loaded, prompt_ids, layers)
    instruction = torch.stack([prompt.hidden[layer] for layer in layers])
    pooled = []
    for passed in prompt.feed(responses, batch_size):
        last = [passed.last(layer) for layer in layers]
        rows = [
            prompt.hidden[layer] if v is None else v for layer, v in zip(layers, last, strict=True)
        ]
        pooled.append(Pooled(last=torch.stack(rows).numpy()))
    return instruction.numpy(), pooled
