"""Personalisation study: simulated users, each teaching a tiny head on-device.

One central model (SmolLM2-135M-Instruct) samples K candidates per prompt once,
with representation v2 (last and mean vectors, mean entropy); every simulated
user then runs the real edge loop on that shared pool (SQLite FeedbackStore ->
the torch-free PersonalLearner -> Registry -> onnxruntime Ranker) and we
measure how fast each personal ranker learns what *its* user prefers. See
docs/results/personalization/README.md for the results and the command.
"""

__all__: list[str] = []
