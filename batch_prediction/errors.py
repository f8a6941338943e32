"""The one error a batch run ends with: a line naming what is wrong and the fix."""


class BatchError(RuntimeError):
    """A batch run that can't go on (bad input, missing model, existing output)."""
