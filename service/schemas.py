"""Request and response types, strict, with the data set's ranges in the types themselves.

Requests are decoded by hand rather than by the framework so that every bad house is named in
one answer (``instances[3].latitude``), not only the first.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from model_runtime.contract import OCEAN_PROXIMITY, RANGES, normalise_ocean_proximity

#: What may separate, precede and follow the words of a category: ASCII whitespace and ``_``.
#: ``normalise_ocean_proximity`` turns each run of them into one space (or none at the ends).
_SEPARATOR = r"[\t\n\v\f\r _]"


def _spellings(category: str) -> str:
    """A regex for ``category`` in any case, its words separated by one or more separators."""
    words = (
        "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else re.escape(c) for c in word)
        for word in category.split(" ")
    )
    return f"{_SEPARATOR}+".join(words)


#: Exactly the spellings the service reads as one of the data set's categories, generated from
#: the category list; published in the OpenAPI document and enforced by decoding. Written in the
#: subset of regex syntax that ECMA-262 (JSON Schema's dialect) and Python read alike: the
#: trailing class holds ``\n``, so Python's ``$`` (which also matches before a final newline)
#: accepts no more than ECMA-262's.
OCEAN_PROXIMITY_PATTERN = (
    f"^{_SEPARATOR}*(?:{'|'.join(_spellings(c) for c in OCEAN_PROXIMITY)}){_SEPARATOR}*$"
)


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
            pattern=OCEAN_PROXIMITY_PATTERN,
            description=(
                f"one of {', '.join(OCEAN_PROXIMITY)}; case is ignored, and so are ASCII "
                "whitespace and underscores around and between the words"
            ),
            examples=["NEAR BAY", "near_bay"],
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
    """Most houses in one request (MAX_INSTANCES): clients split larger tables."""
    max_body_bytes: int
    """Largest request body (MAX_BODY_BYTES): clients keep each request's body within it."""
    prediction_log: bool = False
    """Whether every priced house is logged (PREDICTION_LOG)."""


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
        if len(houses) <= max_instances:
            return [h if h.ocean_proximity in _KNOWN else _canonical(h) for h in houses]
    return _parse_each(body, max_instances)


def _canonical(house: House) -> House:
    """The house with its category spelled as the data set does; decoding has checked it
    against ``OCEAN_PROXIMITY_PATTERN``, whose every spelling normalises to a category."""
    return msgspec.structs.replace(
        house, ocean_proximity=normalise_ocean_proximity(house.ocean_proximity)
    )


def _ocean_proximity_error(raw: msgspec.Raw) -> str:
    value = msgspec.json.decode(raw).get("ocean_proximity")
    return (
        f"unknown value {value!r}; expected one of {_CATEGORIES} (case, spaces and underscores "
        "are ignored)"
    )


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
            if path == ".ocean_proximity" and "matching regex" in text:
                text = _ocean_proximity_error(raw)
            errors.append(FieldError(f"instances[{i}]{path}", text))
            continue
        except msgspec.DecodeError as exc:
            errors.append(FieldError(f"instances[{i}]", f"malformed JSON: {exc}"))
            continue
        houses.append(house if house.ocean_proximity in _KNOWN else _canonical(house))
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
