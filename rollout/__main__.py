"""``python -m rollout``: see ``rollout.cli``."""

from rollout.cli import main

raise SystemExit(main())
