"""Properties (Hypothesis): round trips through bytes, and "``ParseError`` or nothing".

- ``parse(m.to_bytes()) == m`` for generated requests and responses, before and after edits;
- URI, Via and name-addr values survive ``to_bytes`` and back;
- random bytes, and valid messages mutated (bit flips, truncation, CR/LF/NUL/quotes/<> inserted),
  make ``parse``, every typed view, ``validate_*`` and the stream framer raise ``ParseError`` or
  nothing else (the fuzz target in fuzz/fuzz_parse.py checks the same at scale).

Examples are derandomized and no database is kept, so a run is the same everywhere and takes a
few seconds. ``SIPLB_PROPERTY_SCALE=50`` multiplies the examples and draws them at random, for a
longer search by hand.
"""

from __future__ import annotations

import contextlib
import os
import string
from collections.abc import Callable
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from siplb.sip import (
    LocalProtocolError,
    Message,
    NameAddr,
    ParseError,
    Request,
    Response,
    SipUri,
    StreamFramer,
    Via,
    canonical,
    parse,
    parse_name_addr,
    parse_uri,
    parse_via,
    tag_of,
    validate_request,
    validate_response,
)

from .samples import INVITE, OPTIONS, RINGING

SCALE = int(os.environ.get("SIPLB_PROPERTY_SCALE", "1"))
FAST = settings(
    max_examples=100 * SCALE,
    derandomize=SCALE == 1,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# ---- strategies ------------------------------------------------------------------------------
TOKEN_CHARS = string.ascii_letters + string.digits + "-.!%*_+`'~"
tokens = st.text(TOKEN_CHARS, min_size=1, max_size=10)
lower_tokens = tokens.map(str.lower)
labels = st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=8)
hostnames = st.lists(labels, min_size=1, max_size=3).map(".".join)
ipv4 = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t)))
ipv6 = st.ip_addresses(v=6).map(str)
hosts = st.one_of(hostnames, ipv4, ipv6)
ports = st.none() | st.integers(0, 65535)
latin1_text = st.text(
    st.characters(min_codepoint=0, max_codepoint=255, exclude_characters="\r\n"), max_size=12
)
USER_CHARS = string.ascii_letters + string.digits + "-_.!~*'()&=+$,;?/"
users = st.lists(
    st.one_of(st.sampled_from(USER_CHARS), st.integers(0, 255).map("%{:02X}".format)),
    min_size=1,
    max_size=8,
).map(lambda parts: "".join(parts).encode())
PASSWORD_CHARS = string.ascii_letters + string.digits + "-_.!~*'()&=+$,"
passwords = st.none() | st.text(PASSWORD_CHARS, max_size=6).map(str.encode)
HCHARS = string.ascii_letters + string.digits + "-_.!~*'()[]/?:+$"
uri_headers = st.lists(
    st.tuples(st.text(HCHARS, min_size=1, max_size=5), st.text(HCHARS, max_size=5)).map("=".join),
    max_size=2,
).map(lambda hs: "&".join(hs).encode())


@st.composite
def sip_uris(draw: st.DrawFn) -> SipUri:
    user = draw(st.none() | users)
    return SipUri(
        scheme=draw(st.sampled_from(["sip", "sips"])),
        host=draw(hosts),
        port=draw(ports),
        user=user,
        password=None if user is None else draw(passwords),
        params=draw(
            st.dictionaries(lower_tokens, st.none() | latin1_text.filter(bool), max_size=3)
        ),
        headers=draw(uri_headers),
    )


via_param_values = st.one_of(st.none(), tokens, latin1_text)
SPECIAL_VIA_PARAMS = {"branch", "ttl", "rport", "received"}


@st.composite
def vias(draw: st.DrawFn) -> Via:
    params = draw(
        st.dictionaries(
            lower_tokens.filter(lambda n: n not in SPECIAL_VIA_PARAMS), via_param_values, max_size=3
        )
    )
    if draw(st.booleans()):
        params["branch"] = "z9hG4bK" + draw(tokens)
    if draw(st.booleans()):
        params["rport"] = draw(st.none() | st.integers(0, 65535).map(str))
    if draw(st.booleans()):
        params["received"] = draw(st.one_of(ipv4, ipv6))
    if draw(st.booleans()):
        params["ttl"] = str(draw(st.integers(0, 255)))
    transport = draw(st.sampled_from(["UDP", "TCP", "TLS", "SCTP", "WS"]) | tokens.map(str.upper))
    return Via(transport, draw(hosts).lower(), draw(ports), params)


display_bytes = st.binary(max_size=12).filter(lambda b: b"\r" not in b and b"\n" not in b)


@st.composite
def name_addrs(draw: st.DrawFn) -> NameAddr:
    uri = draw(sip_uris()).to_bytes()
    params = draw(st.dictionaries(lower_tokens, via_param_values, max_size=3))
    return NameAddr(uri, draw(st.none() | display_bytes), params)


NAMES = [b"Via", b"v", b"To", b"t", b"From", b"f", b"Call-ID", b"i", b"CSeq", b"Contact", b"m"]
NAMES += [b"Subject", b"s", b"Route", b"Record-Route", b"Max-Forwards", b"X-Custom", b"Supported"]
header_names = st.one_of(st.sampled_from(NAMES), tokens.map(str.encode)).filter(
    lambda n: canonical(n) != b"content-length"
)
header_values = st.binary(max_size=20).map(
    lambda b: b.replace(b"\r", b"").replace(b"\n", b"").strip(b" \t")
)
headers = st.lists(st.tuples(header_names, header_values), max_size=8)
bodies = st.binary(max_size=40)


@st.composite
def messages(draw: st.DrawFn) -> Message:
    pairs = draw(headers)
    body = draw(bodies)
    pairs.append((draw(st.sampled_from([b"Content-Length", b"l"])), b"%d" % len(body)))
    if draw(st.booleans()):
        uri = draw(st.one_of(sip_uris().map(SipUri.to_bytes), st.just(b"tel:+15551234567")))
        return Request.build(draw(tokens), uri, pairs, body)
    reason = draw(st.binary(max_size=12)).translate(None, b"\r\n\x00")
    return Response.build(draw(st.integers(100, 699)), reason, pairs, body)


Edit = Callable[[Message], Message]
EDITS: list[Edit] = [
    lambda m: m.with_header_first(b"Via", b"SIP/2.0/UDP lb.example.com;branch=z9hG4bKlb"),
    lambda m: m.with_header_first(b"Record-Route", b"<sip:lb.example.com;lr>"),
    lambda m: m.without_top_value(b"via") if m.has(b"via") else m,
    lambda m: m.without_top_value(b"route") if m.has(b"route") else m,
    lambda m: m.with_header(b"Max-Forwards", b"69"),
    lambda m: m.without_header(b"subject"),
    lambda m: m.with_uri(b"sip:next@192.0.2.9") if isinstance(m, Request) else m,
]

# ---- round trips -----------------------------------------------------------------------------


@FAST
@given(messages())
def test_message_round_trip(msg: Message) -> None:
    again = parse(msg.to_bytes())
    assert again == msg
    assert again.headers == msg.headers
    assert again.header_names() == msg.header_names()
    assert again.body == msg.body


@FAST
@given(messages(), st.lists(st.sampled_from(EDITS), max_size=5))
def test_edited_message_round_trip(msg: Message, edits: list[Edit]) -> None:
    for edit in edits:
        msg = edit(msg)
    again = parse(msg.to_bytes())
    assert again == msg
    assert again.header_names() == msg.header_names()
    for key in set(msg.header_names()):
        assert again.get(key) == msg.get(key)


@FAST
@given(sip_uris())
def test_uri_round_trip(uri: SipUri) -> None:
    assert parse_uri(uri.to_bytes()) == uri


@FAST
@given(vias())
def test_via_round_trip(via: Via) -> None:
    again = parse_via(via.to_bytes())
    assert again == via
    assert again.branch == via.branch
    assert again.params == via.params
    assert parse_via(again.to_bytes()) == via


@FAST
@given(name_addrs())
def test_name_addr_round_trip(addr: NameAddr) -> None:
    raw = addr.to_bytes()
    assert parse_name_addr(raw) == addr
    tag = addr.params.get("tag")
    assert tag_of(raw) == (None if tag is None else tag.encode("latin-1"))


# ---- only ParseError -------------------------------------------------------------------------

VECTORS = sorted((Path(__file__).parent.parent / "vectors" / "rfc4475").glob("*.sip"))
SEEDS = [INVITE, RINGING, OPTIONS, *(p.read_bytes() for p in VECTORS)]
NASTY = [
    b"\r",
    b"\n",
    b"\r\n",
    b"\r\n\r\n",
    b"\x00",
    b'"',
    b"<",
    b">",
    b",",
    b";",
    b":",
    b" ",
    b"\\",
    b"%",
    b"[",
    b"]",
]

Check = Callable[[Message], object]


def _via_fields(m: Message) -> object:
    return [
        (v.branch, v.sent_by, v.rport, v.ttl, v.received, v.maddr, v.to_bytes()) for v in m.vias()
    ]


VIEWS: list[Check] = [
    lambda m: m.top_via().branch,
    _via_fields,
    lambda m: m.cseq,
    lambda m: m.max_forwards,
    lambda m: m.content_length,
    lambda m: m.expires,
    lambda m: (m.call_id, m.from_tag, m.to_tag, m.headers),
    lambda m: (m.name_addr(b"from"), m.name_addr(b"to")),
    lambda m: [
        a.parsed_uri() for n in (b"contact", b"route", b"record-route") for a in m.name_addrs(n)
    ],
    lambda m: m.parsed_uri() if isinstance(m, Request) else None,
    lambda m: validate_request(m) if isinstance(m, Request) else validate_response(m),  # type: ignore[arg-type]
    lambda m: m.with_header_first(b"Via", b"SIP/2.0/UDP lb;branch=z9hG4bKx").to_bytes(),
    lambda m: m.without_top_value(b"via").to_bytes() if m.has(b"via") else None,
]


def only_parse_errors(data: bytes) -> None:
    """Parse ``data`` and read every view: ``ParseError`` is the only exception allowed."""
    try:
        msg = parse(data)
    except ParseError:
        return
    assert parse(msg.to_bytes()) == msg
    assert isinstance(msg, Request | Response)
    for view in VIEWS:
        with contextlib.suppress(ParseError):
            view(msg)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "repeat"]))
        at = draw(st.integers(0, len(data)))
        if kind == "flip" and at < len(data):
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "truncate":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.sampled_from(NASTY))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 8))]
        else:
            data[at:at] = data[at : at + draw(st.integers(1, 30))]
    return bytes(data)


@FAST
@given(st.binary(max_size=200))
def test_random_bytes_raise_only_parse_error(data: bytes) -> None:
    only_parse_errors(data)


@settings(FAST, max_examples=300 * SCALE)
@given(mutated())
def test_mutated_messages_raise_only_parse_error(data: bytes) -> None:
    only_parse_errors(data)


@FAST
@given(
    messages().map(Message.to_bytes),
    st.lists(st.sampled_from(NASTY), min_size=1, max_size=3),
    st.data(),
)
def test_generated_messages_with_nasty_bytes(
    data: bytes, nasty: list[bytes], draw: st.DataObject
) -> None:
    for piece in nasty:
        at = draw.draw(st.integers(0, len(data)))
        data = data[:at] + piece + data[at:]
    only_parse_errors(data)


@FAST
@given(st.lists(st.one_of(mutated(), st.sampled_from(SEEDS)), min_size=1, max_size=3), st.data())
def test_framer_raises_only_parse_error(pieces: list[bytes], draw: st.DataObject) -> None:
    stream = b"\r\n\r\n".join(pieces)
    framer = StreamFramer()
    pos = 0
    try:
        while pos < len(stream):
            step = draw.draw(st.integers(1, 200))
            for item in framer.feed(stream[pos : pos + step]):
                if isinstance(item, Request | Response):
                    only_parse_errors(item.to_bytes())
            pos += step
    except ParseError:
        pass
    assert framer.buffered <= len(stream)


def test_edits_refuse_misuse_with_a_local_error() -> None:
    """The one exception besides ParseError: our own misuse (never the peer's bytes)."""
    msg = parse(OPTIONS)
    try:
        msg.without_top_value(b"route")
    except LocalProtocolError:
        return
    raise AssertionError("no error")
