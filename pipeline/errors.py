"""The pipeline's one exception: a failure the user can act on, with a message that says how."""

from __future__ import annotations


class PipelineError(RuntimeError):
    """A step or command failed for a reason the user can act on; the message says which."""
