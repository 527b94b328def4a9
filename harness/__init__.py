"""Quality harness (`ranker-eval`): reproduces the Language Ranker comparison on small models.

Tasks with programmatic labels, a cache of sampled candidates with features,
baselines, rankers and a text reward model scored on the same candidates, and
a markdown report with intervals and plots.
"""
