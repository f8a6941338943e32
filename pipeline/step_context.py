"""What a step sees: its settings, its declared inputs, and a staging area for its outputs.

A step reads only what the catalog says it reads and writes only what it says it writes; its
staged outputs reach the store only when it succeeds. A tree of files published while the step
runs (a model export) must sit under a prefix the catalog declares.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from housing_platform.artifact_store import (
    ArtifactStore,
    frame_from_parquet,
    frame_to_parquet,
    to_json,
)
from model_runtime import exports
from pipeline import catalog
from pipeline.errors import PipelineError
from pipeline.settings import Settings

if TYPE_CHECKING:
    from pipeline.experiment_tracking import StepTracker


class StepContext:
    """What a step sees: its settings, its declared inputs, a staging area for its outputs."""

    def __init__(
        self,
        spec: catalog.StepSpec,
        settings: Settings,
        store: ArtifactStore,
        tracker: StepTracker | None,
        gcs_client: Any = None,
        fingerprint: str = "",
    ):
        self.spec = spec
        self.fingerprint = fingerprint
        self.gcs_client = gcs_client
        self.settings = settings
        self.store = store
        self.tracker = tracker
        self.staged: dict[str, bytes] = {}

    def _check_input(self, key: str) -> None:
        if key not in self.spec.inputs:
            raise PipelineError(f"step {self.spec.name} reads {key!r}, which it does not declare")

    def read_bytes(self, key: str) -> bytes:
        self._check_input(key)
        return self.store.read_bytes(key)

    def read_frame(self, key: str) -> pd.DataFrame:
        return frame_from_parquet(self.read_bytes(key))

    def read_json(self, key: str) -> Any:
        return json.loads(self.read_bytes(key))

    def write_bytes(self, key: str, data: bytes) -> None:
        self.staged[key] = data

    def publish(self, prefix: str, files: Sequence[tuple[str, bytes]]) -> None:
        """Publish a whole tree now (a model export, its manifest last), under a prefix the
        catalog declares: what comes after it (an alias) may rely on it being whole."""
        if not any(prefix.startswith(tree) for tree in self.spec.trees):
            raise PipelineError(
                f"step {self.spec.name} publishes {prefix!r}, under no prefix it declares: add "
                "it to the step's trees in pipeline/catalog.py"
            )
        exports.publish(self.store, prefix, files)

    def write_frame(self, key: str, frame: pd.DataFrame) -> None:
        if key.endswith(".csv"):
            self.write_bytes(key, frame.to_csv(index=False).encode())
        else:
            self.write_bytes(key, frame_to_parquet(frame))

    def write_json(self, key: str, obj: Any) -> None:
        self.write_bytes(key, to_json(obj))

    def write_figure(self, key: str, figure: Any) -> None:
        buf = io.BytesIO()
        figure.savefig(buf, format="png", dpi=110, bbox_inches="tight")
        self.write_bytes(key, buf.getvalue())
        if self.tracker is not None:
            self.tracker.figure(Path(key).stem, figure)
        import matplotlib.pyplot as plt

        plt.close(figure)
