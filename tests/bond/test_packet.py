"""The bond's wire format (siplb/bond/packet.py): every body kind round-trips, and anything
short or foreign raises ``PacketError``, never another exception."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from siplb.bond.packet import (
    HEADER,
    TAG_SIZE,
    Beat,
    Channel,
    Data,
    Header,
    Hello,
    Kind,
    PacketError,
    Parity,
    parse_body,
)

BODIES = [
    (Kind.DATA, Data(Channel(1, 3), 2**40, b"rtp payload")),
    (Kind.DATA, Data(Channel(255, 0), 0, b"")),
    (Kind.PARITY, Parity(Channel(2, 1), 17, 3, 172 ^ 160, b"\x01\x02")),
    (Kind.BEAT, Beat(12.5)),
    (Kind.ECHO, Beat(0.25)),
    (Kind.WELCOME, Beat(1.0)),
    (Kind.HELLO, Hello(3.0, {1: 2, 2: 1, 4: 65535})),
]


@pytest.mark.parametrize(("kind", "body"), BODIES)
def test_a_body_round_trips(kind: Kind, body: object) -> None:
    packed = body.pack()  # type: ignore[attr-defined]
    assert parse_body(kind, packed) == body


# the fixed part of each body: anything shorter is not a body of that kind
FIXED = {Kind.DATA: 11, Kind.PARITY: 14, Kind.BEAT: 8, Kind.ECHO: 8, Kind.WELCOME: 8}


@pytest.mark.parametrize(("kind", "body"), BODIES)
def test_a_truncated_body_is_a_packet_error(kind: Kind, body: object) -> None:
    packed = body.pack()  # type: ignore[attr-defined]
    for cut in range(FIXED.get(kind, len(packed))):
        with pytest.raises(PacketError):
            parse_body(kind, packed[:cut])


def test_a_header_round_trips_and_is_sixteen_bytes() -> None:
    header = Header(Kind.PARITY, 4, 0xDEADBEEF, 2**63, flags=1)
    packed = header.pack()
    assert len(packed) == HEADER.size == 16
    assert Header.unpack(packed + bytes(TAG_SIZE)) == header


HEADER_ERRORS = [
    (b"", "too short"),
    (bytes(HEADER.size + TAG_SIZE - 1), "too short"),
    (bytes([2, 5]) + bytes(30), "version 2"),
    (bytes([1, 99]) + bytes(30), "kind 99"),
]


@pytest.mark.parametrize(("datagram", "reason"), HEADER_ERRORS)
def test_a_foreign_datagram_is_a_packet_error(datagram: bytes, reason: str) -> None:
    with pytest.raises(PacketError, match=reason):
        Header.unpack(datagram)


@given(st.sampled_from(list(Kind)), st.binary(max_size=64))
def test_parsing_raises_only_packet_error(kind: Kind, body: bytes) -> None:
    with contextlib.suppress(PacketError):
        parse_body(kind, body)


@given(
    st.integers(0, 255),
    st.integers(0, 65535),
    st.integers(0, 2**64 - 1),
    st.binary(max_size=300),
)
def test_data_round_trips(flow: int, index: int, seq: int, payload: bytes) -> None:
    data = Data(Channel(flow, index), seq, payload)
    assert Data.unpack(data.pack()) == data


@given(st.dictionaries(st.integers(0, 255), st.integers(0, 65535), max_size=16), st.floats(0, 1e9))
def test_hello_round_trips(weights: dict[int, int], sent: float) -> None:
    hello = Hello(sent, weights)
    assert Hello.unpack(hello.pack()) == hello
