"""Safe releases: judging a canary step from its evidence (``rollout.judge``)."""
