"""No open relay (docs/design.md 4): a request goes only where its dialog can lead.

Each relayed case of the attack table (a To tag with a foreign Request-URI, a foreign Route after
ours, a foreign ``;alias=``) is refused with one 403 for INVITE, MESSAGE, BYE and INFO, and the
foreign host receives nothing. The dialog's real paths keep working: a stranger may reach a
destination, a destination may reach anyone (the other party), a trusted network likewise.
"""

from __future__ import annotations

from ipaddress import ip_network

import pytest

from siplb.proxy.actions import Target
from siplb.settings import ProtectionSettings, RegistrarSettings
from siplb.sip import Request

from .harness import UAC, Endpoint, Lab, Message, Received, Send, build_request, make_lab

FOREIGN = Target("udp", "127.0.0.50", 5060)
STRANGER = Target("udp", "127.0.0.9", 5000)
OURS = b"<sip:127.0.0.1:5060;lr>"


class Sink(Endpoint):
    """A host that must never hear from the proxy."""

    def receive(self, message: Message, send: Send) -> None:
        self.inbox.append(Received(self.network.clock.now, message, send))


def _lab(*, protection: ProtectionSettings | None = None, registrar: bool = False) -> Lab:
    lab = make_lab(2, protection=protection or ProtectionSettings())
    if registrar:
        from siplb.proxy.registrar import FrontEnd

        lab.proxy.front = FrontEnd(lab.proxy.context, RegistrarSettings(keepalive_interval=0))
    return lab


def _in_dialog(sender: UAC, method: str, ruri: bytes, routes: list[bytes]) -> bytes:
    headers = [
        (b"Via", b"SIP/2.0/UDP %s;branch=%s" % (sender.host_port, sender.new_branch())),
        (b"Max-Forwards", b"70"),
        (b"From", b"<sip:alice@example.com>;tag=a1"),
        (b"To", b"<sip:bob@example.com>;tag=b1"),
        (b"Call-ID", b"relay-%s@example.com" % sender.new_tag()),
        (b"CSeq", b"2 %s" % method.encode()),
    ]
    headers.extend((b"Route", route) for route in routes)
    return build_request(method, ruri, headers)


RELAYED = [
    ("ruri", b"sip:victim@127.0.0.50:5060", []),
    ("route", b"sip:victim@127.0.0.1:5070", [OURS, b"<sip:127.0.0.50:5060;lr>"]),
    ("route-only", b"sip:victim@127.0.0.1:5070", [b"<sip:127.0.0.50:5060;lr>"]),
    ("ruri-after-ours", b"sip:victim@127.0.0.50:5060", [OURS]),
]
METHODS = ["INVITE", "MESSAGE", "BYE", "INFO"]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(("case", "ruri", "routes"), RELAYED)
def test_a_stranger_cannot_relay_in_dialog(
    method: str, case: str, ruri: bytes, routes: list[bytes]
) -> None:
    lab = _lab()
    attacker = UAC("attacker", STRANGER)
    sink = Sink("foreign", FOREIGN)
    lab.net.add(attacker)
    lab.net.add(sink)
    attacker.send(_in_dialog(attacker, method, ruri, routes))
    lab.net.run(40.0)
    assert sink.inbox == []
    assert [r.message.status for r in attacker.inbox] == [403]  # type: ignore[union-attr]
    assert lab.proxy.stats["refused:relay"] == 1
    assert lab.proxy.transactions == 0  # stateless: nothing kept, nothing retransmitted


def test_the_repeat_of_a_refused_request_gets_the_same_single_answer() -> None:
    lab = _lab()
    attacker = UAC("attacker", STRANGER)
    lab.net.add(attacker)
    lab.net.add(Sink("foreign", FOREIGN))
    data = _in_dialog(attacker, "INVITE", b"sip:v@127.0.0.50:5060", [])
    attacker.send(data)
    attacker.send(data)
    lab.net.run(40.0)
    answers = [r.message for r in attacker.inbox]
    assert len(answers) == 2
    assert answers[0].to_bytes() == answers[1].to_bytes()  # type: ignore[union-attr]


@pytest.mark.parametrize("method", ["ACK"])
def test_an_ack_is_not_relayed_either(method: str) -> None:
    lab = _lab()
    attacker = UAC("attacker", STRANGER)
    sink = Sink("foreign", FOREIGN)
    lab.net.add(attacker)
    lab.net.add(sink)
    attacker.send(_in_dialog(attacker, method, b"sip:v@127.0.0.50:5060", []))
    lab.net.run(5.0)
    assert sink.inbox == []
    assert attacker.inbox == []
    assert lab.proxy.stats["refused:relay"] == 1


def test_an_alias_from_a_stranger_is_refused() -> None:
    lab = _lab(registrar=True)
    attacker = UAC("attacker", STRANGER)
    sink = Sink("foreign", FOREIGN)
    lab.net.add(attacker)
    lab.net.add(sink)
    ruri = b"sip:victim@127.0.0.1:5070;alias=127.0.0.50~5060~1"
    attacker.send(_in_dialog(attacker, "INVITE", ruri, [OURS]))
    lab.net.run(40.0)
    assert sink.inbox == []
    assert [r.message.status for r in attacker.inbox] == [403]  # type: ignore[union-attr]


def test_an_alias_from_a_destination_is_honoured() -> None:
    lab = _lab(registrar=True)
    pbx = UAC("pbx", Target("udp", "127.0.0.1", 5070))  # a destination's host
    phone = Sink("phone", FOREIGN)
    lab.net.add(phone)
    lab.net.add(pbx)
    ruri = b"sip:victim@127.0.0.1:5999;alias=127.0.0.50~5060~1"
    pbx.send(_in_dialog(pbx, "BYE", ruri, [OURS]))
    lab.net.run(1.0)
    assert {m.method for m in phone.requests()} == {"BYE"}
    assert phone.requests()[0].uri == b"sip:victim@127.0.0.1:5999"


def test_a_stranger_reaches_a_destination_in_dialog() -> None:
    """The caller's BYE goes to the PBX's Contact: a destination, so it is forwarded."""
    lab = _lab()
    caller = UAC("caller", STRANGER)
    lab.net.add(caller)
    caller.send(_in_dialog(caller, "BYE", b"sip:bob@127.0.0.1:5070", [OURS]))
    lab.net.run(1.0)
    assert [m.method for m in lab.uas[0].requests()] == ["BYE"]
    assert lab.proxy.stats["refused:relay"] == 0


def test_a_destination_reaches_the_other_party() -> None:
    """The PBX's BYE goes to the caller (not a destination): the dialog leads there."""
    lab = _lab()
    caller = Sink("caller", STRANGER)
    pbx = UAC("pbx", Target("udp", "127.0.0.1", 5071))
    lab.net.add(caller)
    lab.net.add(pbx)
    pbx.send(_in_dialog(pbx, "BYE", b"sip:alice@127.0.0.9:5000", [OURS]))
    lab.net.run(1.0)
    assert {m.method for m in caller.requests()} == {"BYE"}


def test_a_trusted_network_may_send_anywhere_the_dialog_leads() -> None:
    lab = _lab(protection=ProtectionSettings(trusted=(ip_network("127.0.0.8/29"),)))
    peer = UAC("peer", STRANGER)  # 127.0.0.9, inside 127.0.0.8/29
    sink = Sink("foreign", FOREIGN)
    lab.net.add(peer)
    lab.net.add(sink)
    peer.send(_in_dialog(peer, "BYE", b"sip:alice@127.0.0.50:5060", [OURS]))
    lab.net.run(1.0)
    assert {m.method for m in sink.requests()} == {"BYE"}


def test_a_full_call_from_a_stranger_still_works() -> None:
    lab = _lab()
    caller = UAC("caller", STRANGER)
    lab.net.add(caller)
    call = caller.call()
    call.invite()
    lab.net.run(1.0)
    call.bye()
    lab.net.run(2.0)
    assert 200 in call.statuses
    assert [r.status for r in call.responses_to("BYE")] == [200]
    assert all(isinstance(m, Request) for m in lab.uas[0].requests() + lab.uas[1].requests())


# ---- pre-loaded Route sets on new requests (RFC 3608 Service-Route, outbound proxies) --------

TRUSTED_PEER = Target("udp", "127.0.0.12", 5060)  # inside 127.0.0.8/29

# (Route set of a new INVITE, where it arrives, or None: refused with 403 and sent nowhere)
PRELOADED = [
    pytest.param([OURS, b"<sip:127.0.0.1:5071;lr>"], "uas1", id="ours-then-a-destination"),
    pytest.param([OURS, b"<sip:scscf@127.0.0.12;lr>"], "peer", id="ours-then-a-trusted-peer"),
    pytest.param(
        [OURS, b"<sip:127.0.0.1:5071;lr>", b"<sip:127.0.0.50;lr>"],
        "uas1",
        id="the-next-hop-decides",
    ),
    pytest.param([OURS, b"<sip:127.0.0.50:5060;lr>"], None, id="ours-then-foreign"),
    pytest.param([b"<sip:127.0.0.1:5071;lr>"], None, id="a-destination-without-ours"),
]


@pytest.mark.parametrize(("routes", "reached"), PRELOADED)
def test_a_preloaded_route_through_us_to_a_peer_of_ours_is_loose_routed(
    routes: list[bytes], reached: str | None
) -> None:
    lab = _lab(protection=ProtectionSettings(trusted=(ip_network("127.0.0.8/29"),)))
    caller = UAC("caller", Target("udp", "127.0.0.30", 5000))
    sink = Sink("foreign", FOREIGN)
    peer = Sink("peer", TRUSTED_PEER)
    for endpoint in (caller, sink, peer):
        lab.net.add(endpoint)
    call = caller.call(b"sip:bob@example.com", headers=[(b"Route", r) for r in routes])
    call.invite()
    lab.net.run(1.0)
    hosts = {"uas0": lab.uas[0], "uas1": lab.uas[1], "peer": peer, "foreign": sink}
    got = {name for name, endpoint in hosts.items() if endpoint.requests("INVITE")}
    if reached is None:
        assert got == set()
        assert call.statuses == [403]
        return
    assert got == {reached}
    invite = hosts[reached].requests("INVITE")[0]  # (a sink retransmits: it never answers)
    assert invite.uri == b"sip:bob@example.com"  # loose routing: the Request-URI as it was
    assert invite.values(b"route") == routes[1:]  # our entry popped, the rest kept (16.4)
    assert invite.values(b"record-route") == [OURS]  # later requests of the dialog pass here
    assert lab.proxy.stats["refused:relay"] == 0
