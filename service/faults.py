"""Fault injection for release drills (HOUSING_FAULTS): a canary that fails, slows down or
misprices on purpose, so the rollout's judge and its rollback can be rehearsed.

``parse`` turns ``error_rate=0.05,delay_ms=200,price_factor=1.1`` into a ``FaultPlan`` (each
key at most once; an unknown key or a bad value is a ``FaultSpecError`` naming the key); the
``FaultInjector`` applies it to prediction requests. Off by default, and refused where the
service's settings say production. It draws from one ``random.Random`` per process, seeded once
at start (``seed=N`` makes a drill repeatable), so a request costs no system call but the sleep.
"""

from __future__ import annotations

import difflib
import random
from collections.abc import Awaitable, Callable
from typing import Annotated, Literal

import anyio
import msgspec
from msgspec import Meta

from service.schemas import RequestError

#: What each key must be, in words, as an error message says it.
EXPECTED = {
    "error_rate": "a share between 0 and 1 (0.05: one request in 20 fails)",
    "error_status": "500 or 503",
    "delay_ms": "milliseconds, at least 0",
    "price_factor": "a number above 0 (1.1: prices 10% higher)",
    "seed": "an integer",
}
#: The body's detail of an injected error: a drill, not an outage.
INJECTED = "injected fault (HOUSING_FAULTS): a drill, not a failure of the service"


class FaultPlan(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What the drill does to each prediction request; the defaults do nothing."""

    error_rate: Annotated[float, Meta(ge=0, le=1)] = 0.0
    """Share of prediction requests answered with ``error_status`` and an injected-fault body."""
    error_status: Literal[500, 503] = 503
    """The status of an injected error."""
    delay_ms: Annotated[float, Meta(ge=0)] = 0.0
    """Added to every prediction request, asleep (the event loop keeps serving)."""
    price_factor: Annotated[float, Meta(gt=0)] = 1.0
    """Every price is multiplied by it."""
    seed: int | None = None
    """The process's random draws start from it; none: from the operating system, once."""

    @property
    def active(self) -> bool:
        return self.error_rate > 0 or self.delay_ms > 0 or self.price_factor != 1.0


class FaultSpecError(ValueError):
    """A HOUSING_FAULTS spec is wrong: ``key`` is the offending key as written, ``expected``
    what it must be (a phrase that follows "expected")."""

    def __init__(self, key: str, expected: str):
        super().__init__(f"{key}: expected {expected}")
        self.key = key
        self.expected = expected


def parse(spec: str) -> FaultPlan:
    """``key=value`` pairs, comma-separated; empty is no fault."""
    raw: dict[str, str] = {}
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        key, eq, value = (s.strip() for s in part.partition("="))
        if key not in EXPECTED:
            close = difflib.get_close_matches(key, list(EXPECTED), n=1)
            hint = f"; did you mean `{close[0]}`?" if close else ""
            raise FaultSpecError(
                key or part, f"one of the keys {', '.join(EXPECTED)} (`{key}` is not one{hint})"
            )
        if not eq or not value:
            raise FaultSpecError(key, f"`{key}=<value>`, the value {EXPECTED[key]}")
        if key in raw:
            raise FaultSpecError(key, f"`{key}` once, not twice")
        raw[key] = value
    try:
        return msgspec.convert(raw, FaultPlan, strict=False)
    except msgspec.ValidationError as exc:
        key = str(exc).rpartition("$.")[2].rstrip("`")
        key = key if key in EXPECTED else next(iter(raw), "")
        raise FaultSpecError(key, f"`{key}` to be {EXPECTED[key]}") from None


class FaultInjector:
    """Applies a plan to prediction requests: ``before`` may sleep and may raise the injected
    error; ``prices`` scales what the model answered."""

    def __init__(
        self,
        plan: FaultPlan,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ):
        self.plan = plan
        self.random = random.Random(plan.seed)
        self._sleep = sleep

    async def before(self) -> None:
        plan = self.plan
        if plan.delay_ms > 0:
            await self._sleep(plan.delay_ms / 1000)
        if plan.error_rate > 0 and self.random.random() < plan.error_rate:
            raise RequestError(plan.error_status, INJECTED)

    def prices(self, prices: list[float]) -> list[float]:
        factor = self.plan.price_factor
        return prices if factor == 1.0 else [p * factor for p in prices]
