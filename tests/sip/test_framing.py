"""``StreamFramer``: Content-Length framing on TCP/TLS (RFC 3261 18.3), RFC 5626 keep-alives.

Every stream is fed three ways: whole, one byte at a time, and followed by the first bytes of
another message (which must stay buffered until the rest arrives).
"""

from __future__ import annotations

import pytest

from siplb.sip import (
    KEEPALIVE,
    FramingError,
    KeepAlive,
    Limits,
    Malformed,
    Request,
    Response,
    StreamFramer,
)
from siplb.sip.framing import Framed

from .samples import INVITE, OPTIONS, RINGING

BINARY = b"MESSAGE sip:a@b SIP/2.0\r\nContent-Length: 10\r\n\r\n\x00\r\n\r\n\xff\r\n\r\n"
BAD_START = b"OPTIONS  sip:a@b SIP/2.0\r\nContent-Length: 0\r\n\r\n"
FOLDED_CL = b"MESSAGE sip:a@b SIP/2.0\r\nContent-Length:\r\n 5\r\n\r\nhello"
COMPACT_CL = b"MESSAGE sip:a@b SIP/2.0\r\nl : 5\r\n\r\nhello"
TWO_EQUAL_CL = b"MESSAGE sip:a@b SIP/2.0\r\nl: 2\r\nContent-Length: 2\r\n\r\nhi"


def describe(item: Framed) -> object:
    """What a test compares: a message's bytes, the keep-alive, or a malformed item's hint."""
    if isinstance(item, Request | Response):
        return item.to_bytes()
    if isinstance(item, Malformed):
        return ("malformed", item.error.status_hint, item.data)
    return item


# (id, stream, items it must yield)
CASES: list[tuple[str, bytes, list[object]]] = [
    ("one request", INVITE, [INVITE]),
    ("one response", RINGING, [RINGING]),
    ("back to back", INVITE + OPTIONS + RINGING, [INVITE, OPTIONS, RINGING]),
    ("ping (RFC 5626 3.5.1)", b"\r\n\r\n", [KEEPALIVE]),
    (
        "pings around messages",
        b"\r\n\r\n" + OPTIONS + b"\r\n\r\n\r\n\r\n" + OPTIONS,
        [KEEPALIVE, OPTIONS, KEEPALIVE, KEEPALIVE, OPTIONS],
    ),
    ("a lone CRLF before a message (RFC 3261 7.5)", b"\r\n" + OPTIONS, [OPTIONS]),
    ("body holding CRLF CRLF", BINARY, [BINARY]),
    ("folded Content-Length", FOLDED_CL, [FOLDED_CL]),
    ("compact Content-Length", COMPACT_CL, [COMPACT_CL]),
    ("frames but does not parse", BAD_START + OPTIONS, [("malformed", 400, BAD_START), OPTIONS]),
    (
        "two equal Content-Length frame, then fail to parse",
        TWO_EQUAL_CL + OPTIONS,
        [("malformed", 400, TWO_EQUAL_CL), OPTIONS],
    ),
]


@pytest.mark.parametrize(("stream", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_whole(stream: bytes, expected: list[object]) -> None:
    framer = StreamFramer()
    assert [describe(i) for i in framer.feed(stream)] == expected
    assert framer.buffered == 0


@pytest.mark.parametrize(("stream", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_one_byte_at_a_time(stream: bytes, expected: list[object]) -> None:
    framer = StreamFramer()
    got: list[object] = []
    for i in range(len(stream)):
        got.extend(describe(item) for item in framer.feed(stream[i : i + 1]))
    assert got == expected
    assert framer.buffered == 0


@pytest.mark.parametrize(("stream", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_with_trailing_bytes(stream: bytes, expected: list[object]) -> None:
    framer = StreamFramer()
    head = INVITE[:60]
    assert [describe(i) for i in framer.feed(stream + head)] == expected
    assert framer.buffered == len(head)
    assert [describe(i) for i in framer.feed(INVITE[60:])] == [INVITE]
    assert framer.buffered == 0


def test_a_partial_ping_waits() -> None:
    framer = StreamFramer()
    assert framer.feed(b"\r\n") == []
    assert framer.feed(b"\r") == []
    assert framer.feed(b"\n") == [KEEPALIVE]
    assert isinstance(KEEPALIVE, KeepAlive)


def test_a_lone_crlf_then_a_message() -> None:
    framer = StreamFramer()
    assert framer.feed(b"\r\n") == []
    assert framer.buffered == 2
    assert [describe(i) for i in framer.feed(OPTIONS)] == [OPTIONS]


def test_messages_are_framed_with_their_transport_rules() -> None:
    (msg,) = StreamFramer().feed(INVITE)
    assert isinstance(msg, Request)
    assert msg.method == "INVITE"
    assert msg.top_via().branch == "z9hG4bKnashds8"


# (id, stream, limits, status hint of the FramingError)
FATAL_CASES: list[tuple[str, bytes, Limits, int]] = [
    ("no Content-Length", b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h\r\n\r\n", Limits(), 400),
    (
        "conflicting Content-Length",
        b"MESSAGE sip:a@b SIP/2.0\r\nl: 2\r\nl: 3\r\n\r\nabc",
        Limits(),
        400,
    ),
    ("non-numeric Content-Length", b"MESSAGE sip:a@b SIP/2.0\r\nl: x\r\n\r\n", Limits(), 400),
    ("negative Content-Length", b"MESSAGE sip:a@b SIP/2.0\r\nl: -1\r\n\r\n", Limits(), 400),
    (
        "overlarge Content-Length",
        b"MESSAGE sip:a@b SIP/2.0\r\nl: 99999999999999\r\n\r\n",
        Limits(),
        513,
    ),
    ("message over the limit", INVITE, Limits(max_message_size=len(INVITE) - 1), 513),
    (
        "headers never end",
        b"OPTIONS sip:a@b SIP/2.0\r\n" + b"X: y\r\n" * 100,
        Limits(max_message_size=300),
        513,
    ),
]


@pytest.mark.parametrize(
    ("stream", "limits", "hint"), [c[1:] for c in FATAL_CASES], ids=[c[0] for c in FATAL_CASES]
)
def test_unrecoverable_framing(stream: bytes, limits: Limits, hint: int) -> None:
    framer = StreamFramer(limits)
    with pytest.raises(FramingError) as info:
        framer.feed(stream)
    assert info.value.status_hint == hint
    with pytest.raises(FramingError):  # the stream stays broken
        framer.feed(OPTIONS)


@pytest.mark.parametrize(
    ("stream", "limits", "hint"), [c[1:] for c in FATAL_CASES], ids=[c[0] for c in FATAL_CASES]
)
def test_unrecoverable_framing_one_byte_at_a_time(stream: bytes, limits: Limits, hint: int) -> None:
    framer = StreamFramer(limits)
    with pytest.raises(FramingError) as info:  # noqa: PT012 - the error comes at some byte
        for i in range(len(stream)):
            assert framer.feed(stream[i : i + 1]) == []
    assert info.value.status_hint == hint


def test_good_messages_before_a_fatal_one_are_not_lost() -> None:
    framer = StreamFramer()
    assert [describe(i) for i in framer.feed(OPTIONS)] == [OPTIONS]
    with pytest.raises(FramingError):
        framer.feed(b"OPTIONS sip:a@b SIP/2.0\r\n\r\n")
