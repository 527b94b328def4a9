"""The `ranker-edge demo` main job: tasks, a local central, the learning loop."""

from __future__ import annotations

from edge.demo.run import DemoConfig, DemoResult, run_demo

__all__ = ["DemoConfig", "DemoResult", "run_demo"]
