"""Quality harness (`ranker-eval`): reproduces the Language Ranker comparison on small models.

Tasks with programmatic labels, a cache of sampled candidates with features,
baselines, the rankers, SWIFT, a text reward model and a LoRA-on-base reward
model scored on the same candidates, and a markdown report with intervals and
plots.
"""
