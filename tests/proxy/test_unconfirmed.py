"""What a BYE for a 2xx never ACKed is built from (RFC 3261 12.1.1, 12.2.1.1)."""

from __future__ import annotations

import pytest

from siplb.proxy.actions import Target
from siplb.proxy.unconfirmed import bye, first_hop, remember
from siplb.sip import ParseError, Request, Response, parse

CALLER = (Target("udp", "192.0.2.10", 5060), 0)
CALLEE = (Target("udp", "10.0.0.21", 5060), 1)
OURS = (b"<sip:198.51.100.1;lr>", b"<sip:10.0.0.5;lr>")

INVITE = (
    b"INVITE sip:bob@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK1\r\n"
    b"From: <sip:alice@example.com>;tag=a1\r\n"
    b"To: <sip:bob@example.com>\r\n"
    b"Call-ID: c1@example.com\r\n"
    b"CSeq: 7 INVITE\r\n"
    b"Contact: <sip:alice@192.0.2.99:5062>\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def answer(record_route: list[bytes], contact: bytes = b"<sip:bob@10.0.0.21>") -> Response:
    lines = [b"SIP/2.0 200 OK", b"Via: SIP/2.0/UDP 10.0.0.5;branch=z9hG4bKx"]
    lines += [b"Record-Route: " + value for value in record_route]
    lines += [
        b"From: <sip:alice@example.com>;tag=a1",
        b"To: <sip:bob@example.com>;tag=b1",
        b"Call-ID: c1@example.com",
        b"CSeq: 7 INVITE",
    ]
    if contact:
        lines.append(b"Contact: " + contact)
    message = parse(b"\r\n".join(lines) + b"\r\nContent-Length: 0\r\n\r\n")
    assert isinstance(message, Response)
    return message


def invite() -> Request:
    message = parse(INVITE)
    assert isinstance(message, Request)
    return message


ROUTES = [
    # Record-Route (the proxy nearest the callee first) -> routes towards callee, caller
    ([*OURS], (), ()),
    ([b"<sip:p2;lr>", b"<sip:p1;lr>", *OURS], (b"<sip:p1;lr>", b"<sip:p2;lr>"), ()),
    ([*OURS, b"<sip:q1;lr>", b"<sip:q2;lr>"], (), (b"<sip:q1;lr>", b"<sip:q2;lr>")),
    ([b"<sip:p1;lr>", OURS[0], b"<sip:q1;lr>"], (b"<sip:p1;lr>",), (b"<sip:q1;lr>",)),
    ([b"<sip:p1;lr>"], (), ()),  # we are not in it: no route set to derive
]


@pytest.mark.parametrize(("record_route", "to_callee", "to_caller"), ROUTES)
def test_the_record_route_set_splits_at_our_own_entries(
    record_route: list[bytes], to_callee: tuple[bytes, ...], to_caller: tuple[bytes, ...]
) -> None:
    entry = remember(
        invite(), answer(record_route), caller=CALLER, callee=CALLEE, is_ours=OURS.__contains__
    )
    assert entry is not None
    assert entry.callee.routes == to_callee
    assert entry.caller.routes == to_caller


def test_each_bye_speaks_from_the_other_side() -> None:
    entry = remember(
        invite(), answer([*OURS]), caller=CALLER, callee=CALLEE, is_ours=OURS.__contains__
    )
    assert entry is not None
    to_callee = bye(
        entry.callee, entry.call_id, entry.cseq, b"SIP/2.0/UDP 10.0.0.5;branch=z9hG4bKb"
    )
    to_caller = bye(
        entry.caller, entry.call_id, entry.cseq, b"SIP/2.0/UDP 198.51.100.1;branch=z9hG4bKc"
    )
    assert (to_callee.uri, to_callee.from_tag, to_callee.to_tag) == (
        b"sip:bob@10.0.0.21",
        b"a1",
        b"b1",
    )
    assert (to_caller.uri, to_caller.from_tag, to_caller.to_tag) == (
        b"sip:alice@192.0.2.99:5062",
        b"b1",
        b"a1",
    )
    assert to_callee.cseq.number == to_caller.cseq.number == 8
    assert first_hop(entry.caller, lambda value: Target("udp", "x", 1)) == CALLER[0]  # no route


def test_a_route_entry_that_is_no_sip_uri_falls_back_to_the_known_address() -> None:
    entry = remember(
        invite(),
        answer([b"<tel:+15550100>", *OURS]),
        caller=CALLER,
        callee=CALLEE,
        is_ours=OURS.__contains__,
    )
    assert entry is not None

    def refuse(value: bytes) -> Target:
        raise ParseError("not a SIP URI", 416)

    assert first_hop(entry.callee, refuse) == CALLEE[0]


def test_nothing_is_kept_without_a_contact() -> None:
    assert (
        remember(
            invite(),
            answer([*OURS], contact=b""),
            caller=CALLER,
            callee=CALLEE,
            is_ours=OURS.__contains__,
        )
        is None
    )
