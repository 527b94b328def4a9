"""The `ranker-edge demo` main job: tasks, simulated users, a local central, the loop.

- ``config``: the demo's sizes (``DemoConfig``), one per ``ranker-edge demo`` option;
- ``correctness``: a user marks answers right or wrong; learned ranker vs free baselines;
- ``personalization``: two users with opposite tastes, one personal ranker each, and a
  user with a content taste (answers that hedge);
- ``run``: starts central and runs both parts; ``report``: the printed tables.

Exports load lazily, so ``ranker-edge --help`` reads only the config.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge._lazy import lazy_exports

if TYPE_CHECKING:
    from edge.demo.config import DemoConfig
    from edge.demo.run import DemoResult, run_demo

_EXPORTS: dict[str, str] = {
    "DemoConfig": "edge.demo.config",
    "DemoResult": "edge.demo.run",
    "run_demo": "edge.demo.run",
}

__all__ = ["DemoConfig", "DemoResult", "run_demo"]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
