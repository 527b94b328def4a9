"""Personalisation study: simulated users, each training a tiny ranker on-device.

One central model (SmolLM2-135M-Instruct) samples K candidates per prompt once;
every simulated user then runs the real edge loop on that shared pool (SQLite
FeedbackStore -> Learner -> Registry -> onnxruntime Ranker) and we measure how
fast each personal ranker learns what *its* user prefers. See
docs/results/personalization/README.md for the results and the command.
"""

__all__: list[str] = []
