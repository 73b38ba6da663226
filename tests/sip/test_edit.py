"""A proxy's edits (RFC 3261 16.6, 16.7): each changes only the bytes it is about."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from siplb.sip import LocalProtocolError, Message, Request, parse

from .samples import INVITE, RINGING

START = b"OPTIONS sip:a@example.com SIP/2.0"


def msg(*lines: bytes, start: bytes = START, body: bytes = b"") -> bytes:
    return b"\r\n".join([start, *lines]) + b"\r\n\r\n" + body


Edit = Callable[[Message], Message]

# (id, original, edit, expected bytes)
CASES: list[tuple[str, bytes, Edit, bytes]] = [
    (
        "Via at the top",
        msg(b"Via:  SIP/2.0/UDP a;branch=z9hG4bK1", b"l: 0"),
        lambda m: m.with_header_first(b"Via", b"SIP/2.0/UDP lb;branch=z9hG4bKlb"),
        msg(
            b"Via: SIP/2.0/UDP lb;branch=z9hG4bKlb", b"Via:  SIP/2.0/UDP a;branch=z9hG4bK1", b"l: 0"
        ),
    ),
    (
        "Record-Route at the top of a message without headers",
        msg(),
        lambda m: m.with_header_first(b"Record-Route", b"<sip:lb;lr>"),
        msg(b"Record-Route: <sip:lb;lr>"),
    ),
    (
        "top Via of a one-value line",
        msg(b"v: SIP/2.0/UDP lb;branch=z9hG4bKlb", b"Via: SIP/2.0/UDP a", b"l: 0"),
        lambda m: m.without_top_value(b"via"),
        msg(b"Via: SIP/2.0/UDP a", b"l: 0"),
    ),
    (
        "top Via of a list line",
        msg(b"Via: SIP/2.0/UDP lb;branch=z9hG4bKlb ,  SIP/2.0/UDP a ;x=1, SIP/2.0/UDP b", b"l: 0"),
        lambda m: m.without_top_value(b"Via"),
        msg(b"Via: SIP/2.0/UDP a ;x=1, SIP/2.0/UDP b", b"l: 0"),
    ),
    (
        "top Via, folded list line",
        msg(b"Via:\tSIP/2.0/UDP lb,\r\n   SIP/2.0/UDP a,\r\n SIP/2.0/UDP b", b"l: 0"),
        lambda m: m.without_top_value(b"via"),
        msg(b"Via:\tSIP/2.0/UDP a,\r\n SIP/2.0/UDP b", b"l: 0"),
    ),
    (
        "top Via whose parameter holds a quoted comma",
        msg(b'Via: SIP/2.0/UDP lb;x="1,2", SIP/2.0/UDP a'),
        lambda m: m.without_top_value(b"via"),
        msg(b"Via: SIP/2.0/UDP a"),
    ),
    (
        "top value with a trailing comma",
        msg(b"Via: SIP/2.0/UDP lb,", b"Via: SIP/2.0/UDP a"),
        lambda m: m.without_top_value(b"via"),
        msg(b"Via: SIP/2.0/UDP a"),
    ),
    (
        "top Route with a comma in the display name",
        msg(b'Route: "lb, one" <sip:lb;lr>, <sip:next;lr>', b"Subject: x"),
        lambda m: m.without_top_value(b"route"),
        msg(b"Route: <sip:next;lr>", b"Subject: x"),
    ),
    (
        "a header that is not a list goes whole",
        msg(b"Subject: a, b", b"Via: SIP/2.0/UDP a"),
        lambda m: m.without_top_value(b"subject"),
        msg(b"Via: SIP/2.0/UDP a"),
    ),
    (
        "last header",
        msg(b"Via: SIP/2.0/UDP a", b"Route: <sip:lb;lr>"),
        lambda m: m.without_top_value(b"route"),
        msg(b"Via: SIP/2.0/UDP a"),
    ),
    (
        "Request-URI",
        msg(b"Via: SIP/2.0/UDP a", b"l: 0"),
        lambda m: m.with_uri(b"sip:b@192.0.2.7:5080"),  # type: ignore[attr-defined]
        msg(b"Via: SIP/2.0/UDP a", b"l: 0", start=b"OPTIONS sip:b@192.0.2.7:5080 SIP/2.0"),
    ),
    (
        "replace the first of two lines",
        msg(b"Max-Forwards :  70", b"Max-Forwards: 5", b"l: 0"),
        lambda m: m.with_header(b"max-forwards", b"69"),
        msg(b"Max-Forwards : 69", b"Max-Forwards: 5", b"l: 0"),
    ),
    (
        "replace a folded value",
        msg(b"Subject: a\r\n b", b"l: 0"),
        lambda m: m.with_header(b"Subject", b"c"),
        msg(b"Subject: c", b"l: 0"),
    ),
    (
        "add a header at the end when absent",
        msg(b"Via: SIP/2.0/UDP a"),
        lambda m: m.with_header(b"Max-Forwards", b"70"),
        msg(b"Via: SIP/2.0/UDP a", b"Max-Forwards: 70"),
    ),
    (
        "remove every line of a header, compact forms too",
        msg(b"Route: <sip:a>", b"Via: SIP/2.0/UDP a", b"route: <sip:b>", b"Subject: s"),
        lambda m: m.without_header(b"Route"),
        msg(b"Via: SIP/2.0/UDP a", b"Subject: s"),
    ),
    (
        "removing an absent header changes nothing",
        msg(b"Via: SIP/2.0/UDP a"),
        lambda m: m.without_header(b"Route"),
        msg(b"Via: SIP/2.0/UDP a"),
    ),
    (
        "edits keep the body",
        msg(b"Content-Length: 5", start=b"MESSAGE sip:a@b SIP/2.0", body=b"hello"),
        lambda m: m.with_header_first(b"Via", b"SIP/2.0/UDP lb").with_header(b"Subject", b"s"),
        msg(
            b"Via: SIP/2.0/UDP lb",
            b"Content-Length: 5",
            b"Subject: s",
            start=b"MESSAGE sip:a@b SIP/2.0",
            body=b"hello",
        ),
    ),
    (
        "a proxy's whole turn on an INVITE",
        INVITE,
        lambda m: (
            m.without_top_value(b"route")
            .with_header(b"Max-Forwards", b"69")
            .with_header_first(b"Record-Route", b"<sip:lb.example.com;lr>")
            .with_header_first(b"Via", b"SIP/2.0/UDP lb.example.com;branch=z9hG4bKlb1")
        ),
        INVITE.replace(
            b"Max-Forwards: 70\r\nRoute: <sip:lb.example.com;lr>, <sip:p2.example.com;lr>",
            b"Max-Forwards: 69\r\nRoute: <sip:p2.example.com;lr>",
        ).replace(
            b"SIP/2.0\r\n",
            b"SIP/2.0\r\nVia: SIP/2.0/UDP lb.example.com;branch=z9hG4bKlb1\r\n"
            b"Record-Route: <sip:lb.example.com;lr>\r\n",
            1,
        ),
    ),
    (
        "the top Via of a response",
        RINGING,
        lambda m: m.without_top_value(b"via"),
        RINGING.replace(b"SIP/2.0/UDP lb.example.com:5060;branch=z9hG4bK.lb.1, ", b""),
    ),
]


@pytest.mark.parametrize(
    ("original", "edit", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_edit(original: bytes, edit: Edit, expected: bytes) -> None:
    before = parse(original)
    after = edit(before)
    assert after.to_bytes() == expected
    assert before.to_bytes() == original  # messages are values
    assert parse(expected) == after
    assert after.headers == parse(expected).headers
    assert after.header_names() == parse(expected).header_names()


@pytest.mark.parametrize(
    ("original", "edit", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_lookups_after_an_edit(original: bytes, edit: Edit, expected: bytes) -> None:
    after = edit(parse(original))
    again = parse(expected)
    for name in (b"via", b"route", b"max-forwards", b"subject", b"content-length", b"record-route"):
        assert after.get(name) == again.get(name), name
        assert after.get_all(name) == again.get_all(name), name


def test_edited_vias_are_read_in_order() -> None:
    forwarded = parse(INVITE).with_header_first(
        b"Via", b"SIP/2.0/UDP lb.example.com;branch=z9hG4bKlb1"
    )
    assert [v.branch for v in forwarded.vias()] == ["z9hG4bKlb1", "z9hG4bKnashds8"]
    assert forwarded.top_via().host == "lb.example.com"
    back = forwarded.without_top_value(b"via")
    assert back.to_bytes() == INVITE
    assert back.top_via().branch == "z9hG4bKnashds8"


MISUSE_CASES: list[tuple[str, Edit]] = [
    ("name not a token", lambda m: m.with_header_first(b"Bad Name", b"x")),
    ("empty name", lambda m: m.with_header_first(b"", b"x")),
    ("CRLF in a value", lambda m: m.with_header_first(b"Via", b"x\r\nEvil: 1")),
    ("bare LF in a value", lambda m: m.with_header(b"Subject", b"x\ny")),
    ("no such header to remove from", lambda m: m.without_top_value(b"route")),
    ("URI with a space", lambda m: m.with_uri(b"sip:a b")),  # type: ignore[attr-defined]
    ("empty URI", lambda m: m.with_uri(b"")),  # type: ignore[attr-defined]
]


@pytest.mark.parametrize("edit", [c[1] for c in MISUSE_CASES], ids=[c[0] for c in MISUSE_CASES])
def test_misuse_is_a_local_error(edit: Edit) -> None:
    with pytest.raises(LocalProtocolError):
        edit(parse(msg(b"Via: SIP/2.0/UDP a")))


def test_build_refuses_bad_headers() -> None:
    with pytest.raises(LocalProtocolError):
        Request.build("OPTIONS", b"sip:a@b", [(b"Bad Name", b"x")])
    with pytest.raises(LocalProtocolError):
        Request.from_lines("OPTIONS", b"sip:a@b", [b"via"], [b"no colon here"])
    with pytest.raises(LocalProtocolError):
        Request.from_lines("OPTIONS", b"sip:a@b", [b"via", b"to"], [b"Via: x"])
