"""Calls answered 2xx whose ACK never came: what it takes to end them with a BYE each way.

A caller that never ACKs a 2xx (RFC 3261 13.2.2.4) leaves the callee with a call it believes is
up: a flood of such INVITEs holds a PBX's channels, and siplb's ``max_calls``, for as long as
the PBX keeps them. After 64*T1 the call accounting forgets such a call; with
``[proxy] bye_unconfirmed`` the proxy also ends it on both sides, as a B2BUA would: one BYE to
the callee and one to the caller, each inside the dialog the 2xx set up (12.2.1.1).

What a BYE needs is kept from the INVITE and its 2xx while the ACK is awaited, and let go when
the ACK (or any in-dialog request) passes: the dialog's identifiers, both remote targets, and the
Record-Route set split at siplb's own entries into the hops towards each side. Pure: the core
sends the requests through client transactions (retransmitted, timed out, answers ignored).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from siplb.sip import ParseError, Request, Response, parse_name_addr

from .actions import Target


@dataclass(frozen=True, slots=True)
class Side:
    """One side of the dialog as a BYE towards it is built: where it goes and what it says."""

    target: Target  # the first hop: a Route entry's address, or the side's known address
    listener: int
    uri: bytes  # the remote target (the side's Contact)
    routes: tuple[bytes, ...]  # Route values, the nearest hop first
    from_: bytes  # the other side's header, with its tag
    to: bytes  # this side's header, with its tag


@dataclass(frozen=True, slots=True)
class Unconfirmed:
    """A call answered 2xx, waiting for its ACK."""

    call_id: bytes
    cseq: int  # the INVITE's
    caller: Side
    callee: Side


def remember(
    invite: Request,
    answer: Response,
    *,
    caller: tuple[Target, int],
    callee: tuple[Target, int],
    is_ours: Callable[[bytes], bool],
) -> Unconfirmed | None:
    """What ending the call takes, from the INVITE as received and its 2xx as it arrived;
    None when either lacks what a BYE needs (a Contact, the tags)."""
    call_id = invite.call_id
    caller_contact = invite.get(b"contact")
    callee_contact = answer.get(b"contact")
    caller_header = invite.get(b"from")
    callee_header = answer.get(b"to")
    if not (call_id and caller_contact and callee_contact and caller_header and callee_header):
        return None
    try:
        caller_uri = parse_name_addr(caller_contact).uri
        callee_uri = parse_name_addr(callee_contact).uri
        cseq = invite.cseq.number
    except ParseError:
        return None
    towards_callee, towards_caller = _split(answer.values(b"record-route"), is_ours)
    return Unconfirmed(
        call_id,
        cseq,
        caller=Side(caller[0], caller[1], caller_uri, towards_caller, callee_header, caller_header),
        callee=Side(callee[0], callee[1], callee_uri, towards_callee, caller_header, callee_header),
    )


def _split(
    record_route: list[bytes], is_ours: Callable[[bytes], bool]
) -> tuple[tuple[bytes, ...], tuple[bytes, ...]]:
    """The Record-Route set (the proxy nearest the callee first) as the Route sets of requests
    siplb sends: towards the callee (the entries above its own, nearest first) and towards the
    caller (the entries below its own, in order)."""
    ours = [i for i, value in enumerate(record_route) if is_ours(value)]
    if not ours:
        return (), ()
    above = record_route[: ours[0]]
    below = record_route[ours[-1] + 1 :]
    return tuple(reversed(above)), tuple(below)


def bye(side: Side, call_id: bytes, cseq: int, via: bytes) -> Request:
    """The BYE towards ``side`` (12.2.1.1: remote target, route set, tags; 8.1.1)."""
    headers = [(b"Via", via), (b"Max-Forwards", b"70")]
    headers.extend((b"Route", route) for route in side.routes)
    headers += [
        (b"From", side.from_),
        (b"To", side.to),
        (b"Call-ID", call_id),
        (b"CSeq", b"%d BYE" % (cseq + 1)),
        (b"Reason", b'SIP;cause=408;text="ACK never received"'),
        (b"Content-Length", b"0"),
    ]
    return Request.build("BYE", side.uri, headers)


def first_hop(side: Side, route_target: Callable[[bytes], Target]) -> Target:
    """Where the BYE goes: its first Route entry, else (or when that entry is not a usable SIP
    URI) the side's known address."""
    if not side.routes:
        return side.target
    try:
        return route_target(side.routes[0])
    except ParseError:
        return side.target


__all__ = ["Side", "Unconfirmed", "bye", "first_hop", "remember"]
