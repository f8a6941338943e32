"""Where the served model lives: filled once at start-up, given to the routes by Litestar's
dependency injection (``Provide(slot.model)``), so no route reads it from ``app.state``."""

from __future__ import annotations

from service.batching import MicroBatcher
from service.observability import MODEL_VERSION
from service.predictor import Predictor
from service.schemas import House, RequestError


class LoadedModel:
    """The predictor the service serves, with its micro-batcher and how long its load took."""

    def __init__(self, predictor: Predictor, load_seconds: float = 0.0):
        self.predictor = predictor
        self.meta = predictor.meta
        self.form: str = predictor.runtime
        """What answers: "onnxruntime" (the fast form) or "scikit-learn"."""
        self.load_seconds = load_seconds
        self._batcher: MicroBatcher[House] = MicroBatcher(predictor.predict)

    async def prices(self, houses: list[House]) -> list[float]:
        """The houses' prices; small requests of one turn of the event loop share a call."""
        return await self._batcher(houses)


class ModelSlot:
    """The model once loaded, or why there is none."""

    def __init__(self) -> None:
        self.loaded: LoadedModel | None = None
        self.reasons: list[str] = ["still loading"]

    def fill(
        self, predictor: Predictor | None, reasons: list[str], load_seconds: float = 0.0
    ) -> None:
        self.loaded = LoadedModel(predictor, load_seconds) if predictor is not None else None
        self.reasons = reasons
        version = predictor.meta.version if predictor is not None else ""
        MODEL_VERSION.set(float(version) if version.isdigit() else 0)

    def model(self) -> LoadedModel:
        """The dependency of the routes that need a model: 503, saying why, until there is one."""
        if self.loaded is None:
            reasons = "; ".join(self.reasons) or "still loading"
            raise RequestError(503, f"no model loaded: {reasons}")
        return self.loaded
