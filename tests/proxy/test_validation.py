"""Requests the proxy answers itself, and messages it drops (RFC 3261 16.3, 8.2; docs/design.md 3.1)."""

from __future__ import annotations

import pytest

from siplb.proxy.actions import MessageDropped, RequestRejected
from siplb.sip import Response, parse

from .harness import Lab, build_request, make_lab

VIA = b"SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bKval1;rport"
BASE = [
    (b"Via", VIA),
    (b"Max-Forwards", b"70"),
    (b"From", b"<sip:alice@example.com>;tag=a1"),
    (b"To", b"<sip:bob@example.com>"),
    (b"Call-ID", b"val-1@example.com"),
    (b"CSeq", b"1 INVITE"),
]


def request(
    method: str = "INVITE",
    uri: bytes = b"sip:bob@127.0.0.1:5060",
    *,
    without: tuple[bytes, ...] = (),
    replace: dict[bytes, bytes] | None = None,
    extra: tuple[tuple[bytes, bytes], ...] = (),
) -> bytes:
    replace = dict(replace or {})
    if method != "INVITE":
        replace.setdefault(b"CSeq", b"1 " + method.encode())
    headers = [(n, replace.get(n, v)) for n, v in BASE if n not in without]
    return build_request(method, uri, [*headers, *extra])


def replies(lab: Lab, data: bytes) -> list[Response]:
    lab.uac.send(data)
    lab.net.settle()
    out = [parse(w.data) for w in lab.net.sent_by_proxy(lab.uac.target)]
    assert all(isinstance(r, Response) for r in out)
    return [r for r in out if isinstance(r, Response)]


# (name, request, statuses the sender gets, header expected on the last one)
REJECT_CASES: list[tuple[str, bytes, list[int], tuple[bytes, bytes] | None]] = [
    ("max-forwards-0", request(replace={b"Max-Forwards": b"0"}), [483], None),
    ("max-forwards-0-bye", request("BYE", replace={b"Max-Forwards": b"0"}), [483], None),
    (
        "proxy-require",
        request(extra=((b"Proxy-Require", b"foo, bar"),)),
        [420],
        (b"unsupported", b"foo, bar"),
    ),
    ("missing-from", request(without=(b"From",)), [400], None),
    ("missing-to", request(without=(b"To",)), [400], None),
    ("missing-call-id", request(without=(b"Call-ID",)), [400], None),
    ("missing-cseq", request(without=(b"CSeq",)), [400], None),
    ("cseq-method-mismatch", request(replace={b"CSeq": b"1 BYE"}), [400], None),
    ("malformed-max-forwards", request(replace={b"Max-Forwards": b"lots"}), [400], None),
    ("malformed-from", request(replace={b"From": b"<sip:alice@example.com"}), [400], None),
    # a new dialog whose Route names another host: no open relay
    ("preloaded-route", request(extra=((b"Route", b"<sip:192.0.2.9;lr>"),)), [403], None),
    (
        "preloaded-route-after-ours",
        request(extra=((b"Route", b"<sip:127.0.0.1:5060;lr>, <sip:192.0.2.9;lr>"),)),
        [403],
        None,
    ),
]


@pytest.mark.parametrize(
    ("data", "statuses", "header"),
    [case[1:] for case in REJECT_CASES],
    ids=[case[0] for case in REJECT_CASES],
)
def test_bad_requests_are_answered_and_not_forwarded(
    data: bytes, statuses: list[int], header: tuple[bytes, bytes] | None
) -> None:
    lab = make_lab(1)
    got = replies(lab, data)
    assert [r.status for r in got] == statuses
    final = got[-1]
    assert final.get_all(b"via") == [VIA]  # the Via as it came, for the way back
    assert final.has(b"to") == (b"\r\nTo:" in data)
    if final.has(b"to"):
        assert final.to_tag is not None
    if header is not None:
        assert final.get(header[0]) == header[1]
    assert lab.uas[0].inbox == []
    rejected = [e for e in lab.proxy.events if isinstance(e, RequestRejected)]
    assert [e.status for e in rejected] == [statuses[-1]]
    assert lab.proxy.stats[f"local:{statuses[-1]}"] == 1


# Request-URIs naming the proxy itself: OPTIONS to them is answered by the proxy (RFC 3261 11)
OPTIONS_TO_US = [b"sip:127.0.0.1:5060", b"sip:127.0.0.1", b"sip:127.0.0.1:5060;transport=udp"]


@pytest.mark.parametrize("uri", OPTIONS_TO_US)
def test_options_to_the_proxy_itself_is_answered_200(uri: bytes) -> None:
    lab = make_lab(1)
    [reply] = replies(lab, request("OPTIONS", uri))
    assert reply.status == 200
    assert b"INVITE" in (reply.get(b"allow") or b"")
    assert lab.uas[0].inbox == []


def test_options_to_a_user_is_forwarded() -> None:
    lab = make_lab(1)
    [reply] = replies(lab, request("OPTIONS", b"sip:bob@127.0.0.1:5060"))
    assert reply.status == 200
    assert len(lab.uas[0].requests("OPTIONS")) == 1


# (name, datagram, status of the rescue reply, words in its Warning)
MALFORMED_CASES = [
    (
        "request-line",
        request(uri=b"sip:bob@127.0.0.1:5060 SIP/2.0 x"),
        400,
        b"malformed request line",
    ),
    (
        "short-body",
        request().replace(b"Content-Length: 0", b"Content-Length: 50") + b"v=0",
        400,
        b"body",
    ),
    ("version", request().replace(b"SIP/2.0\r\n", b"SIP/3.0\r\n", 1), 505, b"version"),
    ("too-large", request(extra=((b"X-Big", b"a" * 70_000),)), 513, b"over"),
]


@pytest.mark.parametrize(
    ("data", "status", "warning"),
    [case[1:] for case in MALFORMED_CASES],
    ids=[case[0] for case in MALFORMED_CASES],
)
def test_malformed_request_with_recoverable_headers_gets_its_status_with_a_warning(
    data: bytes, status: int, warning: bytes
) -> None:
    lab = make_lab(1)
    [reply] = replies(lab, data)
    assert reply.status == status
    assert reply.get(b"call-id") == b"val-1@example.com"
    assert reply.get_all(b"via") == [VIA]
    assert reply.cseq.number == 1
    assert reply.to_tag is not None
    text = reply.get(b"warning") or b""
    assert text.startswith(b'399 siplb "')
    assert warning in text
    assert lab.uas[0].inbox == []
    assert lab.proxy.stats["rejected"] == 1


# (name, datagram, whether it fails parsing): nothing can be answered; dropped and counted
DROP_CASES = [
    ("garbage", b"\x00\x01hello world\r\n\r\n", True),
    ("no-empty-line", b"INVITE sip:bob@127.0.0.1 SIP/2.0\r\nVia: x", True),
    ("malformed-ack", request("ACK", uri=b"sip:bob@x y"), True),
    ("malformed-response", b"SIP/2.0 20 OK\r\nVia: " + VIA + b"\r\n\r\n", True),
    ("unrecoverable", b"INVITE sip:bob@x SIP/2.0 extra\r\nCall-ID: 1\r\n\r\n", True),
    ("no-via", request(without=(b"Via",)), False),
    ("ack-no-transaction", request("ACK", b"sip:127.0.0.1:5060"), False),
]


@pytest.mark.parametrize(
    ("data", "malformed"), [case[1:] for case in DROP_CASES], ids=[c[0] for c in DROP_CASES]
)
def test_unanswerable_messages_are_dropped_and_counted(data: bytes, malformed: bool) -> None:
    lab = make_lab(1)
    assert replies(lab, data) == []
    assert lab.proxy.stats["dropped"] == 1
    counted = sum(n for key, n in lab.proxy.stats.items() if key.startswith("malformed:"))
    assert counted == int(malformed)
    assert [type(e) for e in lab.proxy.events] == [MessageDropped]
    assert lab.uas[0].inbox == []
    assert lab.proxy.transactions == 0


def foreign_response(branch: bytes, status: int = 200) -> bytes:
    return (
        b"SIP/2.0 %d Whatever\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=%s\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bKx\r\n"
        b"From: <sip:a@x>;tag=1\r\nTo: <sip:b@y>;tag=2\r\nCall-ID: r1\r\n"
        b"CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n" % (status, branch)
    )


# (name, response): responses that belong to nothing of ours
STRAY_RESPONSES = [
    ("foreign-branch", foreign_response(b"z9hG4bKsomeoneelse")),
    ("no-cookie", foreign_response(b"1234")),
    ("other-node", foreign_response(b"z9hG4bK-n2.0-abc1")),
    ("ours-no-transaction-486", foreign_response(b"z9hG4bK-n1.0-abc1", 486)),
]


@pytest.mark.parametrize(
    "data", [case[1] for case in STRAY_RESPONSES], ids=[c[0] for c in STRAY_RESPONSES]
)
def test_responses_not_ours_are_dropped(data: bytes) -> None:
    lab = make_lab(1)
    lab.uas[0].send(data)
    lab.net.settle()
    assert lab.net.sent_by_proxy() == []
    assert lab.proxy.stats["dropped"] == 1
    [event] = lab.proxy.events
    assert isinstance(event, MessageDropped)
    assert event.source == lab.uas[0].target


def test_stop_accepting_turns_new_calls_away_but_keeps_dialogs() -> None:
    lab = make_lab(1)
    call = lab.uac.call()
    call.invite()
    lab.net.run(1.0)
    call.ack()
    lab.proxy.stop_accepting()
    late = lab.uac.call()
    late.invite()
    call.bye()
    lab.net.run(2.0)
    assert late.statuses == [503]  # refused before any state: one stateless answer
    assert late.responses[-1].get(b"retry-after") == b"5"
    assert [r.status for r in call.responses_to("BYE")] == [200]
    assert len(lab.uas[0].invites) == 1
