"""Requests that come back to siplb (``siplb.proxy.loops``): never forwarded to itself, 482.

The review: SIPp's built-in ``uac`` scenario ends its call with ``BYE sip:service@<siplb>`` and
no Route. A balancer that does not know that address as its own forwarded the BYE to itself until
Max-Forwards ran out: one datagram became about 70, and nothing was logged.
"""

from __future__ import annotations

import pytest

from siplb.proxy.actions import MessageDropped, RequestRejected, Send, Target
from siplb.proxy.listeners import Listener
from siplb.sip import Request, Response

from .harness import Call, Endpoint, Lab, Message, Script, build_request, make_lab

WILDCARD = [Listener(0, "udp", "0.0.0.0", 5060)]
ADVERTISED = [Listener(0, "udp", "127.0.0.1", 5060, advertise_host="203.0.113.5")]


def sipp_uac_request(call: Call, ruri: bytes, method: str, call_id: bytes | None = None) -> bytes:
    """What SIPp's built-in ``uac`` sends in its dialog: to the balancer, with no Route."""
    assert call.remote_tag is not None
    return build_request(
        method,
        ruri,
        [
            (b"Via", b"SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-sipp-" + method.encode()),
            (b"From", call.from_),
            (b"To", call.to + b";tag=" + call.remote_tag),
            (b"Call-ID", call_id or call.call_id),
            (b"CSeq", b"%d %s" % (1 if method == "ACK" else 2, method.encode())),
            (b"Max-Forwards", b"70"),
        ],
    )


def answered_call(listeners: list[Listener] | None) -> tuple[Lab, Call]:
    lab = make_lab(1, listeners=listeners)
    call = lab.uac.call()
    call.invite()
    lab.net.run(1.0)
    assert call.statuses == [100, 180, 200]
    return lab, call


# (listeners, the Request-URI that names siplb)
SELF_CASES = [
    pytest.param(WILDCARD, b"sip:service@127.0.0.1:5060", id="wildcard-listener"),
    pytest.param(WILDCARD, b"sip:service@127.0.0.1", id="wildcard-default-port"),
    pytest.param(ADVERTISED, b"sip:service@203.0.113.5:5060", id="advertised-address"),
    pytest.param(None, b"sip:service@127.0.0.1:5060", id="listener-address"),
]


@pytest.mark.parametrize(("listeners", "ruri"), SELF_CASES)
def test_a_request_to_siplb_itself_with_nowhere_to_go_is_answered_not_looped(
    listeners: list[Listener] | None, ruri: bytes
) -> None:
    """No Route, and a Call-ID that is no call of ours: 404 (an ACK is dropped), logged."""
    lab, call = answered_call(listeners)
    lab.proxy.take_events()
    lab.uac.send(sipp_uac_request(call, ruri, "BYE", call_id=b"unknown@example.com"))
    lab.net.run(3.0)
    assert lab.net.to_itself == 0  # before: about 70 copies, one per Max-Forwards
    assert [r.status for r in lab.uac.responses("BYE")] == [404]
    assert lab.uas[0].requests("BYE") == []
    [rejected] = [e for e in lab.proxy.take_events() if isinstance(e, RequestRejected)]
    assert rejected.status == 404  # logged, with its cause
    lab.uac.send(sipp_uac_request(call, ruri, "ACK", call_id=b"unknown@example.com"))
    lab.net.run(4.0)
    assert lab.net.to_itself == 0
    assert any(isinstance(e, MessageDropped) for e in lab.proxy.take_events())


@pytest.mark.parametrize(("listeners", "ruri"), SELF_CASES)
def test_a_caller_that_ignores_record_route_still_reaches_its_call(
    listeners: list[Listener] | None, ruri: bytes
) -> None:
    """SIPp's ``uac`` sends its ACK and BYE to the balancer without Route: they go to the
    destination of that call (Request-URI aimed there), so the call is confirmed and ends."""
    lab, call = answered_call(listeners)
    lab.uac.send(sipp_uac_request(call, ruri, "ACK"))
    lab.net.run(2.0)
    [ack] = lab.uas[0].requests("ACK")
    assert ack.uri == b"sip:service@127.0.0.1:5070"
    lab.uac.send(sipp_uac_request(call, ruri, "BYE"))
    lab.net.run(3.0)
    assert lab.net.to_itself == 0
    assert len(lab.uas[0].requests("BYE")) == 1
    assert [r.status for r in lab.uac.responses("BYE")] == [200]
    assert lab.active(0) == 0  # the call ended in the call table too


def test_the_destination_itself_gets_404_not_its_own_request_back() -> None:
    lab, call = answered_call(None)
    pbx = lab.uas[0]
    bye = sipp_uac_request(call, b"sip:service@127.0.0.1:5060", "BYE")
    pbx.send(bye.replace(b"127.0.0.1:5061;branch", b"127.0.0.1:5070;branch"))
    lab.net.run(2.0)
    assert [r.status for r in pbx.responses("BYE")] == [404]
    assert pbx.requests("BYE") == []


class Reflector(Endpoint):
    """A misrouting element: sends every request it gets back to the balancer as a proxy
    would (its own Via on top, Max-Forwards less one), the Request-URI as it was or rewritten
    by ``rewrite``; answers ``answer`` to a Request-URI it does not rewrite; relays responses."""

    def __init__(self, target: Target, rewrite: dict[bytes, bytes], answer: int) -> None:
        super().__init__("reflector", target)
        self.rewrite = rewrite
        self.answer = answer
        self.seen: list[Request] = []

    def receive(self, message: Message, send: Send) -> None:
        if isinstance(message, Response):  # the way back: our Via off, to the next Via
            self.reply(message.without_top_value(b"via").to_bytes(), send)
            return
        if message.method == "ACK":
            return
        self.seen.append(message)
        uri = message.uri
        if uri not in self.rewrite and uri in self.rewrite.values():
            lines = [b"SIP/2.0 %d Busy Here" % self.answer]
            lines += [b"%s: %s" % pair for pair in message.headers if pair[0].lower() != b"to"]
            lines.append(b"To: " + (message.get(b"to") or b"") + b";tag=refl")
            self.reply(b"\r\n".join(lines) + b"\r\n\r\n", send)
            return
        hops = (message.max_forwards or 70) - 1
        via = b"SIP/2.0/UDP %s;branch=%s" % (self.host_port, self.new_branch())
        forwarded = message.with_header_first(b"Via", via).with_header(
            b"Max-Forwards", b"%d" % hops
        )
        forwarded = forwarded.without_header(b"record-route")
        self.reply(forwarded.with_uri(self.rewrite.get(uri, uri)).to_bytes(), send)


def reflector_lab(rewrite: dict[bytes, bytes]) -> tuple[Lab, Reflector]:
    lab = make_lab([Script()])
    reflector = Reflector(lab.uas[0].target, rewrite, 486)
    lab.net.add(reflector)  # in the destination's place
    return lab, reflector


def test_a_request_that_comes_back_as_it_was_sent_is_a_loop() -> None:
    """16.3 step 4: our Via with our branch, the same Request-URI: 482 at the second pass."""
    lab, reflector = reflector_lab({})
    call = lab.uac.call(b"sip:bob@127.0.0.1:5060")
    call.invite()
    lab.net.run(1.0)
    assert len(reflector.seen) == 1  # before: once per Max-Forwards, then 483
    assert call.statuses == [100, 482]
    assert lab.proxy.stats["refused:loop"] == 1


def test_a_request_that_comes_back_changed_spirals_on() -> None:
    """A destination that sends the request back for another user is a spiral, not a loop."""
    lab, reflector = reflector_lab({b"sip:bob@127.0.0.1:5060": b"sip:carol@127.0.0.1:5060"})
    call = lab.uac.call(b"sip:bob@127.0.0.1:5060")
    call.invite()
    lab.net.run(1.0)
    assert [r.uri for r in reflector.seen] == [
        b"sip:bob@127.0.0.1:5060",
        b"sip:carol@127.0.0.1:5060",
    ]
    assert call.statuses == [100, 486]
    assert lab.proxy.stats["refused:loop"] == 0


def test_an_options_to_siplb_itself_in_a_call_is_answered_by_siplb() -> None:
    """No user part: the request is for siplb itself, not for the call's destination."""
    lab, call = answered_call(None)
    lab.uac.send(sipp_uac_request(call, b"sip:127.0.0.1:5060", "OPTIONS"))
    lab.net.run(2.0)
    assert [r.status for r in lab.uac.responses("OPTIONS")] == [200]
    assert lab.uas[0].requests("OPTIONS") == []
