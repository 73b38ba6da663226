"""A whole call through the proxy: INVITE, 100, 180, 200, ACK, BYE (RFC 3261 16, RFC 3665 3.2)."""

from __future__ import annotations

import pytest

from siplb.proxy.actions import CallsExpired, Target
from siplb.proxy.branch import owner_of
from siplb.proxy.listeners import Listener
from siplb.settings import ProxySettings
from siplb.sip import Request, parse, parse_via

from .harness import UAC, Call, Lab, Wire, make_lab

# Headers the proxy must pass on untouched, in odd but legal spellings (RFC 3261 7.3.1, 7.3.3).
ODD_HEADERS = (
    (b"Subject", b"caf\xc3\xa9  with  spaces"),
    (b"X-Custom", b'"quoted", list ;  p=1'),
    (b"Allow", b"INVITE,ACK,BYE"),
    (b"Supported", b"timer"),
    (b"Content-Type", b"application/sdp"),
)
SDP = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
OUR_RR = b"<sip:127.0.0.1:5060;lr>"


def start_call(lab: Lab) -> Call:
    call = lab.uac.call(headers=ODD_HEADERS, body=SDP)
    call.invite()
    lab.net.run(0.5)
    return call


def proxy_sends(lab: Lab, first_line: bytes) -> list[Wire]:
    return [w for w in lab.net.sent_by_proxy() if w.data.startswith(first_line)]


def test_caller_sees_100_at_once_then_180_and_200() -> None:
    lab = make_lab(2)
    call = start_call(lab)
    assert call.statuses == [100, 180, 200]
    first = lab.net.sent_by_proxy()[0]
    assert first.data.startswith(b"SIP/2.0 100 ")
    assert first.target == lab.uac.target
    assert first.at == 0.0


def test_forwarded_invite_carries_our_via_record_route_and_max_forwards() -> None:
    lab = make_lab(2)
    call = start_call(lab)
    [invite] = lab.uas[0].invites
    vias = invite.vias()
    assert vias[0].sent_by == "127.0.0.1:5060"
    assert vias[0].transport == "UDP"
    assert owner_of(vias[0].branch or "") == "n1.0"
    assert vias[1].branch == call.branch.decode()
    assert invite.values(b"record-route") == [OUR_RR]
    assert invite.max_forwards == 69
    assert invite.uri == call.ruri
    assert lab.uas[1].invites == []


def test_received_and_rport_are_stamped_on_the_callers_via() -> None:
    lab = make_lab(2)
    start_call(lab)
    caller_via = lab.uas[0].invites[0].vias()[1]
    assert caller_via.received == "127.0.0.1"
    assert caller_via.rport == 5061


def test_nat_caller_is_answered_at_its_source_address() -> None:
    """RFC 3581: the Via names a private address; answers go where the packets came from."""
    lab = make_lab(2, uac=UAC(sent_by=b"192.168.1.20:5099"))
    call = start_call(lab)
    caller_via = lab.uas[0].invites[0].vias()[1]
    assert (caller_via.host, caller_via.port) == ("192.168.1.20", 5099)
    assert (caller_via.received, caller_via.rport) == ("127.0.0.1", 5061)
    assert call.statuses == [100, 180, 200]
    assert lab.net.lost == []


def test_untouched_headers_and_body_pass_byte_for_byte() -> None:
    lab = make_lab(2)
    call = start_call(lab)
    sent = parse(call.data)
    [wire] = proxy_sends(lab, b"INVITE ")
    forwarded = wire.data
    assert isinstance(sent, Request)
    for line in call.data.split(b"\r\n\r\n")[0].split(b"\r\n")[1:]:
        if line.split(b":")[0] in (b"Via", b"Max-Forwards"):
            continue
        assert b"\r\n" + line + b"\r\n" in forwarded, line
    assert forwarded.endswith(b"\r\n\r\n" + SDP)
    assert forwarded.startswith(b"INVITE " + call.ruri + b" SIP/2.0\r\n")


def test_responses_lose_only_our_via() -> None:
    lab = make_lab(2)
    start_call(lab)
    from_uas = [w for w in lab.net.wire if w.source == "uas0"]
    upstream = [w for w in lab.net.sent_by_proxy(lab.uac.target) if w.data[8:11] != b"100"]
    assert len(from_uas) == len(upstream) == 2
    for original, forwarded in zip(from_uas, upstream, strict=True):
        lines = original.data.split(b"\r\n")
        our_via = next(i for i, line in enumerate(lines) if line.startswith(b"Via:"))
        assert forwarded.data == b"\r\n".join(lines[:our_via] + lines[our_via + 1 :])
        vias = parse(forwarded.data).vias()
        assert len(vias) == 1
        assert vias[0].received == "127.0.0.1"


def test_ack_for_the_2xx_is_routed_through_the_proxy() -> None:
    lab = make_lab(2)
    call = start_call(lab)
    assert call.route_set == [OUR_RR]
    call.ack()
    lab.net.settle()
    [ack] = lab.uas[0].requests("ACK")
    assert ack.uri == b"sip:uas0@127.0.0.1:5070"
    assert not ack.has(b"route")  # 16.4: the Route entry naming us is removed
    assert ack.max_forwards == 69
    vias = ack.vias()
    assert len(vias) == 2
    assert owner_of(vias[0].branch or "") == "n1.0"
    # an ACK to a 2xx is its own transaction: a new branch, not the INVITE's
    assert vias[0].branch != lab.uas[0].invites[0].vias()[0].branch


# (who hangs up, who must receive the BYE)
BYE_CASES = [("caller", "uas0"), ("callee", "uac")]


@pytest.mark.parametrize(("by", "receiver"), BYE_CASES)
def test_bye_ends_the_call(by: str, receiver: str) -> None:
    lab = make_lab(2)
    call = start_call(lab)
    call.ack()
    lab.net.run(1.0)
    assert lab.active(0) == 1
    assert lab.active(1) == 0
    if by == "caller":
        call.bye()
    else:
        lab.uas[0].bye(call.call_id)
    lab.net.run(1.5)
    endpoint = lab.net.endpoints[lab.uac.target if receiver == "uac" else lab.uas[0].target]
    [bye] = endpoint.requests("BYE")
    assert not bye.has(b"route")
    assert bye.max_forwards == 69
    sender = lab.uac if by == "caller" else lab.uas[0]
    assert [r.status for r in sender.responses("BYE")] == [200]
    assert lab.active(0) == 0
    assert lab.proxy.dispatcher.accounting.calls_total(lab.uri(0)) == 1
    lab.net.run(60.0)
    assert lab.proxy.transactions == 0
    assert lab.net.lost == []


def test_bye_from_the_callee_reaches_the_callers_contact() -> None:
    lab = make_lab(2)
    call = start_call(lab)
    call.ack()
    lab.uas[0].bye(call.call_id)
    lab.net.run(1.0)
    [bye] = lab.uac.requests("BYE")
    assert bye.uri == b"sip:alice@127.0.0.1:5061"
    assert bye.call_id == call.call_id


def test_second_call_goes_through_and_counts_separately() -> None:
    lab = make_lab(2)
    first = start_call(lab)
    second = start_call(lab)
    assert first.statuses == second.statuses == [100, 180, 200]
    assert (lab.active(0), lab.active(1)) == (1, 1)
    first.ack()
    first.bye()
    lab.net.run(1.0)
    assert (lab.active(0), lab.active(1)) == (0, 1)


def test_2xx_retransmission_is_forwarded_while_the_transactions_accept() -> None:
    """RFC 6026: a 2xx retransmitted by the UAS is forwarded (Accepted state), counted once."""
    lab = make_lab(2)
    call = start_call(lab)
    lab.uas[0].retransmit_final(call.call_id)
    lab.net.run(1.0)
    assert call.statuses == [100, 180, 200, 200]
    assert lab.active(0) == 1
    assert lab.proxy.dispatcher.accounting.calls_total(lab.uri(0)) == 1


def test_2xx_after_the_transactions_is_forwarded_statelessly() -> None:
    lab = make_lab(2)
    call = start_call(lab)
    lab.net.run(40.0)
    assert lab.proxy.transactions == 0
    lab.uas[0].retransmit_final(call.call_id)
    lab.net.run(41.0)
    assert call.statuses == [100, 180, 200, 200]


def test_without_record_route_in_dialog_requests_follow_the_request_uri() -> None:
    lab = make_lab(2, settings=ProxySettings(record_route=False))
    call = start_call(lab)
    assert not lab.uas[0].invites[0].has(b"record-route")
    assert call.route_set == []
    call.ack()
    call.bye()
    lab.net.run(1.0)
    assert len(lab.uas[0].requests("ACK")) == 1
    assert [r.status for r in call.responses_to("BYE")] == [200]
    assert lab.active(0) == 0


def test_in_dialog_request_leaves_by_the_listener_its_route_names() -> None:
    """A BYE arriving on listener 1 whose Route names listener 0 is sent from listener 0."""
    listeners = [Listener(0, "udp", "127.0.0.1", 5060), Listener(1, "udp", "127.0.0.2", 5060)]
    lab = make_lab(2, listeners=listeners)
    call = start_call(lab)
    call.ack()
    call.proxy = Target("udp", "127.0.0.2", 5060)  # the caller reaches us at the other address
    call.bye()
    lab.net.run(1.0)
    [wire] = proxy_sends(lab, b"BYE ")
    assert wire.listener == 0
    assert parse_via(parse(wire.data).get_all(b"via")[0]).host == "127.0.0.1"


def test_preloaded_route_to_the_proxy_is_removed_and_the_call_dispatched() -> None:
    """An outbound-proxy Route naming us (16.4): popped, then the set decides."""
    lab = make_lab(2)
    call = lab.uac.call(headers=((b"Route", OUR_RR),))
    call.invite()
    lab.net.run(1.0)
    assert call.statuses == [100, 180, 200]
    [invite] = lab.uas[0].invites
    assert not invite.has(b"route")


def test_reinvite_follows_the_dialog_and_keeps_the_call_alive() -> None:
    lab = make_lab(2, settings=ProxySettings(max_call_age=10.0))
    call = start_call(lab)
    call.ack()
    lab.net.run(8.0)
    call.cseq += 1
    lab.uac.send(call.in_dialog("INVITE", cseq=call.cseq), call.proxy)
    lab.net.run(9.0)
    reinvites = [r for r in lab.uas[0].invites if r.to_tag is not None]
    assert len(reinvites) == 1
    assert not reinvites[0].has(b"record-route")  # only dialog-creating requests record
    assert lab.uas[1].invites == []
    lab.net.run(15.0)
    assert lab.active(0) == 1  # touched at 8 s: not expired at 15 s
    lab.net.run(20.0)
    assert lab.active(0) == 0
    assert CallsExpired(1) in lab.proxy.events


def test_a_call_without_bye_expires_after_max_call_age() -> None:
    lab = make_lab(1, settings=ProxySettings(max_call_age=10.0))
    call = start_call(lab)
    call.ack()
    lab.net.run(10.0)
    assert lab.active(0) == 1
    lab.net.run(12.0)
    assert lab.active(0) == 0
    assert lab.proxy.events == [CallsExpired(1)]


def test_ack_with_max_forwards_0_is_not_forwarded() -> None:
    """16.3 step 3: Max-Forwards 0 is never forwarded; an ACK gets no 483, so it is dropped."""
    lab = make_lab(1)
    call = start_call(lab)
    ack = call.in_dialog("ACK", cseq=1).replace(b"Max-Forwards: 70", b"Max-Forwards: 0")
    lab.uac.send(ack, call.proxy)
    lab.net.run(1.0)
    assert lab.uas[0].requests("ACK") == []
    assert lab.proxy.stats["dropped"] == 1
    call.ack()
    lab.net.run(1.5)
    assert [r.max_forwards for r in lab.uas[0].requests("ACK")] == [69]
