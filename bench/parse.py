"""Time the SIP message layer on a proxy's hot path (plain script, not a test).

Two cycles, each timed as a whole and broken down into its steps:

- INVITE: parse a realistic INVITE with SDP; read the top Via's branch, Call-ID, CSeq,
  Max-Forwards, Route and the To tag; add one Via at the top; serialize.
- 200 OK: parse the answer; read the top Via, CSeq and the To tag; remove the top Via; serialize.

Each figure is the minimum over many short repeats of ``timeit`` (the least disturbed run: short
runs let the minimum dodge other processes on a busy machine), timed in this process's CPU time
so that waiting for a core does not count, in microseconds per operation.
Run it as ``PYTHONPATH=src python bench/parse.py [--quick]``.

The parser memoises what a sequence of header names tells (canonical keys, where each header's
first line is, where Content-Length is): a proxy sees the same few sequences over and over, and
the cycles above hit the memo as real traffic mostly does. "parse (new header names)" is the cost
when the sequence was never seen.
"""

from __future__ import annotations

import sys
import time
import timeit
from collections.abc import Callable

from siplb.sip import Request, Response, parse
from siplb.sip.parser import _SIGNATURES

SDP = (
    b"v=0\r\n"
    b"o=alice 2890844526 2890844526 IN IP4 192.0.2.101\r\n"
    b"s=-\r\n"
    b"c=IN IP4 192.0.2.101\r\n"
    b"t=0 0\r\n"
    b"m=audio 49172 RTP/AVP 0 8 101\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-16\r\n"
    b"a=ptime:20\r\n"
    b"a=sendrecv\r\n"
)

INVITE = (
    b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.101:5060;branch=z9hG4bK776asdhds;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b"Route: <sip:lb.example.com;lr>\r\n"
    b"To: Bob <sip:bob@biloxi.example.com>\r\n"
    b'From: "Alice" <sip:alice@atlanta.example.com>;tag=1928301774\r\n'
    b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:alice@192.0.2.101:5060>\r\n"
    b"Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, NOTIFY, INFO\r\n"
    b"Supported: replaces, timer\r\n"
    b"User-Agent: softphone/1.0\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: %d\r\n"
    b"\r\n" % len(SDP)
) + SDP

OK = (
    b"SIP/2.0 200 OK\r\n"
    b"Via: SIP/2.0/UDP 198.51.100.10:5060;branch=z9hG4bK.lb1.4f2a9c;rport=5060\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.101:5060;branch=z9hG4bK776asdhds;rport=5060"
    b";received=192.0.2.101\r\n"
    b"Record-Route: <sip:198.51.100.10;lr>\r\n"
    b"To: Bob <sip:bob@biloxi.example.com>;tag=a6c85cf\r\n"
    b'From: "Alice" <sip:alice@atlanta.example.com>;tag=1928301774\r\n'
    b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:bob@192.0.2.4:5060>\r\n"
    b"Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, NOTIFY, INFO\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: %d\r\n"
    b"\r\n" % len(SDP)
) + SDP

OUR_VIA = b"SIP/2.0/UDP 198.51.100.10:5060;branch=z9hG4bK.lb1.4f2a9c"


def invite_cycle() -> bytes:
    msg = parse(INVITE)
    assert isinstance(msg, Request)
    msg.top_via().branch  # noqa: B018 - the cycle reads these fields
    msg.call_id  # noqa: B018
    msg.cseq  # noqa: B018
    msg.max_forwards  # noqa: B018
    msg.get(b"route")
    msg.to_tag  # noqa: B018
    return msg.with_header_first(b"Via", OUR_VIA).to_bytes()


def ok_cycle() -> bytes:
    msg = parse(OK)
    assert isinstance(msg, Response)
    msg.top_via()
    msg.cseq  # noqa: B018
    msg.to_tag  # noqa: B018
    return msg.without_top_value(b"via").to_bytes()


def best(stmt: Callable[[], object], number: int, repeat: int) -> float:
    """Microseconds per call: the minimum over ``repeat`` runs of ``number`` calls."""
    times = timeit.repeat(stmt, number=number, repeat=repeat, timer=time.process_time)
    return min(times) / number * 1e6


def cold_parse(data: bytes) -> Request | Response:
    """A parse whose sequence of header names was never seen (the memo starts empty)."""
    _SIGNATURES.clear()
    return parse(data)


def breakdown(
    data: bytes, steps: dict[str, Callable[[Request | Response], object]], n: int, r: int
) -> None:
    msg = parse(data)
    print(f"  {'parse':<28}{best(lambda: parse(data), n, r):8.2f} us")
    print(f"  {'parse (new header names)':<28}{best(lambda: cold_parse(data), n, r):8.2f} us")
    for name, step in steps.items():
        print(f"  {name:<28}{best(lambda step=step: step(msg), n, r):8.2f} us")  # type: ignore[misc]


def check() -> None:
    """The cycles do what they say (a bench that measured a broken path would be worthless)."""
    out = parse(invite_cycle())
    assert isinstance(out, Request)
    assert out.top_via().branch == "z9hG4bK.lb1.4f2a9c"
    assert out.vias()[1].branch == "z9hG4bK776asdhds"
    assert out.body == SDP
    answer = parse(ok_cycle())
    assert isinstance(answer, Response)
    assert answer.top_via().branch == "z9hG4bK776asdhds"
    assert answer.to_tag == b"a6c85cf"
    assert ok_cycle() == OK.replace(OK.split(b"\r\n")[1] + b"\r\n", b"")


def main() -> None:
    quick = "--quick" in sys.argv
    n, r = (500, 10) if quick else (1_000, 40)
    check()
    edited_invite = parse(INVITE).with_header_first(b"Via", OUR_VIA)
    edited_ok = parse(OK).without_top_value(b"via")
    invite_steps: dict[str, Callable[[Request | Response], object]] = {
        "top_via().branch": lambda m: m.top_via().branch,
        "call_id": lambda m: m.call_id,
        "cseq": lambda m: m.cseq,
        "max_forwards": lambda m: m.max_forwards,
        "get(b'route')": lambda m: m.get(b"route"),
        "to_tag": lambda m: m.to_tag,
        "with_header_first(Via)": lambda m: m.with_header_first(b"Via", OUR_VIA),
        "to_bytes (edited)": lambda m: edited_invite.to_bytes(),
    }
    ok_steps: dict[str, Callable[[Request | Response], object]] = {
        "top_via()": lambda m: m.top_via(),
        "cseq": lambda m: m.cseq,
        "to_tag": lambda m: m.to_tag,
        "without_top_value(b'via')": lambda m: m.without_top_value(b"via"),
        "to_bytes (edited)": lambda m: edited_ok.to_bytes(),
    }
    print(f"Python {sys.version.split()[0]}; min of {r} x {n}")
    print(f"INVITE cycle ({len(INVITE)} bytes): {best(invite_cycle, n, r):.2f} us")
    breakdown(INVITE, invite_steps, n, r)
    print(f"200 OK cycle ({len(OK)} bytes): {best(ok_cycle, n, r):.2f} us")
    breakdown(OK, ok_steps, n, r)


if __name__ == "__main__":
    main()
