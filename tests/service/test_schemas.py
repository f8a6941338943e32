import json

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model_runtime.contract import EXAMPLE_HOUSE, OCEAN_PROXIMITY, normalise_ocean_proximity
from service.schemas import OCEAN_PROXIMITY_PATTERN, House, RequestError, parse_predict_request

HOUSE = EXAMPLE_HOUSE


def body(*houses: dict) -> bytes:
    return json.dumps({"instances": list(houses)}).encode()


def errors(raw: bytes, limit: int = 1000) -> dict[str, str]:
    with pytest.raises(RequestError) as err:
        parse_predict_request(raw, limit)
    assert err.value.status == 400
    return {e.loc: e.msg for e in err.value.errors}


def test_valid_houses_decode_and_categories_are_normalised():
    houses = parse_predict_request(
        body(HOUSE, {**HOUSE, "ocean_proximity": " near_bay ", "total_bedrooms": None}), 10
    )
    assert houses[0] == msgspec.convert(HOUSE, House)
    assert houses[1].ocean_proximity == "NEAR BAY"
    assert houses[1].total_bedrooms is None


def test_every_bad_house_is_named_by_its_path():
    found = errors(
        body(
            HOUSE,
            {**HOUSE, "latitude": "37.9"},
            {**HOUSE, "latitude": 99.0},
            {**HOUSE, "ocean_proximity": "MARS"},
            {**HOUSE, "colour": "red"},
            {k: v for k, v in HOUSE.items() if k != "households"},
        )
    )
    assert found == {
        "instances[1].latitude": "Expected `float`, got `str`",
        "instances[2].latitude": "Expected `float` <= 42.1",
        "instances[3].ocean_proximity": found["instances[3].ocean_proximity"],
        "instances[4]": "Object contains unknown field `colour`",
        "instances[5]": "Object missing required field `households`",
    }
    assert "unknown value 'MARS'" in found["instances[3].ocean_proximity"]


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_are_rejected(token):
    raw = body(HOUSE).replace(b"880.0", token.encode())
    with pytest.raises(RequestError, match="malformed JSON"):
        parse_predict_request(raw, 10)


def test_count_limits_and_envelope_errors():
    assert errors(body()) == {"instances": "must hold at least 1 house"}
    assert errors(body(HOUSE, HOUSE, HOUSE), limit=2) == {
        "instances": "holds 3 houses; at most 2 per request"
    }
    assert errors(b"[]") == {"$": "Expected `object`, got `array`"}
    assert errors(b'{"houses": []}') == {"$": "Object contains unknown field `houses`"}
    with pytest.raises(RequestError, match="malformed JSON"):
        parse_predict_request(b'{"instances": [', 10)


@settings(max_examples=100, deadline=None)
@given(spelling=st.from_regex(OCEAN_PROXIMITY_PATTERN).filter(lambda s: len(s) <= 32))
def test_every_spelling_the_published_pattern_admits_is_priced_as_its_category(spelling):
    (house,) = parse_predict_request(body({**HOUSE, "ocean_proximity": spelling}), 10)
    assert house.ocean_proximity == normalise_ocean_proximity(spelling)
    assert house.ocean_proximity in OCEAN_PROXIMITY


def test_an_unknown_category_is_named_in_plain_words():
    found = errors(body({**HOUSE, "ocean_proximity": ""}))
    assert found == {
        "instances[0].ocean_proximity": "unknown value ''; expected one of <1H OCEAN, INLAND, "
        "ISLAND, NEAR BAY, NEAR OCEAN (case, spaces and underscores are ignored)"
    }
