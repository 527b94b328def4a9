"""``python -m ranker_personalize``: see ranker_personalize.cli."""

from ranker_personalize.cli import main

raise SystemExit(main())
