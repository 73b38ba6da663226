"""RFC 5118 IPv6 torture messages (tests/vectors/rfc5118): the table in cases.toml says, for each,
whether ``parse`` accepts it, refuses it, or accepts it and ``validate_request`` refuses it (as
for RFC 4475). Accepted messages are read through every typed view, checked against what the RFC
says they hold, and framed on a stream."""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from siplb.proxy.actions import Target
from siplb.proxy.context import via_target
from siplb.sip import Malformed, ParseError, StreamFramer, parse, parse_uri, validate_request
from siplb.sip.uri import ipv6_text

from .test_torture import read_every_view

VECTORS = Path(__file__).parent.parent / "vectors" / "rfc5118"
TABLE: list[dict[str, Any]] = tomllib.loads((VECTORS / "cases.toml").read_text())["case"]
CASES = [pytest.param(case, id=f"{case['section']} {case['file']}") for case in TABLE]


def data_of(name: str) -> bytes:
    return (VECTORS / name).read_bytes()


def test_the_table_names_every_file_once() -> None:
    files = sorted(p.name for p in VECTORS.glob("*.sip"))
    assert sorted(case["file"] for case in TABLE) == files
    for case in TABLE:
        assert case["file"].startswith(case["section"] + "_")
        assert case["expect"] in {"accept", "refuse", "validate"}
        assert ("hint" in case) == (case["expect"] != "accept")


@pytest.mark.parametrize("case", CASES)
def test_rfc5118(case: dict[str, Any]) -> None:
    data = data_of(case["file"])
    if case["expect"] == "refuse":
        with pytest.raises(ParseError) as info:
            parse(data)
        assert info.value.status_hint == case["hint"]
        return
    msg = parse(data)
    if case["expect"] == "validate":
        with pytest.raises(ParseError) as info:
            validate_request(msg)  # type: ignore[arg-type]
        assert info.value.status_hint == case["hint"]
        return
    validate_request(msg)  # type: ignore[arg-type]
    read_every_view(msg)
    if msg.content_length:
        (framed,) = StreamFramer().feed(data)
        assert not isinstance(framed, Malformed)
        assert framed == msg


Check = Callable[[Any], object]


def _vias(m: Any) -> list[tuple[str, str, int | None, str | None]]:
    return [(v.transport, v.host, v.port, v.received) for v in m.vias()]


# What the RFC says each accepted message holds (hosts as siplb writes IPv6: compressed, bare).
DETAILS: dict[str, list[tuple[Check, object]]] = {
    "4.1_ipv6-good.sip": [
        (lambda m: (m.parsed_uri().host, m.parsed_uri().port), ("2001:db8::10", None)),
        (_vias, [("UDP", "2001:db8::9:1", None, None)]),
        (lambda m: m.top_via().sent_by, "[2001:db8::9:1]"),
        (lambda m: m.name_addrs(b"contact")[0].parsed_uri().host, "2001:db8::1"),
    ],
    "4.3_port-ambiguous.sip": [
        (lambda m: (m.parsed_uri().host, m.parsed_uri().port), ("2001:db8::10:5070", None)),
    ],
    "4.4_port-unambiguous.sip": [
        (lambda m: (m.parsed_uri().host, m.parsed_uri().port), ("2001:db8::10", 5070)),
        (lambda m: m.parsed_uri().host_port, "[2001:db8::10]:5070"),
    ],
    "4.5_via-received-param-with-delim.sip": [
        (_vias, [("UDP", "2001:db8::9:1", None, "2001:db8::9:255")]),
        (lambda m: m.top_via().branch, "z9hG4bKas3-111"),
        (lambda m: m.top_via().params["received"], "[2001:db8::9:255]"),  # as written
        (lambda m: via_target(m.top_via()), Target("udp", "2001:db8::9:255", 5060)),
    ],
    "4.5_via-received-param-no-delim.sip": [
        (_vias, [("UDP", "2001:db8::9:1", None, "2001:db8::9:255")]),
        (lambda m: via_target(m.top_via()), Target("udp", "2001:db8::9:255", 5060)),
    ],
    "4.6_ipv6-in-sdp.sip": [
        (lambda m: m.name_addr(b"to").parsed_uri().host, "2001:db8::10"),
        (lambda m: b"c=IN IP6 2001:db8::20\r\n" in m.body, True),
        (lambda m: len(m.body), 251),
    ],
    "4.7_mult-ip-in-header.sip": [
        (
            _vias,
            [
                ("UDP", "2001:db8::9:1", 6050, None),
                ("UDP", "192.0.2.1", None, None),
                ("TCP", "2001:db8::9:255", None, "192.0.2.200"),
            ],
        ),
        (lambda m: via_target(m.vias()[2]), Target("tcp", "192.0.2.200", 5060)),
    ],
    "4.8_mult-ip-in-sdp.sip": [
        (lambda m: b"c=IN IP6 2001:db8::1\r\n" in m.body, True),
        (lambda m: b"c=IN IP4 192.0.2.1\r\n" in m.body, True),
    ],
    "4.9_ipv4-mapped-ipv6.sip": [
        (
            _vias,
            [("UDP", "::ffff:c000:20a", 19823, None), ("UDP", "::ffff:c000:202", None, None)],
        ),
        (lambda m: m.top_via().sent_by, "[::ffff:c000:20a]:19823"),
        (lambda m: m.name_addrs(b"contact")[0].parsed_uri().host, "::ffff:c000:202"),
    ],
    "4.10_ipv6-bug-abnf-3-colons.sip": [
        (lambda m: m.parsed_uri().host, "2001:db8::c000:201"),  # the extra colon left out
        (lambda m: m.name_addr(b"to").parsed_uri().host, "2001:db8::c000:201"),
        (lambda m: m.parsed_uri().to_bytes(), b"sip:user@[2001:db8::c000:201]"),
    ],
    "4.10_ipv6-correct-abnf-2-colons.sip": [
        (lambda m: m.parsed_uri().host, "2001:db8::c000:201"),
    ],
}


@pytest.mark.parametrize(("name", "checks"), DETAILS.items(), ids=DETAILS.keys())
def test_rfc5118_details(name: str, checks: list[tuple[Check, object]]) -> None:
    msg = parse(data_of(name))
    for check, expected in checks:
        assert check(msg) == expected


def test_every_accepted_message_has_details() -> None:
    accepted = {case["file"] for case in TABLE if case["expect"] == "accept"}
    assert accepted == set(DETAILS)


# (text inside the brackets, the address read, or None: not an IPv6 address)
IPV6_CASES = [
    (b"2001:db8::10", "2001:db8::10"),
    (b"2001:DB8:0:0::10", "2001:db8::10"),
    (b"2001:db8:::192.0.2.1", "2001:db8::c000:201"),  # RFC 5118 4.10
    (b":::192.0.2.1", "::c000:201"),
    (b"2001:db8:::10", None),  # three colons without an IPv4 tail: no address
    (b"2001:db8::::192.0.2.1", None),
    (b"2001:db8::10:5070:1:2:3:4", None),
]


@pytest.mark.parametrize(("text", "address"), IPV6_CASES)
def test_ipv6_text(text: bytes, address: str | None) -> None:
    if address is None:
        with pytest.raises(ValueError, match=r".+"):
            ipv6_text(text)
        with pytest.raises(ParseError):
            parse_uri(b"sip:[" + text + b"]")
        return
    assert ipv6_text(text) == address
    assert parse_uri(b"sip:[" + text + b"]:5070").to_bytes() == b"sip:[%s]:5070" % address.encode()
