"""fintask's codec writes and reads messages as Dramatiq's JSONEncoder does, value for value."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from dramatiq.encoder import JSONEncoder
from dramatiq.errors import DecodeError
from hypothesis import given
from hypothesis import strategies as st

from app.json_codec import FastJSONEncoder

fast = FastJSONEncoder()
dramatiqs = JSONEncoder()

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(st.characters(codec="utf-8")),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@given(st.dictionaries(st.text(max_size=8), json_values, max_size=6))
def test_what_it_writes_reads_back_as_dramatiqs_encoding_does(data: dict[str, Any]) -> None:
    written = fast.encode(data)

    assert dramatiqs.decode(written) == dramatiqs.decode(dramatiqs.encode(data))
    assert fast.decode(dramatiqs.encode(data)) == dramatiqs.decode(dramatiqs.encode(data))


@pytest.mark.parametrize(
    "value",
    [2**64, -(2**63) - 1, 10**30, 9_223_372_036_854_775_807, 18_446_744_073_709_551_615],
)
def test_integers_beyond_64_bits_keep_every_digit(value: int) -> None:
    decoded = fast.decode(fast.encode({"args": [value]}))["args"][0]
    assert (type(decoded), decoded) == (int, value)


def test_nan_and_the_infinities_stay_what_they_were() -> None:
    written = fast.encode({"args": [math.nan, math.inf, -math.inf, None]})

    assert written == dramatiqs.encode({"args": [math.nan, math.inf, -math.inf, None]})
    nan, inf, negative, none = fast.decode(written)["args"]
    assert math.isnan(nan) and (inf, negative, none) == (math.inf, -math.inf, None)


def test_what_orjson_refuses_is_written_by_json() -> None:
    class Name(str):
        pass

    data = {"args": [Name("a"), "lone \ud800 surrogate"]}
    assert fast.encode(data) == dramatiqs.encode(data)


def test_non_ascii_text_is_plain_utf8_and_reads_back_the_same() -> None:
    written = fast.encode({"args": ["Zürich 💶"]})
    assert "Zürich 💶".encode() in written
    assert dramatiqs.decode(written) == {"args": ["Zürich 💶"]}


def test_a_value_json_refuses_is_still_refused() -> None:
    with pytest.raises(TypeError, match="not JSON serializable"):
        fast.encode({"args": [{1, 2}]})


@pytest.mark.parametrize("payload", [b"{not json", b"\xff\xfe", b'{"a": NaN'])
def test_a_payload_that_is_no_json_fails_as_with_dramatiqs_encoder(payload: bytes) -> None:
    with pytest.raises(DecodeError) as fast_error:
        fast.decode(payload)
    with pytest.raises(DecodeError) as dramatiqs_error:
        dramatiqs.decode(payload)
    assert str(fast_error.value) == str(dramatiqs_error.value)


def test_a_message_written_by_dramatiqs_encoder_reads_the_same() -> None:
    written = json.dumps({"args": [1.5, "é", [True, None]], "kwargs": {}}).encode()
    assert fast.decode(written) == dramatiqs.decode(written)
