"""Reliable transports: no retransmissions, zero-length wait timers, transport errors (RFC 3261 17,
16.9; docs/design.md section 3 step 5)."""

from __future__ import annotations

import pytest

from siplb.dispatch import State
from siplb.proxy.actions import FailedOver, Target
from siplb.settings import ProxySettings

from .harness import UAC, Script, make_lab

RFC_ONLY = ProxySettings(failover_timeout=1000.0, max_attempts=1)


def test_invite_to_a_tcp_destination_leaves_by_the_tcp_listener_with_two_record_routes() -> None:
    lab = make_lab(1, transport="tcp")
    call = lab.uac.call()
    call.invite()
    lab.net.run(1.0)
    assert call.statuses == [100, 180, 200]
    [wire] = [w for w in lab.net.sent_by_proxy() if w.data.startswith(b"INVITE ")]
    assert wire.target == Target("tcp", "127.0.0.1", 5070)
    assert wire.listener == 1
    [invite] = lab.uas[0].invites
    assert invite.vias()[0].transport == "TCP"
    # 16.6 step 4: the request changed transport, so both of our addresses are recorded
    assert invite.values(b"record-route") == [
        b"<sip:127.0.0.1:5060;transport=tcp;lr>",
        b"<sip:127.0.0.1:5060;lr>",
    ]


@pytest.mark.parametrize("by", ["caller", "callee"])
def test_a_call_across_transports_is_routed_both_ways(by: str) -> None:
    lab = make_lab(1, transport="tcp")
    call = lab.uac.call()
    call.invite()
    lab.net.run(1.0)
    call.ack()
    if by == "caller":
        call.bye()
    else:
        lab.uas[0].bye(call.call_id)
    lab.net.run(2.0)
    assert len(lab.uas[0].requests("ACK")) == 1
    byes = lab.uas[0].requests("BYE") if by == "caller" else lab.uac.requests("BYE")
    assert len(byes) == 1
    assert not byes[0].has(b"route")
    [wire] = [w for w in lab.net.sent_by_proxy() if w.data.startswith(b"BYE ")]
    assert (wire.target.transport, wire.listener) == (("tcp", 1) if by == "caller" else ("udp", 0))
    assert lab.active(0) == 0
    assert lab.net.lost == []


# (method, destination script): a silent TCP destination gets the request once only
SILENT_CASES = [("INVITE", Script(invite=())), ("MESSAGE", Script(other=None))]


@pytest.mark.parametrize(("method", "script"), SILENT_CASES)
def test_no_retransmission_on_a_reliable_transport(method: str, script: Script) -> None:
    lab = make_lab([script], transport="tcp", settings=RFC_ONLY)
    if method == "INVITE":
        lab.uac.call().invite()
    else:
        lab.uac.send(lab.uac.request(method, b"sip:bob@127.0.0.1:5060"))
    lab.net.run(40.0)
    assert len(lab.uas[0].requests(method)) == 1
    assert lab.uac.finals() == [(32.0, 408)]  # Timer B / F still bound the wait


# (destination script, request): client transactions end with the final response (D, K = 0)
ENDS_AT_ONCE = [(Script(invite=(486,)), "INVITE"), (Script(other=200), "MESSAGE")]


@pytest.mark.parametrize(("script", "method"), ENDS_AT_ONCE)
def test_client_transaction_ends_at_the_final_response(script: Script, method: str) -> None:
    lab = make_lab([script], transport="tcp")
    if method == "INVITE":
        lab.uac.call().invite()
    else:
        lab.uac.send(lab.uac.request(method, b"sip:bob@127.0.0.1:5060"))
    lab.net.settle()
    assert lab.proxy.clients == {}
    assert len(lab.proxy.servers) == 1  # the caller is on UDP: its side still waits


def test_server_transaction_on_tcp_neither_retransmits_nor_waits() -> None:
    """17.2.1: no Timer G on a reliable transport; Timer I and J are zero."""
    lab = make_lab(
        [Script(invite=(486,)), Script(other=200)], uac=UAC(target=Target("tcp", "127.0.0.1", 5061))
    )
    call = lab.uac.call()
    call.invite()
    lab.net.run(1.0)
    assert lab.uac.inbox[0].send.target.transport == "tcp"
    lab.net.run(10.0)
    assert call.statuses == [100, 486]
    assert lab.proxy.servers == {}  # ended at the ACK


def test_transport_error_fails_over_at_once() -> None:
    lab = make_lab(2, transport="tcp")
    lab.net.unreachable.add(lab.uas[0].target)
    call = lab.uac.call()
    call.invite()
    lab.net.settle()
    assert call.statuses == [100, 180, 200]
    assert lab.clock.now == 0.0
    assert len(lab.uas[1].invites) == 1
    [event] = [e for e in lab.proxy.events if isinstance(e, FailedOver)]
    assert (event.uri, event.cause) == (lab.uri(0), "transport error")
    assert lab.state(0) == State.SUSPECT
    assert (lab.active(0), lab.active(1)) == (0, 1)


def test_transport_errors_everywhere_give_408_at_once() -> None:
    lab = make_lab(2, transport="tcp")
    lab.net.unreachable.update(uas.target for uas in lab.uas)
    call = lab.uac.call()
    call.invite()
    lab.net.settle()
    assert call.statuses == [100, 408]  # no destination answered (16.7 step 6)
    assert call.responses[-1].get(b"retry-after") is None
    assert lab.proxy.clients == {}


def test_transport_error_on_an_in_dialog_request_gives_408() -> None:
    lab = make_lab(1, transport="tcp")
    call = lab.uac.call()
    call.invite()
    lab.net.run(1.0)
    call.ack()
    lab.net.unreachable.add(lab.uas[0].target)
    call.bye()
    lab.net.run(2.0)
    assert [r.status for r in call.responses_to("BYE")] == [408]
