"""The Via header (RFC 3261 20.42, 18.2.1; RFC 3581 rport; RFC 5118 IPv6 references)."""

from __future__ import annotations

import pytest

from siplb.sip import MAGIC_COOKIE, ParseError, Via, parse, parse_via, parse_vias

# (id, via-parm, transport, host, port, params)
VALID_CASES: list[tuple[str, bytes, str, str, int | None, dict[str, str | None]]] = [
    (
        "plain",
        b"SIP/2.0/UDP pc33.example.com;branch=z9hG4bK776",
        "UDP",
        "pc33.example.com",
        None,
        {"branch": "z9hG4bK776"},
    ),
    (
        "port",
        b"SIP/2.0/TCP 192.0.2.1:5060;branch=z9hG4bK1",
        "TCP",
        "192.0.2.1",
        5060,
        {"branch": "z9hG4bK1"},
    ),
    ("port 65535", b"SIP/2.0/UDP h:65535", "UDP", "h", 65535, {}),
    ("port 0", b"SIP/2.0/UDP h:0", "UDP", "h", 0, {}),
    ("no params", b"SIP/2.0/UDP h", "UDP", "h", None, {}),
    ("lower-case transport", b"SIP/2.0/tls h", "TLS", "h", None, {}),
    (
        "unknown transport (RFC 4475 3.1.1.10)",
        b"SIP/2.0/UNKNOWN t4.example.com;branch=z9hG4bKasd0f3en",
        "UNKNOWN",
        "t4.example.com",
        None,
        {"branch": "z9hG4bKasd0f3en"},
    ),
    ("upper-case host", b"SIP/2.0/UDP PC33.Example.COM", "UDP", "pc33.example.com", None, {}),
    (
        "rport valueless and received",
        b"SIP/2.0/UDP h:5060;rport;branch=z9hG4bKx;received=192.0.2.1",
        "UDP",
        "h",
        5060,
        {"rport": None, "branch": "z9hG4bKx", "received": "192.0.2.1"},
    ),
    (
        "rport value",
        b"SIP/2.0/UDP h;branch=z9hG4bKx;rport=5061",
        "UDP",
        "h",
        None,
        {"branch": "z9hG4bKx", "rport": "5061"},
    ),
    (
        "maddr and ttl",
        b"SIP/2.0/UDP h;maddr=239.255.255.1;ttl=16",
        "UDP",
        "h",
        None,
        {"maddr": "239.255.255.1", "ttl": "16"},
    ),
    (
        "upper-case param names",
        b"SIP/2.0/UDP h;BRANCH=z9hG4bKa;Received=10.0.0.1",
        "UDP",
        "h",
        None,
        {"branch": "z9hG4bKa", "received": "10.0.0.1"},
    ),
    (
        "branch not first",
        b"SIP/2.0/UDP h;rport;branch=z9hG4bKb",
        "UDP",
        "h",
        None,
        {"rport": None, "branch": "z9hG4bKb"},
    ),
    (
        "first branch wins",
        b"SIP/2.0/UDP h;branch=z9hG4bKa;branch=z9hG4bKb",
        "UDP",
        "h",
        None,
        {"branch": "z9hG4bKa"},
    ),
    (
        "token branch characters",
        b"SIP/2.0/TCP h;branch=z9hG4bK-.!%66*_+`'~",
        "TCP",
        "h",
        None,
        {"branch": "z9hG4bK-.!%66*_+`'~"},
    ),
    (
        "IPv6 sent-by",
        b"SIP/2.0/UDP [2001:DB8::9:1]:5070;branch=z9hG4bKa",
        "UDP",
        "2001:db8::9:1",
        5070,
        {"branch": "z9hG4bKa"},
    ),
    (
        "IPv6 received",
        b"SIP/2.0/UDP [2001:db8::9:1];received=2001:db8::9:255;branch=z9hG4bKa",
        "UDP",
        "2001:db8::9:1",
        None,
        {"received": "2001:db8::9:255", "branch": "z9hG4bKa"},
    ),
    (
        "LWS everywhere",
        b" SIP / 2.0 / UDP   h : 5060 ; branch = z9hG4bKa ; rport ",
        "UDP",
        "h",
        5060,
        {"branch": "z9hG4bKa", "rport": None},
    ),
    (
        "folded (RFC 4475 3.1.1.1)",
        b"SIP  /   2.0\r\n /UDP\r\n    192.0.2.2;branch=390skdjuw",
        "UDP",
        "192.0.2.2",
        None,
        {"branch": "390skdjuw"},
    ),
    (
        "quoted param value",
        b'SIP/2.0/UDP h;branch=z9hG4bKa;x="a b;c"',
        "UDP",
        "h",
        None,
        {"branch": "z9hG4bKa", "x": "a b;c"},
    ),
    ("lower-case protocol", b"sip/2.0/udp h", "UDP", "h", None, {}),
    (
        "underscore host",
        b"SIP/2.0/UDP my_host;branch=z9hG4bKa",
        "UDP",
        "my_host",
        None,
        {"branch": "z9hG4bKa"},
    ),
    ("leading zeros in port", b"SIP/2.0/UDP h:05060", "UDP", "h", 5060, {}),
]


@pytest.mark.parametrize(
    ("raw", "transport", "host", "port", "params"),
    [c[1:] for c in VALID_CASES],
    ids=[c[0] for c in VALID_CASES],
)
def test_via(
    raw: bytes, transport: str, host: str, port: int | None, params: dict[str, str | None]
) -> None:
    via = parse_via(raw)
    assert (via.transport, via.host, via.port, via.params, via.protocol) == (
        transport,
        host,
        port,
        params,
        "SIP/2.0",
    )
    assert via.branch == params.get("branch")
    assert via == Via(transport, host, port, params)
    assert hash(via) == hash(Via(transport, host, port, params))


@pytest.mark.parametrize("raw", [c[1] for c in VALID_CASES], ids=[c[0] for c in VALID_CASES])
def test_via_round_trip(raw: bytes) -> None:
    via = parse_via(raw)
    assert parse_via(via.to_bytes()) == via
    built = Via(via.transport, via.host, via.port, via.params)
    assert parse_via(built.to_bytes()) == via


# (id, via-parm, status hint): refused by parse_via itself
INVALID_CASES: list[tuple[str, bytes, int]] = [
    ("empty", b"", 400),
    ("no transport", b"SIP/2.0 h", 400),
    ("no host", b"SIP/2.0/UDP", 400),
    ("no space", b"SIP/2.0/UDPh", 400),
    ("other version", b"SIP/3.0/UDP h", 505),
    ("other protocol", b"XMPP/2.0/TCP h", 400),
    ("port too big", b"SIP/2.0/UDP h:65536", 400),
    ("port six digits", b"SIP/2.0/UDP h:123456", 400),
    ("empty port", b"SIP/2.0/UDP h:", 400),
    ("empty params (RFC 4475 3.1.2.1)", b"SIP/2.0/UDP 192.0.2.15;;", 400),
    ("param without name", b"SIP/2.0/UDP h;=x", 400),
    ("param with empty value", b"SIP/2.0/UDP h;branch=", 400),
    ("garbage after host", b"SIP/2.0/UDP h x", 400),
    ("unterminated quote", b'SIP/2.0/UDP h;x="abc', 400),
    ("bad IPv6", b"SIP/2.0/UDP [1:2:3]:5060", 400),
    ("IPv4 in brackets", b"SIP/2.0/UDP [192.0.2.1]", 400),
    ("non-ASCII host", "SIP/2.0/UDP hé".encode(), 400),
    ("comma inside", b"SIP/2.0/UDP a, SIP/2.0/UDP b", 400),
]


@pytest.mark.parametrize(
    ("raw", "hint"), [c[1:] for c in INVALID_CASES], ids=[c[0] for c in INVALID_CASES]
)
def test_invalid_via(raw: bytes, hint: int) -> None:
    with pytest.raises(ParseError) as info:
        parse_via(raw)
    assert info.value.status_hint == hint


# Well-formed syntax whose parameters mean nothing valid: refused when the parameters are read.
BAD_PARAM_CASES: list[tuple[str, bytes, str]] = [
    ("valueless branch", b"SIP/2.0/UDP h;branch", "branch"),
    ("ttl too big", b"SIP/2.0/UDP h;ttl=256", "ttl"),
    ("ttl valueless", b"SIP/2.0/UDP h;ttl", "ttl"),
    ("ttl letters", b"SIP/2.0/UDP h;ttl=ab", "ttl"),
    ("rport too big", b"SIP/2.0/UDP h;rport=65536", "rport"),
    ("rport letters", b"SIP/2.0/UDP h;rport=x", "rport"),
    ("rport unicode digits", 'SIP/2.0/UDP h;rport="5²"'.encode(), "rport"),
    ("received not an address", b"SIP/2.0/UDP h;received=example.com", "received"),
    ("received valueless", b"SIP/2.0/UDP h;received", "received"),
]


@pytest.mark.parametrize(
    ("raw", "attr"), [c[1:] for c in BAD_PARAM_CASES], ids=[c[0] for c in BAD_PARAM_CASES]
)
def test_via_param_meaning(raw: bytes, attr: str) -> None:
    via = parse_via(raw)
    assert via.host == "h"
    with pytest.raises(ParseError):
        getattr(via, attr)
    with pytest.raises(ParseError):
        via.params  # noqa: B018


ACCESSOR_CASES: list[tuple[bytes, str, object]] = [
    (b"SIP/2.0/UDP h;rport", "has_rport", True),
    (b"SIP/2.0/UDP h;rport", "rport", None),
    (b"SIP/2.0/UDP h;rport=5062", "rport", 5062),
    (b"SIP/2.0/UDP h", "has_rport", False),
    (b"SIP/2.0/UDP h;received=10.1.1.1", "received", "10.1.1.1"),
    (b"SIP/2.0/UDP h;maddr=224.0.1.75;ttl=1", "maddr", "224.0.1.75"),
    (b"SIP/2.0/UDP h;maddr=224.0.1.75;ttl=1", "ttl", 1),
    (b"SIP/2.0/UDP h", "ttl", None),
    (b"SIP/2.0/UDP h:5060", "sent_by", "h:5060"),
    (b"SIP/2.0/UDP [::1]:5060", "sent_by", "[::1]:5060"),
    (b"SIP/2.0/UDP [::1]", "sent_by", "[::1]"),
    (b"SIP/2.0/UDP h", "branch", None),
]


@pytest.mark.parametrize(("raw", "attr", "expected"), ACCESSOR_CASES)
def test_via_accessors(raw: bytes, attr: str, expected: object) -> None:
    assert getattr(parse_via(raw), attr) == expected


def test_via_is_read_only() -> None:
    via = parse_via(b"SIP/2.0/UDP h;branch=z9hG4bKa")
    with pytest.raises(AttributeError):
        via.host = "other"  # type: ignore[misc]
    assert MAGIC_COOKIE == "z9hG4bK"
    assert repr(via) == "Via('SIP/2.0/UDP h;branch=z9hG4bKa')"
    assert via != "SIP/2.0/UDP h;branch=z9hG4bKa"


LIST_CASES: list[tuple[str, bytes, list[str]]] = [
    ("one", b"SIP/2.0/UDP a;branch=z9hG4bK1", ["a"]),
    ("two", b"SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/TCP b", ["a", "b"]),
    ("no space after comma", b"SIP/2.0/UDP a,SIP/2.0/UDP b", ["a", "b"]),
    ("quoted comma", b'SIP/2.0/UDP a;x="1,2", SIP/2.0/UDP b', ["a", "b"]),
    ("folded", b"SIP/2.0/UDP a ,\r\n SIP/2.0/UDP b", ["a", "b"]),
]


@pytest.mark.parametrize(
    ("value", "hosts"), [c[1:] for c in LIST_CASES], ids=[c[0] for c in LIST_CASES]
)
def test_parse_vias(value: bytes, hosts: list[str]) -> None:
    assert [v.host for v in parse_vias(value)] == hosts


@pytest.mark.parametrize(
    "value", [b"", b"SIP/2.0/UDP a,,SIP/2.0/UDP b", b"SIP/2.0/UDP a,", b",SIP/2.0/UDP a"]
)
def test_parse_vias_refuses_empty_elements(value: bytes) -> None:
    with pytest.raises(ParseError):
        parse_vias(value)


def test_message_vias_across_lines_and_commas() -> None:
    msg = parse(
        b"SIP/2.0 200 OK\r\n"
        b"v: SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/UDP b;branch=z9hG4bK2\r\n"
        b"Via: SIP/2.0/UDP c;branch=z9hG4bK3\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    assert [v.host for v in msg.vias()] == ["a", "b", "c"]
    assert msg.top_via().branch == "z9hG4bK1"
    broken = parse(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP a, , SIP/2.0/UDP b\r\n\r\n")
    assert broken.top_via().host == "a"
    with pytest.raises(ParseError):
        broken.vias()
    with pytest.raises(ParseError):
        parse(b"SIP/2.0 200 OK\r\nVia: , SIP/2.0/UDP b\r\n\r\n").top_via()
