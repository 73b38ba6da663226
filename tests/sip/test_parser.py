"""``parse``: start lines, header lines, framing on datagrams, limits (RFC 3261 7, 18.3).

Every accepted case is checked whole and with trailing bytes after its body (RFC 3261 18.3:
discarded); every refused case names the status hint it must carry.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from siplb.sip import (
    DEFAULT_LIMITS,
    CSeq,
    Limits,
    Message,
    MessageTooLarge,
    ParseError,
    Request,
    Response,
    canonical,
    parse,
    parse_cseq,
)

from .samples import INVITE, OPTIONS, RINGING, SDP


def req(
    *headers: bytes, start: bytes = b"OPTIONS sip:a@example.com SIP/2.0", body: bytes = b""
) -> bytes:
    """A request with the given raw header lines and a Content-Length that fits the body."""
    lines = [start, *headers, b"Content-Length: %d" % len(body)]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def resp(start: bytes, *headers: bytes) -> bytes:
    return b"\r\n".join([start, *headers, b"Content-Length: 0"]) + b"\r\n\r\n"


Check = Callable[[Message], object]

# (id, message bytes, {what: (accessor, expected)})
ACCEPT_CASES: list[tuple[str, bytes, dict[str, tuple[Check, object]]]] = [
    (
        "invite",
        INVITE,
        {
            "method": (lambda m: m.method, "INVITE"),  # type: ignore[attr-defined]
            "uri": (lambda m: m.uri, b"sip:bob@biloxi.example.com"),  # type: ignore[attr-defined]
            "call-id": (lambda m: m.call_id, b"a84b4c76e66710@pc33.atlanta.example.com"),
            "cseq": (lambda m: m.cseq, CSeq(314159, "INVITE")),
            "max-forwards": (lambda m: m.max_forwards, 70),
            "content-length": (lambda m: m.content_length, len(SDP)),
            "body": (lambda m: m.body, SDP),
            "from tag": (lambda m: m.from_tag, b"1928301774"),
            "to tag": (lambda m: m.to_tag, None),
            "routes": (
                lambda m: m.values(b"route"),
                [b"<sip:lb.example.com;lr>", b"<sip:p2.example.com;lr>"],
            ),
            "branch": (lambda m: m.top_via().branch, "z9hG4bKnashds8"),
        },
    ),
    (
        "response",
        RINGING,
        {
            "status": (lambda m: m.status, 180),  # type: ignore[attr-defined]
            "reason": (lambda m: m.reason, b"Ringing"),  # type: ignore[attr-defined]
            "vias": (lambda m: len(m.vias()), 2),
            "top via": (lambda m: m.top_via().sent_by, "lb.example.com:5060"),
            "to tag": (lambda m: m.to_tag, b"a6c85cf"),
        },
    ),
    (
        "empty reason phrase (RFC 4475 3.1.1.13)",
        resp(b"SIP/2.0 100 ", b"Via: SIP/2.0/UDP h;branch=z9hG4bK1"),
        {"reason": (lambda m: m.reason, b"")},  # type: ignore[attr-defined]
    ),
    (
        "no reason phrase at all",
        resp(b"SIP/2.0 100", b"Via: SIP/2.0/UDP h;branch=z9hG4bK1"),
        {"status": (lambda m: m.status, 100)},  # type: ignore[attr-defined]
    ),
    (
        "non-ASCII reason phrase (RFC 4475 3.1.1.12)",
        resp(b"SIP/2.0 404 Nicht gefunden \xc3\xa4\xc3\xb6", b"Via: SIP/2.0/UDP h"),
        {"reason": (lambda m: m.reason, b"Nicht gefunden \xc3\xa4\xc3\xb6")},  # type: ignore[attr-defined]
    ),
    (
        "extension method token",
        req(b"CSeq: 1 !x-Y_z.%*+`'~", start=b"!x-Y_z.%*+`'~ sip:a@example.com SIP/2.0"),
        {
            "method": (lambda m: m.method, "!x-Y_z.%*+`'~"),  # type: ignore[attr-defined]
            "cseq": (lambda m: m.cseq, CSeq(1, "!x-Y_z.%*+`'~")),
        },
    ),
    (
        "tel Request-URI",
        req(start=b"INVITE tel:+15551234567;phone-context=example.com SIP/2.0"),
        {"uri": (lambda m: m.parsed_uri().scheme, "tel")},  # type: ignore[attr-defined]
    ),
    (
        "lower-case version is accepted (RFC 3261 7.1)",
        req(start=b"OPTIONS sip:a@example.com sip/2.0"),
        {"version": (lambda m: m.version, b"sip/2.0")},  # type: ignore[attr-defined]
    ),
    (
        "leading CRLFs are ignored (RFC 3261 7.5)",
        b"\r\n\r\n" + OPTIONS,
        {"bytes": (lambda m: m.to_bytes(), OPTIONS)},
    ),
    (
        "every compact form",
        req(
            b"v: SIP/2.0/UDP h;branch=z9hG4bK1",
            b"i: cid",
            b"f: <sip:a@b>;tag=1",
            b"t: <sip:c@d>;tag=2",
            b"m: <sip:e@f>",
            b"c: text/plain",
            b"s: hi",
            b"k: timer",
            b"e: gzip",
            b"o: presence",
            b"u: dialog",
            b"r: <sip:x@y>",
            b"b: <sip:z@w>",
            b"x: 1800",
            b"a: *;audio",
            b"j: *;video",
            b"d: proxy",
            b"y: abc",
            b"n: <https://example.com/cert>",
        ),
        {
            "via": (lambda m: m.top_via().host, "h"),
            "call-id": (lambda m: m.call_id, b"cid"),
            "from tag": (lambda m: m.from_tag, b"1"),
            "to tag": (lambda m: m.to_tag, b"2"),
            "long names": (
                lambda m: [m.get(n) for n in (b"Contact", b"Content-Type", b"Subject")],
                [b"<sip:e@f>", b"text/plain", b"hi"],
            ),
            "more long names": (
                lambda m: [
                    m.get(n)
                    for n in (
                        b"Supported",
                        b"Content-Encoding",
                        b"Event",
                        b"Allow-Events",
                        b"Refer-To",
                        b"Referred-By",
                        b"Session-Expires",
                        b"Accept-Contact",
                        b"Reject-Contact",
                        b"Request-Disposition",
                        b"Identity",
                        b"Identity-Info",
                    )
                ],
                [
                    b"timer",
                    b"gzip",
                    b"presence",
                    b"dialog",
                    b"<sip:x@y>",
                    b"<sip:z@w>",
                    b"1800",
                    b"*;audio",
                    b"*;video",
                    b"proxy",
                    b"abc",
                    b"<https://example.com/cert>",
                ],
            ),
            "content-length": (lambda m: m.get(b"l"), b"0"),
        },
    ),
    (
        "case-insensitive names and white space before the colon",
        req(b"cAlL-iD  : x1", b"MAX-FORWARDS:\t7", b"via:SIP/2.0/UDP h"),
        {
            "call-id": (lambda m: m.call_id, b"x1"),
            "max-forwards": (lambda m: m.max_forwards, 7),
            "names": (lambda m: m.header_names()[:2], [b"call-id", b"max-forwards"]),
        },
    ),
    (
        "folded values (RFC 3261 7.3.1)",
        req(
            b"Subject: first",
            b"  second\t",
            b"\tthird",
            b"CSeq: 0009",
            b"  OPTIONS",
            b"Max-Forwards: 0068",
        ),
        {
            "subject": (lambda m: m.get(b"subject"), b"first second third"),
            "cseq": (lambda m: m.cseq, CSeq(9, "OPTIONS")),
            "max-forwards": (lambda m: m.max_forwards, 68),
            "headers": (lambda m: m.headers[0], (b"Subject", b"first second third")),
        },
    ),
    (
        "empty header value",
        req(b"Subject:", b"X-Empty:   "),
        {"values": (lambda m: [m.get(b"subject"), m.get(b"x-empty")], [b"", b""])},
    ),
    (
        "list headers split around quotes and <...>",
        req(
            b'Contact: "Doe, John" <sip:j@a;x=1,2>;q=0.5, <sip:k@b>',
            b"Contact: sip:l@c",
            b'Warning: 399 h "a, b", 399 h "c\\", d"',
        ),
        {
            "contact": (
                lambda m: m.values(b"contact"),
                [b'"Doe, John" <sip:j@a;x=1,2>;q=0.5', b"<sip:k@b>", b"sip:l@c"],
            ),
            "warning": (
                lambda m: m.values(b"warning"),
                [b'399 h "a, b"', b'399 h "c\\", d"'],
            ),
            "count": (lambda m: m.count(b"m"), 2),
            "get_all": (lambda m: len(m.get_all(b"Contact")), 2),
        },
    ),
    (
        "no Content-Length on a datagram: the body runs to the end",
        b"MESSAGE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h\r\n\r\nhello\r\n",
        {"body": (lambda m: m.body, b"hello\r\n"), "cl": (lambda m: m.content_length, None)},
    ),
    (
        "Content-Length with leading zeros",
        b"MESSAGE sip:a@b SIP/2.0\r\nContent-Length: 0005\r\n\r\nhello",
        {"body": (lambda m: m.body, b"hello")},
    ),
    (
        "binary body with NUL and CRLF CRLF",
        req(start=b"MESSAGE sip:a@b SIP/2.0", body=b"\x00\r\n\r\n\xff"),
        {"body": (lambda m: m.body, b"\x00\r\n\r\n\xff")},
    ),
    (
        "start line only",
        b"OPTIONS sip:a@b SIP/2.0\r\n\r\n",
        {"names": (lambda m: m.header_names(), []), "via": (lambda m: m.get(b"via"), None)},
    ),
    (
        "IPv6 Request-URI",
        req(start=b"OPTIONS sip:[2001:db8::1]:5060;transport=tcp SIP/2.0"),
        {"host": (lambda m: m.parsed_uri().host, "2001:db8::1")},  # type: ignore[attr-defined]
    ),
    (
        "status code 699",
        resp(b"SIP/2.0 699 Whatever", b"Via: SIP/2.0/UDP h"),
        {"status": (lambda m: m.status, 699)},  # type: ignore[attr-defined]
    ),
]


@pytest.mark.parametrize(
    ("data", "checks"), [c[1:] for c in ACCEPT_CASES], ids=[c[0] for c in ACCEPT_CASES]
)
def test_accepted_whole(data: bytes, checks: dict[str, tuple[Check, object]]) -> None:
    msg = parse(data)
    assert msg.to_bytes() == data.lstrip(b"\r\n")
    for what, (get, expected) in checks.items():
        assert get(msg) == expected, what


# Without Content-Length a datagram's body runs to its end, so trailing bytes would be body.
FRAMED_CASES = [c for c in ACCEPT_CASES if b"content-length" in c[1].lower()]


@pytest.mark.parametrize(
    ("data", "checks"), [c[1:] for c in FRAMED_CASES], ids=[c[0] for c in FRAMED_CASES]
)
def test_accepted_with_trailing_bytes(data: bytes, checks: dict[str, tuple[Check, object]]) -> None:
    """RFC 3261 18.3: bytes past Content-Length are not part of the message."""
    msg = parse(data + b"INVITE sip:junk SIP/2.0\r\n\r\n")
    assert msg.to_bytes() == data.lstrip(b"\r\n")
    assert msg == parse(data)
    for what, (get, expected) in checks.items():
        assert get(msg) == expected, what


# (id, bytes, status hint)
REFUSE_CASES: list[tuple[str, bytes, int]] = [
    ("empty", b"", 400),
    ("only CRLFs", b"\r\n\r\n\r\n", 400),
    ("no empty line", b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h\r\n", 400),
    ("garbage", b"\x00\x01\x02\r\n\r\n", 400),
    ("two fields", b"OPTIONS sip:a@b\r\n\r\n", 400),
    ("four fields", b"OPTIONS sip:a@b x SIP/2.0\r\n\r\n", 400),
    ("double space", b"OPTIONS  sip:a@b SIP/2.0\r\n\r\n", 400),
    ("trailing space", b"OPTIONS sip:a@b SIP/2.0 \r\n\r\n", 400),
    ("tab separator", b"OPTIONS\tsip:a@b SIP/2.0\r\n\r\n", 400),
    ("method not a token", b"OPT(IONS sip:a@b SIP/2.0\r\n\r\n", 400),
    ("method non-ASCII", b"OPT\xc3\xa9 sip:a@b SIP/2.0\r\n\r\n", 400),
    ("URI in <>", b"OPTIONS <sip:a@b> SIP/2.0\r\n\r\n", 400),
    ("URI without scheme", b"OPTIONS a.example.com SIP/2.0\r\n\r\n", 400),
    ("URI with control", b"OPTIONS sip:a@b\x01 SIP/2.0\r\n\r\n", 400),
    ("URI with non-ASCII", b"OPTIONS sip:\xc3\xa9@b SIP/2.0\r\n\r\n", 400),
    ("version 7.0", b"OPTIONS sip:a@b SIP/7.0\r\n\r\n", 505),
    ("version 2.1", b"OPTIONS sip:a@b SIP/2.1\r\n\r\n", 505),
    ("version 3", b"OPTIONS sip:a@b SIP/3.0\r\n\r\n", 505),
    ("version malformed", b"OPTIONS sip:a@b SIP/2\r\n\r\n", 400),
    ("HTTP", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("response version 7.0", b"SIP/7.0 200 OK\r\n\r\n", 505),
    ("response version garbage", b"SIP/x 200 OK\r\n\r\n", 400),
    ("status 2 digits", b"SIP/2.0 99 OK\r\n\r\n", 400),
    ("status 4 digits", b"SIP/2.0 1000 OK\r\n\r\n", 400),
    ("status 4294967301 (RFC 4475 3.1.2.19)", b"SIP/2.0 4294967301 x\r\n\r\n", 400),
    ("status 099", b"SIP/2.0 099 x\r\n\r\n", 400),
    ("status 700", b"SIP/2.0 700 x\r\n\r\n", 400),
    ("status letters", b"SIP/2.0 2OO OK\r\n\r\n", 400),
    ("status double space", b"SIP/2.0  200 OK\r\n\r\n", 400),
    ("NUL in reason", b"SIP/2.0 200 O\x00K\r\n\r\n", 400),
    ("header without colon", req(b"Subject hi"), 400),
    ("continuation before the first header", req(start=b"OPTIONS sip:a@b SIP/2.0\r\n folded"), 400),
    ("header name with space", req(b"Sub ject: hi"), 400),
    ("header name not a token", req(b"Sub(ject: hi"), 400),
    ("empty header name", req(b": hi"), 400),
    ("bare LF in a value", req(b"Subject: a\nVia: smuggled"), 400),
    ("bare CR in a value", req(b"Subject: a\rb"), 400),
    ("bare LF in the start line", b"OPTIONS sip:a@b\nSIP/2.0\r\nVia: SIP/2.0/UDP h\r\n\r\n", 400),
    ("bare LF with folding", req(b"Subject: a", b" b\nc"), 400),
    ("two Content-Length (RFC 4475 3.3.9)", req(b"l: 0"), 400),
    ("two equal Content-Length", req(b"Content-Length: 0"), 400),
    (
        "Content-Length negative (RFC 4475 3.1.2.3)",
        b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: -1\r\n\r\n",
        400,
    ),
    ("Content-Length not a number", b"OPTIONS sip:a@b SIP/2.0\r\nl: five\r\n\r\nhello", 400),
    ("Content-Length empty", b"OPTIONS sip:a@b SIP/2.0\r\nl:\r\n\r\n", 400),
    ("Content-Length with sign", b"OPTIONS sip:a@b SIP/2.0\r\nl: +5\r\n\r\nhello", 400),
    (
        "Content-Length overlarge",
        b"OPTIONS sip:a@b SIP/2.0\r\nl: 99999999999999999999\r\n\r\n",
        400,
    ),
    (
        "Content-Length past the end (RFC 4475 3.1.2.2)",
        b"OPTIONS sip:a@b SIP/2.0\r\nl: 6\r\n\r\nhello",
        400,
    ),
    ("Content-Length with unicode digits", "OPTIONS sip:a@b SIP/2.0\r\nl: ²\r\n\r\n".encode(), 400),
]


@pytest.mark.parametrize(
    ("data", "hint"), [c[1:] for c in REFUSE_CASES], ids=[c[0] for c in REFUSE_CASES]
)
def test_refused(data: bytes, hint: int) -> None:
    with pytest.raises(ParseError) as info:
        parse(data)
    assert info.value.status_hint == hint
    assert info.value.reason


LIMIT_CASES: list[tuple[str, bytes, Limits]] = [
    ("message size", INVITE, Limits(max_message_size=len(INVITE) - 1)),
    ("header count", INVITE, Limits(max_headers=9)),
    ("line length", req(b"Subject: " + b"x" * 100), Limits(max_line_length=100)),
    (
        "start line length",
        req(start=b"OPTIONS sip:" + b"a" * 100 + b"@b SIP/2.0"),
        Limits(max_line_length=100),
    ),
    ("folded line length", req(b"Subject: a", b" " + b"x" * 120), Limits(max_line_length=100)),
    ("default header count", req(*[b"X: 1"] * 300), DEFAULT_LIMITS),
    ("default size", req(start=b"MESSAGE sip:a@b SIP/2.0", body=b"x" * 70000), DEFAULT_LIMITS),
]


@pytest.mark.parametrize(
    ("data", "limits"), [c[1:] for c in LIMIT_CASES], ids=[c[0] for c in LIMIT_CASES]
)
def test_limits(data: bytes, limits: Limits) -> None:
    with pytest.raises(MessageTooLarge) as info:
        parse(data, limits)
    assert info.value.status_hint == 513
    assert isinstance(info.value, ParseError)


def test_limits_are_inclusive() -> None:
    assert parse(INVITE, Limits(max_message_size=len(INVITE), max_headers=10)).method == "INVITE"  # type: ignore[union-attr]


def test_extra_bytes_are_discarded_from_the_raw_message() -> None:
    """RFC 3261 18.3 / RFC 4475 3.1.1.8: a second message after Content-Length 0 goes."""
    msg = parse(OPTIONS + INVITE)
    assert isinstance(msg, Request)
    assert msg.method == "OPTIONS"
    assert msg.to_bytes() == OPTIONS
    assert msg.body == b""


def test_message_kinds() -> None:
    assert isinstance(parse(INVITE), Request)
    assert isinstance(parse(RINGING), Response)
    assert repr(parse(INVITE)) == "<Request INVITE sip:bob@biloxi.example.com>"
    assert repr(parse(RINGING)) == "<Response 180 Ringing>"
    assert bytes(parse(INVITE)) == INVITE


def test_messages_compare_by_content() -> None:
    a, b = parse(INVITE), parse(INVITE)
    assert a == b
    assert hash(a) == hash(b)
    assert a != parse(OPTIONS)
    assert a != parse(RINGING)
    assert (a == INVITE) is False


# (id, value, number, method) and malformed values
CSEQ_CASES = [
    ("simple", b"1 INVITE", 1, "INVITE"),
    ("leading zeros", b"0009 INVITE", 9, "INVITE"),
    ("largest", b"2147483647 BYE", 2**31 - 1, "BYE"),
    ("many zeros", b"00000000000001 ACK", 1, "ACK"),
    ("tab", b"5\tOPTIONS", 5, "OPTIONS"),
    ("folded", b"5\r\n  INFO", 5, "INFO"),
    ("extension", b"7 FOO-bar", 7, "FOO-bar"),
    ("zero", b"0 REGISTER", 0, "REGISTER"),
]
BAD_CSEQ = [
    b"",
    b"INVITE",
    b"1",
    b"2147483648 INVITE",
    b"-1 INVITE",
    b"1 INVITE x",
    b"1 IN(VITE",
    b"a1 BYE",
    b"36893488147419103232 REGISTER",
    "1² BYE".encode(),
]


@pytest.mark.parametrize(
    ("value", "number", "method"), [c[1:] for c in CSEQ_CASES], ids=[c[0] for c in CSEQ_CASES]
)
def test_cseq(value: bytes, number: int, method: str) -> None:
    assert parse_cseq(value) == CSeq(number, method)


@pytest.mark.parametrize("value", BAD_CSEQ)
def test_cseq_refused(value: bytes) -> None:
    with pytest.raises(ParseError):
        parse_cseq(value)


# (header line, accessor, expected or ParseError)
SCALAR_CASES: list[tuple[bytes, Check, object]] = [
    (b"Max-Forwards: 0", lambda m: m.max_forwards, 0),
    (b"Max-Forwards: 255", lambda m: m.max_forwards, 255),
    (b"Max-Forwards: 00255", lambda m: m.max_forwards, 255),
    (b"Max-Forwards: 256", lambda m: m.max_forwards, ParseError),
    (b"Max-Forwards: 300", lambda m: m.max_forwards, ParseError),
    (b"Max-Forwards: -1", lambda m: m.max_forwards, ParseError),
    (b"Max-Forwards: 7a", lambda m: m.max_forwards, ParseError),
    (b"Max-Forwards:", lambda m: m.max_forwards, ParseError),
    (b"Expires: 3600", lambda m: m.expires, 3600),
    (b"Expires: 4294967295", lambda m: m.expires, 2**32 - 1),
    (b"Expires: 4294967296", lambda m: m.expires, ParseError),
    (b"Expires: 1" + b"0" * 100, lambda m: m.expires, ParseError),
    (b"Expires: Thu, 01 Dec 1994 16:00:00 GMT", lambda m: m.expires, ParseError),
    (b"Call-ID: abc@def", lambda m: m.call_id, b"abc@def"),
    (b"i: abc", lambda m: m.call_id, b"abc"),
    (b"X-Other: 1", lambda m: m.call_id, None),
    (b"X-Other: 1", lambda m: m.max_forwards, None),
    (b"X-Other: 1", lambda m: m.expires, None),
    (b"X-Other: 1", lambda m: m.from_tag, None),
    (b"X-Other: 1", lambda m: m.cseq, ParseError),
    (b"X-Other: 1", lambda m: m.top_via(), ParseError),
    (b"X-Other: 1", lambda m: m.name_addr(b"to"), None),
]


@pytest.mark.parametrize(("line", "get", "expected"), SCALAR_CASES)
def test_scalar_views(line: bytes, get: Check, expected: object) -> None:
    msg = parse(req(line))
    if expected is ParseError:
        with pytest.raises(ParseError):
            get(msg)
    else:
        assert get(msg) == expected


CANONICAL_CASES = [
    (b"Via", b"via"),
    (b"v", b"via"),
    (b"V", b"via"),
    (b"  Via\t", b"via"),
    (b"l", b"content-length"),
    (b"X-Custom", b"x-custom"),
    (b"bad name", b""),
    (b"", b""),
    (b"caf\xc3\xa9", b""),
]


@pytest.mark.parametrize(("name", "key"), CANONICAL_CASES)
def test_canonical(name: bytes, key: bytes) -> None:
    assert canonical(name) == key


def test_message_build() -> None:
    built = Request.build(
        "OPTIONS",
        b"sip:a@b",
        [(b"Via", b"SIP/2.0/UDP h;branch=z9hG4bK1"), (b"Content-Length", b"0")],
    )
    assert built.to_bytes() == (
        b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nContent-Length: 0\r\n\r\n"
    )
    assert parse(built.to_bytes()) == built
    answer = Response.build(200, b"OK", [(b"Via", b"SIP/2.0/UDP h")])
    assert answer.to_bytes() == b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h\r\n\r\n"
    assert parse(answer.to_bytes()) == answer
