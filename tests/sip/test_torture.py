"""RFC 4475 torture messages (tests/vectors/rfc4475): the table in cases.toml says, for each,
whether ``parse`` accepts it, refuses it (with which hint), or accepts it and
``validate_request`` / ``validate_response`` refuses it. Accepted messages are also read through
every typed view, and those with a Content-Length go through the stream framer."""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from siplb.sip import (
    CSeq,
    Malformed,
    Message,
    ParseError,
    Request,
    Response,
    SipUri,
    StreamFramer,
    parse,
    validate_request,
    validate_response,
)

VECTORS = Path(__file__).parent.parent / "vectors" / "rfc4475"
TABLE: list[dict[str, Any]] = tomllib.loads((VECTORS / "cases.toml").read_text())["case"]
CASES = [pytest.param(case, id=f"{case['section']} {case['file']}") for case in TABLE]


def data_of(case: dict[str, Any]) -> bytes:
    return (VECTORS / case["file"]).read_bytes()


def validate(msg: Message) -> None:
    if isinstance(msg, Request):
        validate_request(msg)
    else:
        assert isinstance(msg, Response)
        validate_response(msg)


def test_the_table_names_every_file_once() -> None:
    files = sorted(p.name for p in VECTORS.glob("*.sip"))
    assert sorted(case["file"] for case in TABLE) == files
    for case in TABLE:
        assert case["file"].startswith(case["section"] + "_")
        assert case["expect"] in {"accept", "refuse", "validate"}
        assert ("hint" in case) == (case["expect"] != "accept")


@pytest.mark.parametrize("case", CASES)
def test_rfc4475(case: dict[str, Any]) -> None:
    data = data_of(case)
    if case["expect"] == "refuse":
        with pytest.raises(ParseError) as info:
            parse(data)
        assert info.value.status_hint == case["hint"]
        return
    msg = parse(data)
    if case["expect"] == "validate":
        with pytest.raises(ParseError) as info:
            validate(msg)
        assert info.value.status_hint == case["hint"]
        return
    validate(msg)
    read_every_view(msg)


def read_every_view(msg: Message) -> None:
    """Every typed view a proxy may read works on an accepted message."""
    msg.top_via()
    for via in msg.vias():
        assert via.params is not None
        assert via.sent_by
    assert msg.cseq.number >= 0
    msg.max_forwards  # noqa: B018
    msg.content_length  # noqa: B018
    msg.from_tag  # noqa: B018
    msg.to_tag  # noqa: B018
    for name in (b"from", b"to"):
        addr = msg.name_addr(name)
        assert addr is not None
        from_header = addr.tag.encode("latin-1") if addr.tag is not None else None
        assert from_header == (msg.from_tag if name == b"from" else msg.to_tag)
    for name in (b"route", b"record-route"):
        msg.name_addrs(name)
    assert parse(msg.to_bytes()) == msg


@pytest.mark.parametrize("case", [c for c in CASES if c.values[0]["expect"] != "refuse"])
def test_rfc4475_on_a_stream(case: dict[str, Any]) -> None:
    """What frames on a stream parses as on a datagram (messages with a Content-Length)."""
    msg = parse(data_of(case))
    if msg.content_length is None:
        assert case["file"] == "3.4.1_inv2543.sip"
        return
    (framed,) = StreamFramer().feed(msg.to_bytes())
    assert not isinstance(framed, Malformed)
    assert framed == msg
    framer = StreamFramer()
    got = [item for byte in msg.to_bytes() for item in framer.feed(bytes((byte,)))]
    assert got == [msg]


Check = Callable[[Any], object]

# What the RFC says each accepted message holds.
DETAILS: dict[str, list[tuple[Check, object]]] = {
    "3.1.1.1_wsinv.sip": [
        (lambda m: m.uri, b"sip:vivekg@chair-dnrc.example.com;unknownparam"),
        (lambda m: m.to_tag, b"1918181833n"),
        (lambda m: m.from_tag, b"98asjd8"),
        (lambda m: m.name_addr(b"from").display, b'J Rosenberg \\"'),
        (lambda m: m.max_forwards, 68),
        (lambda m: m.cseq, CSeq(9, "INVITE")),
        (lambda m: m.call_id, b"wsinv.ndaksdj@192.0.2.1"),
        (lambda m: [v.branch for v in m.vias()], ["390skdjuw", "z9hG4bK9ikj8", "z9hG4bK30239"]),
        (lambda m: [v.transport for v in m.vias()], ["UDP", "TCP", "UDP"]),
        (lambda m: m.get(b"subject"), b""),
        (lambda m: m.get(b"NewFangledHeader"), b"newfangled value continued newfangled value"),
        (lambda m: m.get(b"unknownheaderwithunusualvalue"), b";;,,;;,;"),
        (
            lambda m: m.name_addrs(b"route")[0].uri,
            b"sip:services.example.com;lr;unknownwith=value;unknown-no-value",
        ),
        (lambda m: m.name_addrs(b"contact")[0].display, b'Quoted string ""'),
        (
            lambda m: m.name_addrs(b"contact")[0].params,
            {"newparam": "newvalue", "secondparam": None, "q": "0.33"},
        ),
        (lambda m: len(m.body), 150),
    ],
    "3.1.1.2_intmeth.sip": [
        (lambda m: m.method, "!interesting-Method0123456789_*+`.%indeed'~"),
        (lambda m: m.cseq.method, "!interesting-Method0123456789_*+`.%indeed'~"),
        (lambda m: m.parsed_uri().password, b"&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"),
        (lambda m: m.name_addr(b"to").display, b"BEL:\x07 NUL:\x00 DEL:\x7f"),
        (lambda m: m.name_addr(b"from").display, b"token1~` token2'+_ token3*%!.-"),
        (
            lambda m: m.name_addr(b"from").params["fromparam''~+*_!.-%"],
            "работающий".encode().decode("latin-1"),
        ),
        (lambda m: m.from_tag, b"_token~1'+`*%!-."),
        (lambda m: m.call_id, b"intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"),
        (lambda m: m.max_forwards, 255),
        (lambda m: m.get(b"extensionHeader-!.%*+_`'~"), "\ufeff大停電".encode()),
        (lambda m: m.top_via().branch, "z9hG4bK-.!%66*_+`'~"),
    ],
    "3.1.1.3_esc01.sip": [
        (lambda m: m.parsed_uri().user_unescaped, b"sips:user@example.com"),
        (lambda m: m.name_addr(b"to").parsed_uri().user_unescaped, b"user"),
        (lambda m: m.name_addr(b"from").parsed_uri().user_unescaped, b"I have spaces"),
        (
            lambda m: m.name_addrs(b"contact")[0].parsed_uri().params,
            {"lr": None, "name": "value%41"},
        ),
        (lambda m: m.get(b"content-type"), b"application/sdp"),
    ],
    "3.1.1.4_escnull.sip": [
        (lambda m: m.name_addr(b"to").parsed_uri().user_unescaped, b"null-\x00-null"),
        (
            lambda m: [a.parsed_uri().user_unescaped for a in m.name_addrs(b"contact")],
            [b"\x00", b"\x00\x00"],
        ),
    ],
    "3.1.1.5_esc02.sip": [
        (lambda m: m.method, "RE%47IST%45R"),
        (lambda m: m.name_addr(b"to").display, b"%Z%45"),
        (lambda m: m.top_via().branch, "z9hG4bK209%fzsnel234"),
        (lambda m: len(m.name_addrs(b"contact")), 2),
        (lambda m: m.get(b"C%6Fntact"), b"<sip:alias2@host2.example.com>"),
    ],
    "3.1.1.6_lwsdisp.sip": [
        (lambda m: m.name_addr(b"from").display, b"caller"),
        (lambda m: m.from_tag, b"323"),
    ],
    "3.1.1.7_longreq.sip": [
        (lambda m: len(m.vias()), 34),
        (lambda m: m.vias()[-1].branch, "very" + "long" * 50 + "branchvalue"),
        (lambda m: m.vias()[-1].received, "192.0.2.5"),
        (lambda m: m.name_addr(b"to").parsed_uri().port, 6000),
        (lambda m: len(m.from_tag), 155),
        (lambda m: m.call_id, b"longreq.one" + b"really" * 20 + b"longcallid"),
    ],
    "3.1.1.8_dblreq.sip": [
        (lambda m: m.method, "REGISTER"),
        (lambda m: m.body, b""),
        (lambda m: m.call_id, b"dblreq.0ha0isndaksdj99sdfafnl3lk233412"),
        (lambda m: m.to_bytes().endswith(b"Content-Length: 0\r\n\r\n"), True),
    ],
    "3.1.1.9_semiuri.sip": [
        (lambda m: m.parsed_uri().user, b"user;par=u%40example.net"),
        (lambda m: m.parsed_uri().host, "example.com"),
        (lambda m: len(m.values(b"accept")), 6),
    ],
    "3.1.1.10_transports.sip": [
        (lambda m: [v.transport for v in m.vias()], ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]),
        (lambda m: m.call_id, b"transports.kijh4akdnaqjkwendsasfdj"),
    ],
    "3.1.1.11_mpart01.sip": [
        (lambda m: len(m.body), 553),
        (lambda m: b"\x00" in m.body, True),
        (lambda m: m.top_via().has_rport, True),
    ],
    "3.1.1.12_unreason.sip": [
        (lambda m: m.status, 200),
        (lambda m: m.reason.decode(), "= 2**3 * 5**2 но сто девяносто девять - простое"),
    ],
    "3.1.1.13_noreason.sip": [(lambda m: (m.status, m.reason), (100, b""))],
    "3.3.4_unksm2.sip": [
        (lambda m: m.name_addr(b"to").parsed_uri().scheme, "isbn"),
        (lambda m: m.name_addrs(b"contact")[0].uri, b"name:John_Smith"),
    ],
    "3.3.10_bcast.sip": [(lambda m: m.vias()[1].host, "255.255.255.255")],
    "3.3.11_zeromf.sip": [(lambda m: m.max_forwards, 0)],
    "3.3.12_cparam01.sip": [
        (lambda m: m.name_addrs(b"contact")[0].params, {"unknownparam": None}),
        (lambda m: m.name_addrs(b"contact")[0].parsed_uri().params, {}),
    ],
    "3.3.13_cparam02.sip": [
        (lambda m: m.name_addrs(b"contact")[0].params, {}),
        (lambda m: m.name_addrs(b"contact")[0].parsed_uri().params, {"unknownparam": None}),
    ],
    "3.3.14_regescrt.sip": [
        (
            lambda m: m.name_addrs(b"contact")[0].parsed_uri().headers,
            b"Route=%3Csip:sip.example.com%3E",
        ),
    ],
    "3.4.1_inv2543.sip": [
        (lambda m: m.top_via().branch, None),
        (lambda m: m.max_forwards, None),
        (lambda m: m.to_tag, None),
        (lambda m: m.body.startswith(b"v=0\r\n"), True),
        (lambda m: isinstance(m.name_addrs(b"record-route")[0].parsed_uri(), SipUri), True),
    ],
}


@pytest.mark.parametrize(("name", "checks"), DETAILS.items())
def test_rfc4475_details(name: str, checks: list[tuple[Check, object]]) -> None:
    msg = parse((VECTORS / name).read_bytes())
    for i, (get, expected) in enumerate(checks):
        assert get(msg) == expected, f"check {i}"


def test_an_overlarge_response_code_is_not_a_response() -> None:
    data = (VECTORS / "3.1.2.19_bigcode.sip").read_bytes()
    with pytest.raises(ParseError, match="status code"):
        parse(data)
