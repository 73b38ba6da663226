"""Bencoding (``siplb.media.bencode``): strict, bounded, and ``BencodeError`` only."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from siplb.media.bencode import MAX_DEPTH, BencodeError, EncodeError, decode, encode

VALID = [
    (b"i0e", 0),
    (b"i42e", 42),
    (b"i-7e", -7),
    (b"i9223372036854775807e", 2**63 - 1),
    (b"0:", b""),
    (b"4:spam", b"spam"),
    (b"le", []),
    (b"li1e3:abce", [1, b"abc"]),
    (b"de", {}),
    (b"d3:cow3:moo4:spam4:eggse", {"cow": b"moo", "spam": b"eggs"}),
    # rtpengine writes keys in the order it built them: unsorted input is accepted
    (b"d6:result2:ok3:sdp3:v=0e", {"result": b"ok", "sdp": b"v=0"}),
    (b"d1:ld1:xli1eeee", {"l": {"x": [1]}}),
]

INVALID = [
    (b"", "truncated"),
    (b"i", "unterminated"),
    (b"ie", "bad number"),
    (b"i-e", "bad number"),
    (b"i-0e", "non-canonical"),
    (b"i03e", "non-canonical"),
    (b"i1.5e", "bad number"),
    (b"i+1e", "bad number"),
    (b"i99999999999999999999e", "bad number"),
    (b"5:abc", "past the end"),
    (b"05:abcde", "non-canonical"),
    (b"-1:a", "unexpected byte"),
    (b"4spam", "unterminated"),
    (b"l", "truncated"),
    (b"li1e", "truncated"),
    (b"d3:cow", "truncated"),
    (b"di1ei2ee", "not a string"),
    (b"d1:ai1e1:ai2ee", "duplicate key"),
    (b"d2:\xff\xfei1ee", "not ASCII"),
    (b"i1ei2e", "trailing bytes"),
    (b"x", "unexpected byte"),
    (b"l" * (MAX_DEPTH + 1) + b"e" * (MAX_DEPTH + 1), "nested deeper"),
]


@pytest.mark.parametrize(("data", "value"), VALID)
def test_decodes(data: bytes, value: object) -> None:
    assert decode(data) == value


@pytest.mark.parametrize(("data", "reason"), INVALID)
def test_refuses(data: bytes, reason: str) -> None:
    with pytest.raises(BencodeError, match=reason):
        decode(data)


@pytest.mark.parametrize(("data", "value"), VALID)
def test_every_proper_prefix_and_trailing_bytes_are_refused(data: bytes, value: object) -> None:
    """Whole input decodes; cut anywhere, or with a byte after it, it does not."""
    for cut in range(len(data)):
        with pytest.raises(BencodeError):
            decode(data[:cut])
    with pytest.raises(BencodeError, match="trailing"):
        decode(data + b"e")


def test_the_size_bound_is_checked_first() -> None:
    with pytest.raises(BencodeError, match="over the limit"):
        decode(b"4:spam", max_size=5)
    assert decode(b"l" * 3 + b"e" * 3, max_depth=3) == [[[]]]
    with pytest.raises(BencodeError, match="nested deeper"):
        decode(b"l" * 4 + b"e" * 4, max_depth=3)


ENCODED = [
    ({"b": 1, "a": "x"}, b"d1:a1:x1:bi1ee"),  # keys sorted, str as UTF-8
    ({"sdp": b"\r\n"}, b"d3:sdp2:\r\ne"),
    ((1, [b"a"]), b"li1el1:aee"),
    ("é", b"2:\xc3\xa9"),
    (b"\xff\xfe".decode("utf-8", "surrogateescape"), b"2:\xff\xfe"),  # odd bytes come back
    (-3, b"i-3e"),
]


@pytest.mark.parametrize(("value", "data"), ENCODED)
def test_encodes(value: object, data: bytes) -> None:
    assert encode(value) == data  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [True, 1.5, None, {1: 2}, object()])
def test_encoding_the_unencodable_is_our_bug(value: object) -> None:
    with pytest.raises(EncodeError):
        encode(value)  # type: ignore[arg-type]


values = st.recursive(
    st.integers(min_value=-(2**63), max_value=2**63 - 1) | st.binary(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.dictionaries(st.text("abcdefghij-_ ", max_size=8), inner, max_size=5)
    ),
    max_leaves=30,
)


@given(values)
def test_round_trip(value: object) -> None:
    assert decode(encode(value)) == value  # type: ignore[arg-type]


@given(st.binary(max_size=200))
def test_arbitrary_bytes_decode_or_raise_bencode_error(data: bytes) -> None:
    with contextlib.suppress(BencodeError):
        decode(data)


@given(values, st.data())
def test_mutated_encodings_decode_or_raise_bencode_error(
    value: object, data: st.DataObject
) -> None:
    encoded = bytearray(encode(value))  # type: ignore[arg-type]
    if encoded:
        at = data.draw(st.integers(0, len(encoded) - 1))
        encoded[at] = data.draw(st.sampled_from(b"0123456789:ield-x"))
    with contextlib.suppress(BencodeError):
        decode(bytes(encoded))
