"""``python -m personalize``: see personalize.cli."""

from personalize.cli import main

raise SystemExit(main())
