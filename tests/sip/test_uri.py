"""SIP and SIPS URIs (RFC 3261 19.1, 25.1), other schemes kept opaque."""

from __future__ import annotations

import pytest

from siplb.sip import OpaqueUri, ParseError, SipUri, parse_sip_uri, parse_uri

# (id, text, expected)
VALID_CASES: list[tuple[str, bytes, SipUri]] = [
    ("host only", b"sip:example.com", SipUri("sip", "example.com")),
    ("upper-case scheme and host", b"SIP:Example.COM", SipUri("sip", "example.com")),
    ("sips", b"sips:a@b.example.com", SipUri("sips", "b.example.com", user=b"a")),
    ("port", b"sip:a@192.0.2.1:5060", SipUri("sip", "192.0.2.1", 5060, b"a")),
    ("port 65535", b"sip:h:65535", SipUri("sip", "h", 65535)),
    ("port 0", b"sip:h:0", SipUri("sip", "h", 0)),
    ("IPv6", b"sip:[2001:DB8::1]", SipUri("sip", "2001:db8::1")),
    ("IPv6 with port", b"sip:u@[::1]:5070", SipUri("sip", "::1", 5070, b"u")),
    ("IPv6 with IPv4 tail", b"sip:[::ffff:192.0.2.1]", SipUri("sip", "::ffff:c000:201")),
    ("password", b"sip:alice:secret@h", SipUri("sip", "h", None, b"alice", b"secret")),
    ("empty password", b"sip:alice:@h", SipUri("sip", "h", None, b"alice", b"")),
    ("escaped user", b"sip:%75se%72@h", SipUri("sip", "h", user=b"%75se%72")),
    (
        "escaped null (RFC 4475 3.1.1.4)",
        b"sip:null-%00-null@h",
        SipUri("sip", "h", user=b"null-%00-null"),
    ),
    (
        "user with ;? (RFC 4475 3.1.1.9)",
        b"sip:user;par=u%40example.net@example.com",
        SipUri("sip", "example.com", user=b"user;par=u%40example.net"),
    ),
    (
        "odd user and password (RFC 4475 3.1.1.2)",
        b"sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com",
        SipUri(
            "sip",
            "example.com",
            user=b"1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*",
            password=b"&it+has=1,weird!*pas$wo~d_too.(doesn't-it)",
        ),
    ),
    (
        "parameters",
        b"sip:h;transport=TCP;lr;maddr=239.255.255.1;ttl=15",
        SipUri(
            "sip",
            "h",
            params={"transport": "TCP", "lr": None, "maddr": "239.255.255.1", "ttl": "15"},
        ),
    ),
    (
        "upper-case parameter name",
        b"sip:h;LR;Transport=udp",
        SipUri("sip", "h", params={"lr": None, "transport": "udp"}),
    ),
    (
        "escaped parameters (RFC 4475 3.1.1.3)",
        b"sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31",
        SipUri(
            "sip", "host5.example.net", user=b"cal%6Cer", params={"lr": None, "name": "value%41"}
        ),
    ),
    (
        "first parameter of a name wins",
        b"sip:h;transport=tcp;transport=udp",
        SipUri("sip", "h", params={"transport": "tcp"}),
    ),
    ("IPv6 maddr", b"sip:h;maddr=[::1]", SipUri("sip", "h", params={"maddr": "[::1]"})),
    (
        "headers",
        b"sip:user@example.com?Route=%3Csip:example.com%3E&subject=hi",
        SipUri(
            "sip", "example.com", user=b"user", headers=b"Route=%3Csip:example.com%3E&subject=hi"
        ),
    ),
    ("underscore host", b"sip:my_host.example.com", SipUri("sip", "my_host.example.com")),
    ("trailing dot", b"sip:example.com.", SipUri("sip", "example.com.")),
    (
        "phone user",
        b"sip:+15551234567@gw;user=phone",
        SipUri("sip", "gw", user=b"+15551234567", params={"user": "phone"}),
    ),
]


@pytest.mark.parametrize(
    ("raw", "expected"), [c[1:] for c in VALID_CASES], ids=[c[0] for c in VALID_CASES]
)
def test_sip_uri(raw: bytes, expected: SipUri) -> None:
    uri = parse_uri(raw)
    assert uri == expected
    assert parse_sip_uri(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"), [c[1:] for c in VALID_CASES], ids=[c[0] for c in VALID_CASES]
)
def test_sip_uri_round_trip(raw: bytes, expected: SipUri) -> None:
    assert parse_uri(expected.to_bytes()) == expected


INVALID_CASES: list[tuple[str, bytes]] = [
    ("empty", b""),
    ("no scheme", b"example.com"),
    ("empty scheme", b":example.com"),
    ("scheme digit first", b"1sip:h"),
    ("no host", b"sip:"),
    ("user but no host", b"sip:a@"),
    ("empty user", b"sip:@h"),
    ("space in host", b"sip:exa mple.com"),
    ("space in user", b"sip:a b@h"),
    ("host starts with dash", b"sip:-h"),
    ("port too big", b"sip:h:65536"),
    ("port six digits", b"sip:h:506000"),
    ("port empty", b"sip:h:"),
    ("port letters", b"sip:h:50x"),
    ("unclosed IPv6", b"sip:[::1"),
    ("bad IPv6", b"sip:[1:2:3]"),
    ("IPv4 in brackets", b"sip:[192.0.2.1]"),
    ("empty parameter", b"sip:h;;lr"),
    ("parameter without name", b"sip:h;=1"),
    ("parameter empty value", b"sip:h;transport="),
    ("bad escape", b"sip:a%zz@h"),
    ("two @", b"sip:a@b@c"),
    ("garbage after host", b"sip:h>"),
    ("header without value sign", b"sip:h?Route"),
    ("empty headers", b"sip:h?"),
    ("non-ASCII user", "sip:é@h".encode()),
    ("password with @-less colon", b"sip:a:b:c@h"),
    ("unicode port digits", "sip:h:5²".encode()),
    ("opaque with space", b"tel:+1 555"),
    ("opaque empty", b"tel:"),
    ("opaque non-ASCII", "urn:é".encode()),
]


@pytest.mark.parametrize("raw", [c[1] for c in INVALID_CASES], ids=[c[0] for c in INVALID_CASES])
def test_invalid_uri(raw: bytes) -> None:
    with pytest.raises(ParseError):
        parse_uri(raw)


OPAQUE_CASES = [
    (b"tel:+15551234567;phone-context=example.com", "tel"),
    (b"TEL:+1", "tel"),
    (b"urn:service:sos", "urn"),
    (b"http://www.example.com", "http"),
    (b"isbn:2983792873", "isbn"),
    (b"soap.beep://192.0.2.103:3002", "soap.beep"),
]


@pytest.mark.parametrize(("raw", "scheme"), OPAQUE_CASES)
def test_opaque_uri(raw: bytes, scheme: str) -> None:
    uri = parse_uri(raw)
    assert uri == OpaqueUri(scheme, raw)
    assert uri.to_bytes() == raw
    with pytest.raises(ParseError) as info:
        parse_sip_uri(raw)
    assert info.value.status_hint == 416


PROPERTY_CASES = [
    (b"sip:h", "udp", False, "h", None),
    (b"sips:h", "tls", False, "h", None),
    (b"sip:h;transport=TCP;lr", "tcp", True, "h", None),
    (b"sip:u%40x@[::1]:5060", "udp", False, "[::1]:5060", b"u@x"),
]


@pytest.mark.parametrize(("raw", "transport", "lr", "host_port", "user"), PROPERTY_CASES)
def test_uri_properties(
    raw: bytes, transport: str, lr: bool, host_port: str, user: bytes | None
) -> None:
    uri = parse_sip_uri(raw)
    assert uri.transport == transport
    assert uri.lr is lr
    assert uri.host_port == host_port
    assert uri.user_unescaped == user
    assert uri.is_ipv6 == host_port.startswith("[")


def test_parameter_values_are_escaped_on_output() -> None:
    uri = SipUri("sip", "h", params={"x y": "a;b=c%"})
    assert uri.to_bytes() == b"sip:h;x%20y=a%3Bb%3Dc%25"
    assert parse_uri(uri.to_bytes()) == uri
