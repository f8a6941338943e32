"""Request and response types, strict, with the data set's ranges in the types themselves.

Requests are decoded by hand rather than by the framework so that every bad house is named in
one answer (``instances[3].latitude``), not only the first.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import Meta

from pipeline.schema import OCEAN_PROXIMITY, RANGES, normalise_ocean_proximity


def _meta(name: str) -> Meta:
    r = RANGES[name]
    return Meta(ge=r.min, le=r.max, description=r.description)


class House(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """One block group, with the data set's column names."""

    longitude: Annotated[float, _meta("longitude")]
    latitude: Annotated[float, _meta("latitude")]
    housing_median_age: Annotated[float, _meta("housing_median_age")]
    total_rooms: Annotated[float, _meta("total_rooms")]
    total_bedrooms: Annotated[float, _meta("total_bedrooms")] | None
    population: Annotated[float, _meta("population")]
    households: Annotated[float, _meta("households")]
    median_income: Annotated[float, _meta("median_income")]
    ocean_proximity: Annotated[
        str,
        Meta(
            max_length=32,
            description=f"one of {', '.join(OCEAN_PROXIMITY)}; case and spacing are ignored",
            examples=["NEAR BAY"],
        ),
    ]


class PredictRequest(msgspec.Struct, forbid_unknown_fields=True):
    instances: Annotated[list[House], Meta(min_length=1)]


class Prediction(msgspec.Struct):
    predicted_price: float


class ModelRef(msgspec.Struct):
    name: str
    version: str
    alias: str
    run_id: str


class PredictResponse(msgspec.Struct):
    predictions: list[Prediction]
    model: ModelRef


class FieldError(msgspec.Struct):
    loc: str
    msg: str


class ErrorBody(msgspec.Struct):
    status_code: int
    detail: str
    errors: list[FieldError] = []


class RangeInfo(msgspec.Struct):
    min: float
    max: float
    description: str
    nullable: bool = False


class ModelInfo(msgspec.Struct):
    name: str
    version: str
    alias: str
    run_id: str
    source: str
    trained_at: str
    test_metrics: dict[str, float]
    runtime: str
    warnings: list[str]
    load_seconds: float
    input_ranges: dict[str, RangeInfo]
    ocean_proximity: list[str]
    max_instances: int


class Status(msgspec.Struct):
    status: str
    detail: str = ""


class RequestError(Exception):
    """A client mistake: answered with ``status`` and the offending fields."""

    def __init__(self, status: int, detail: str, errors: list[FieldError] | None = None):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = errors or []


class _Envelope(msgspec.Struct, forbid_unknown_fields=True):
    instances: list[msgspec.Raw]


_request = msgspec.json.Decoder(PredictRequest, strict=True)
_envelope = msgspec.json.Decoder(_Envelope)
_CATEGORIES = ", ".join(OCEAN_PROXIMITY)
_KNOWN = frozenset(OCEAN_PROXIMITY)
_house = msgspec.json.Decoder(House, strict=True)


def _split(exc: msgspec.ValidationError) -> tuple[str, str]:
    message = str(exc)
    if " - at `$" in message:
        text, _, path = message.rpartition(" - at `$")
        return path.rstrip("`"), text
    return "", message


def parse_predict_request(body: bytes, max_instances: int) -> list[House]:
    """Decode and check a predict body; raises RequestError naming every bad house.

    A valid body is decoded in one call; only a body that fails is decoded again house by
    house, to name every bad one (msgspec stops at the first)."""
    try:
        request = _request.decode(body)
    except msgspec.DecodeError:
        pass
    else:
        houses = request.instances
        if len(houses) <= max_instances and all(h.ocean_proximity in _KNOWN for h in houses):
            return houses
    return _parse_each(body, max_instances)


def _parse_each(body: bytes, max_instances: int) -> list[House]:
    try:
        envelope = _envelope.decode(body)
    except msgspec.ValidationError as exc:
        path, text = _split(exc)
        raise RequestError(
            400, "invalid request", [FieldError(path.lstrip(".") or "$", text)]
        ) from None
    except msgspec.DecodeError as exc:
        raise RequestError(400, f"malformed JSON: {exc}") from None
    count = len(envelope.instances)
    if count == 0:
        raise RequestError(
            400, "invalid request", [FieldError("instances", "must hold at least 1 house")]
        )
    if count > max_instances:
        raise RequestError(
            400,
            "invalid request",
            [FieldError("instances", f"holds {count} houses; at most {max_instances} per request")],
        )
    houses: list[House] = []
    errors: list[FieldError] = []
    for i, raw in enumerate(envelope.instances):
        try:
            house = _house.decode(raw)
        except msgspec.ValidationError as exc:
            path, text = _split(exc)
            errors.append(FieldError(f"instances[{i}]{path}", text))
            continue
        except msgspec.DecodeError as exc:
            errors.append(FieldError(f"instances[{i}]", f"malformed JSON: {exc}"))
            continue
        category = normalise_ocean_proximity(house.ocean_proximity)
        if category not in OCEAN_PROXIMITY:
            errors.append(
                FieldError(
                    f"instances[{i}].ocean_proximity",
                    f"unknown value {house.ocean_proximity!r}; expected one of {_CATEGORIES}",
                )
            )
            continue
        if category != house.ocean_proximity:
            house = msgspec.structs.replace(house, ocean_proximity=category)
        houses.append(house)
    if errors:
        raise RequestError(400, f"{len(errors)} invalid house(s)", errors)
    return houses


def input_ranges() -> dict[str, RangeInfo]:
    return {
        name: RangeInfo(r.min, r.max, r.description, nullable=name == "total_bedrooms")
        for name, r in RANGES.items()
        if name != "median_house_value"
    }


def error_json(err: RequestError) -> dict[str, Any]:
    return msgspec.to_builtins(ErrorBody(err.status, err.detail, err.errors))
