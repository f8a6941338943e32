"""How closely two sets of prices for the same houses agree: ``model_runtime.agreement``, which the
serving revision's shadow mirror computes too (serving code never imports the pipeline). Replay
and the console import it from here, as before the move."""

from model_runtime.agreement import Agreement, agreement

__all__ = ["Agreement", "agreement"]
