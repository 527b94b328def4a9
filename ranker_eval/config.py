"""Run settings: which models and tasks, how many problems, how much time.

Two presets: `quick` (seconds, for CI on the tiny test model) and `full`
(the committed report on this 2-core CPU). Every number lives here so the
report can print exactly what produced it.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class TaskPlan:
    """How much of one task to generate for one model."""

    task: str  # task id
    n_train: int  # problems the trained methods learn from
    n_test: int  # problems every method is scored on (disjoint from train)
    k: int  # candidates per problem
    max_new_tokens: int | None = None  # None: the task's own (chat code answers need more)
    beam: bool = True  # False skips beam search here (on long code answers it costs more than K)


@dataclass(frozen=True)
class ModelPlan:
    """One model and its tasks."""

    model: str  # load_model name or checkpoint path
    tasks: tuple[TaskPlan, ...]  # what to generate for it
    beam_width: int = 4  # beam-search baseline width; 0 skips it


@dataclass(frozen=True)
class RunConfig:
    """Everything one `ranker-eval` run does."""

    models: tuple[ModelPlan, ...]  # models, each with its task plans
    budget_minutes: float = 60.0  # wall-clock cap for generation over all models
    seed: int = 0  # problem generation, sampling, training and subsampling seeds
    ranker_steps: int = 300  # optimizer steps per ranker (small data needs several epochs)
    rm_epochs: int = 2  # passes of the text reward model over its training pairs
    rm_max_pairs: int = 512  # cap on (prompt, response) training pairs for the text RM
    curve_repeats: int = 20  # random K-subsets per problem for the Best-of-K curves
    bootstrap: int = 1000  # bootstrap resamples for intervals on differences
    threads: int = 1  # torch threads (1 is fastest on this shared 2-core box)
    layer_fractions: tuple[float, ...] = field(default=(0.1, 0.3, 0.6, 1.0))  # layer sweep
    swift: bool = True  # fit SWIFT too (re-extracts per-token features with the model)
    lora_steps: int = 120  # LoRA-on-base reward model optimizer steps; 0 skips it
    unsafe_exec: bool = False  # run generated code unisolated where bubblewrap is unusable
    # the LLM's linear weights (central's --weights: auto, dense, int8, int8-upper); the pools of
    # each format are cached apart (ranker_eval.cache.CacheKey.weights)
    weights: str = "auto"


def _plans(n_train: int, n_test: int, k: int, code: TaskPlan) -> tuple[TaskPlan, ...]:
    generated = tuple(TaskPlan(t, n_train, n_test, k) for t in ("math", "function", "sentiment"))
    return (*generated, code)


# HumanEval: all 164 problems, split in halves. The chat model rewrites the
# whole function, docstring included, inside a fence, so it gets 256 tokens;
# the base model continues the body and is cut at its stop strings, so 128.
FULL = RunConfig(
    models=(
        ModelPlan("default", _plans(40, 40, 64, TaskPlan("code", 82, 82, 8, 256, beam=False))),
        ModelPlan("gemma3-270m", _plans(30, 30, 16, TaskPlan("code", 82, 82, 8, 128, beam=False))),
    ),
    budget_minutes=85.0,
)


# The representation study (last / mean / last+mean, with and without signals):
# SmolLM2's generated families at K=16, no beam search (not a free baseline there).
REPRESENTATION = RunConfig(
    models=(
        ModelPlan(
            "default",
            tuple(TaskPlan(t, 40, 40, 16, beam=False) for t in ("math", "function", "sentiment")),
            beam_width=0,
        ),
    ),
    budget_minutes=60.0,
    swift=False,
    lora_steps=0,
)

PRESETS = {"full": FULL, "representation": REPRESENTATION}


def quick(model: str) -> RunConfig:
    """Tiny budgets: a few problems of each family, small K, fast training."""
    plans = (
        TaskPlan("math", 4, 4, 4),
        TaskPlan("function", 4, 4, 4),
        TaskPlan("sentiment", 4, 4, 4),
        TaskPlan("code", 1, 1, 2),
    )
    return RunConfig(
        models=(ModelPlan(model, plans, beam_width=2),),
        budget_minutes=5.0,
        ranker_steps=20,
        rm_epochs=1,
        rm_max_pairs=64,
        curve_repeats=3,
        bootstrap=100,
        lora_steps=3,
    )
