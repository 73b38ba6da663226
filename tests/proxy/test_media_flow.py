"""Media anchoring in the proxy core (``siplb.proxy.media``), against a fake engine.

A scripted caller and callee (``harness.py``) talk SDP through the core with a fake clock; the
fake engine answers the core's ``MediaAsk``s after a latency (or fails, or stays silent) with
an SDP naming its own address, so each test can see which message asked what, and that what
went on carried the engine's body, Content-Length corrected, and nothing else changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from siplb.config import ConfigError, parse_config
from siplb.media.asks import ANSWER, DELETE, OFFER, MediaAsk
from siplb.media.flow import Flow
from siplb.media.sdp import connection_addresses, is_private, is_sdp, names_private, with_body
from siplb.proxy.actions import Send, Target
from siplb.proxy.core import Proxy
from siplb.proxy.listeners import Listener
from siplb.proxy.media import MediaAnchor, Parked
from siplb.settings import ProxySettings, RouteRule
from siplb.sip import Request, Response, parse

from . import test_registrar as registrar
from .harness import (
    PROXY_HOST,
    PROXY_PORT,
    UAC,
    UAS,
    Call,
    FakeClock,
    Lab,
    Script,
    build_request,
    make_lab,
)

ENGINE_HOST = "203.0.113.9"
SDP_TYPE = (b"Content-Type", b"application/sdp")


def sdp(host: str, port: int, version: int = 1) -> bytes:
    return (
        b"v=0\r\no=- 1 %d IN IP4 %s\r\ns=-\r\nc=IN IP4 %s\r\nt=0 0\r\n"
        b"m=audio %d RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
        % (version, host.encode(), host.encode(), port)
    )


CALLER_SDP = sdp("198.51.100.10", 4000)
CALLEE_SDP = sdp("192.0.2.20", 6000)


@dataclass(frozen=True)
class Policy:
    anchor: str = "always"
    flags: tuple[str, ...] = ("replace-origin",)
    on_failure: str = "forward"
    timeout: float = 1.0
    engines: tuple[str, ...] = ("udp:127.0.0.1:2223",)


@dataclass
class FakeEngine:
    """Answers each ask after ``latency`` with its own SDP; ``mode``: ok, fail or silent."""

    lab: Lab
    latency: float = 0.01
    mode: str = "ok"
    asks: list[MediaAsk] = field(default_factory=list)
    ports: dict[tuple[str, str], int] = field(default_factory=dict)

    def take(self, ask: MediaAsk) -> None:
        self.asks.append(ask)
        if ask.op == DELETE or self.mode == "silent":
            return
        result = None if self.mode == "fail" else self.rewrite(ask)
        clock, proxy = self.lab.clock, self.lab.proxy
        self.lab.net.at(
            clock.now + self.latency,
            lambda: proxy.media_done(ask.token, result, clock.now),
        )

    def rewrite(self, ask: MediaAsk) -> bytes:
        # the port the engine opens toward the side that did NOT send this SDP
        side = ask.to_tag if ask.op == OFFER else ask.from_tag
        port = self.ports.setdefault((ask.call_id, side), 30000 + 2 * len(self.ports))
        return sdp(ENGINE_HOST, port, 7)

    def ops(self) -> list[str]:
        return [ask.op for ask in self.asks]


class SdpUAS(UAS):
    """A callee that puts ``body`` in its answers of the statuses in ``with_sdp``."""

    def __init__(self, *args: object, with_sdp: Sequence[int] = (183, 200), **kw: object) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self.body = CALLEE_SDP
        self.with_sdp = set(with_sdp)
        self.reliable = False
        self.methods = {"INVITE"}  # whose responses carry SDP

    def reply(self, data: bytes, send: Send) -> None:
        message = parse(data)
        if (
            isinstance(message, Response)
            and message.cseq.method in self.methods
            and message.status in self.with_sdp
            and self.body
        ):
            data = data.replace(b"Content-Length: 0\r\n", b"Content-Type: application/sdp\r\n")
            data = data[: -len(b"\r\n")] + b"Content-Length: %d\r\n\r\n" % len(self.body)
            data += self.body
            if self.reliable and message.status < 200:
                data = data.replace(b"CSeq:", b"Require: 100rel\r\nRSeq: 1\r\nCSeq:", 1)
        super().reply(data, send)


def media_lab(
    policy: Policy | None = None,
    *,
    invite: Sequence[int | tuple[int, float]] = (180, 200),
    with_sdp: Sequence[int] = (183, 200),
    routes: Sequence[RouteRule] = (),
    settings: ProxySettings | None = None,
    uac: UAC | None = None,
    max_waiting: int = 4096,
    listeners: Sequence[Listener] | None = None,
    names: Sequence[str | None] = (),
    latency: float = 0.01,
) -> tuple[Lab, FakeEngine]:
    lab = make_lab([Script(invite=invite)], routes=routes, settings=settings, uac=uac)
    if listeners is not None:
        lab = make_lab(
            [Script(invite=invite)], routes=routes, settings=settings, uac=uac, listeners=listeners
        )
    callee = lab.uas[0]
    replacement = SdpUAS(callee.name, callee.target, callee.script, with_sdp=with_sdp)
    lab.net.add(replacement)
    lab.uas[0] = replacement
    engine = FakeEngine(lab, latency=latency)
    proxy = lab.proxy
    flow: Flow[Parked] = Flow(max_waiting=max_waiting)
    anchor = MediaAnchor(policy or Policy(), proxy.context, proxy, listener_names=names, flow=flow)
    anchor.asks = proxy.media_asks

    def run_asks() -> None:  # the shell's flush: each ask reaches the engine
        asks = proxy.media_asks[:]
        proxy.media_asks.clear()
        for ask in asks:
            engine.take(ask)

    lab.net.after_drain.append(run_asks)
    proxy.media = anchor
    proxy.context.media = anchor
    return lab, engine


def place(lab: Lab, body: bytes = CALLER_SDP, *, uac: UAC | None = None) -> Call:
    caller = uac or lab.uac
    headers = [SDP_TYPE] if body else []
    return caller.call(headers=headers, body=body)


def callee_got(lab: Lab, method: str = "INVITE") -> list[Request]:
    return lab.uas[0].requests(method)


def engine_port(message: Request | Response) -> list[str]:
    return connection_addresses(message.body)


def assert_anchored(message: Request | Response) -> None:
    assert is_sdp(message)
    assert engine_port(message) == [ENGINE_HOST]
    assert message.content_length == len(message.body)


# ---- an early offer ------------------------------------------------------------------------------


def test_invite_offer_and_answer_carry_the_engine_sdp() -> None:
    lab, engine = media_lab()
    call = place(lab)
    call.invite()
    lab.net.run(1.0)
    invite = callee_got(lab)[0]
    assert_anchored(invite)
    assert call.statuses == [100, 180, 200]
    assert_anchored(call.responses[-1])
    assert engine.ops() == [OFFER, ANSWER]
    offer, answer = engine.asks
    assert offer.call_id == call.call_id.decode()
    assert offer.from_tag == call.from_tag.decode()
    assert offer.to_tag == ""
    assert offer.sdp == CALLER_SDP
    assert offer.flags == ("replace-origin",)
    assert offer.via_branch == call.branch.decode()
    assert answer.from_tag == call.from_tag.decode()
    assert answer.to_tag == (call.remote_tag or b"").decode()
    assert answer.sdp == CALLEE_SDP


def test_only_the_body_and_content_length_change() -> None:
    anchored, _ = media_lab()
    plain = make_lab([Script()])
    for lab in (anchored, plain):
        place(lab).invite()
        lab.net.run(1.0)
    got = callee_got(anchored)[0] if anchored.uas[0].invites else None
    want = plain.uas[0].invites[0]
    assert got is not None
    skip = {b"content-length", b"via"}
    assert [h for h in got.headers if h[0].lower() not in skip] == [
        h for h in want.headers if h[0].lower() not in skip
    ]
    assert got.get_all(b"via")[1:] == want.get_all(b"via")[1:]
    assert got.body != want.body


def test_with_body_keeps_every_other_byte() -> None:
    data = build_request(
        "INVITE",
        b"sip:bob@example.com",
        [(b"Via", b"SIP/2.0/UDP a;branch=z9hG4bK1"), (b"l", b"5"), (b"X-Odd", b"  spaced  ")],
        b"hello",
    ).replace(b"Content-Length: 5\r\n", b"")
    message = parse(data)
    assert isinstance(message, Request)
    out = with_body(message, b"a much longer body")
    raw = out.to_bytes()
    assert raw == data.replace(b"l: 5", b"l: 18").replace(b"hello", b"a much longer body")


def test_retransmitted_invite_is_absorbed_while_parked() -> None:
    lab, engine = media_lab(latency=0.8)
    call = place(lab)
    call.invite()
    lab.net.run(0.1)
    assert call.statuses == [100]
    assert not callee_got(lab)
    call.invite()
    call.invite()
    lab.net.run(2.0)
    assert len(callee_got(lab)) == 1
    assert engine.ops().count(OFFER) == 1
    assert call.statuses.count(100) == 3  # the 100 repeated to each retransmission


def test_reliable_183_gets_an_answer_and_the_200_repeats_it() -> None:
    lab, engine = media_lab(invite=(183, (200, 0.1)))
    lab.uas[0].reliable = True
    call = place(lab)
    call.invite()
    lab.net.run(1.0)
    assert call.statuses == [100, 183, 200]
    for response in call.responses[1:]:
        assert_anchored(response)
    assert engine.ops() == [OFFER, ANSWER]  # the same SDP again: the engine's last body
    assert lab.proxy.stats["media_repeats"] == 1


def test_a_retransmitted_2xx_is_rewritten_without_asking_again() -> None:
    lab, engine = media_lab()
    call = place(lab)
    call.invite()
    lab.net.run(1.0)
    lab.uas[0].retransmit_final(call.call_id)
    lab.net.run(2.0)
    assert [r.status for r in call.responses].count(200) == 2
    assert_anchored(call.responses[-1])
    assert engine.ops() == [OFFER, ANSWER]


# ---- a late offer --------------------------------------------------------------------------------


def late_ack(call: Call, body: bytes) -> bytes:
    data = call.in_dialog("ACK", cseq=1)
    data = data.replace(b"Content-Length: 0\r\n", b"Content-Type: application/sdp\r\n")
    return data[: -len(b"\r\n")] + b"Content-Length: %d\r\n\r\n" % len(body) + body


def test_late_offer_offers_on_the_2xx_and_answers_on_the_ack() -> None:
    lab, engine = media_lab()
    call = place(lab, b"")
    call.invite()
    lab.net.run(1.0)
    assert not callee_got(lab)[0].body  # forwarded at once, nothing to ask
    assert call.statuses == [100, 180, 200]
    assert_anchored(call.responses[-1])
    lab.uac.send(late_ack(call, CALLER_SDP), call.proxy)
    lab.net.run(2.0)
    ack = callee_got(lab, "ACK")[0]
    assert_anchored(ack)
    assert engine.ops() == [OFFER, ANSWER]
    offer, answer = engine.asks
    callee_tag = (call.remote_tag or b"").decode()
    # the engine's from-tag names the side that offered: the callee here
    assert (offer.from_tag, offer.to_tag) == (callee_tag, call.from_tag.decode())
    assert (answer.from_tag, answer.to_tag) == (callee_tag, call.from_tag.decode())
    assert offer.sdp == CALLEE_SDP
    assert answer.sdp == CALLER_SDP


# ---- in-dialog offers ----------------------------------------------------------------------------


def reinvite(call: Call, body: bytes, cseq: int) -> bytes:
    data = call.in_dialog("INVITE", cseq=cseq)
    data = data.replace(b"Content-Length: 0\r\n", b"Content-Type: application/sdp\r\n")
    data = data[: -len(b"\r\n")] + b"Content-Length: %d\r\n\r\n" % len(body) + body
    return data


def test_reinvite_and_update_go_to_the_same_call() -> None:
    lab, engine = media_lab()
    call = place(lab)
    call.invite()
    lab.net.run(1.0)
    call.ack()
    lab.net.run(1.5)
    lab.uac.send(reinvite(call, sdp("198.51.100.10", 4002, 2), 2), call.proxy)
    lab.net.run(2.0)
    update = reinvite(call, sdp("198.51.100.10", 4004, 3), 3).replace(b"INVITE", b"UPDATE")
    lab.uac.send(update, call.proxy)
    lab.net.run(3.0)
    invites = callee_got(lab)
    assert len(invites) == 2
    assert_anchored(invites[1])
    assert_anchored(callee_got(lab, "UPDATE")[0])
    assert engine.ops() == [OFFER, ANSWER, OFFER, ANSWER, OFFER]  # the UPDATE's 200: no SDP
    tags = {(a.call_id, a.from_tag, a.to_tag) for a in engine.asks[2:]}
    assert tags == {(call.call_id.decode(), call.from_tag.decode(), call.remote_tag.decode())}


def test_an_update_is_answered_by_its_2xx() -> None:
    lab, engine = media_lab()
    lab.uas[0].methods.add("UPDATE")
    call = place(lab)
    call.invite()
    lab.net.run(1.0)
    call.ack()
    update = reinvite(call, sdp("198.51.100.10", 4004, 2), 2).replace(b"INVITE", b"UPDATE")
    lab.uac.send(update, call.proxy)
    lab.net.run(2.0)
    assert engine.ops() == [OFFER, ANSWER, OFFER, ANSWER]
    answer = engine.asks[-1]
    assert (answer.from_tag, answer.to_tag) == (call.from_tag.decode(), call.remote_tag.decode())
    assert_anchored(call.responses_to("UPDATE")[-1])


def test_a_reinvite_from_the_callee_is_its_offer() -> None:
    lab, engine = media_lab()
    call = place(lab)
    call.invite()
    lab.net.run(1.0)
    call.ack()
    lab.net.run(1.5)
    uas = lab.uas[0]
    dialog = uas.dialogs[call.call_id]
    dialog.cseq += 1
    via = b"SIP/2.0/UDP %s;branch=%s" % (uas.host_port, uas.new_branch())
    headers = [(b"Via", via)]
    headers += [(b"Route", route) for route in dialog.route_set]
    headers += [
        (b"Max-Forwards", b"70"),
        (b"From", dialog.local),
        (b"To", dialog.remote),
        (b"Call-ID", call.call_id),
        (b"CSeq", b"%d INVITE" % dialog.cseq),
        (b"Contact", uas.contact),
        SDP_TYPE,
    ]
    body = sdp("192.0.2.20", 6002, 2)
    uas.send(
        build_request("INVITE", dialog.remote_target, headers, body),
        Target("udp", PROXY_HOST, PROXY_PORT),
    )
    lab.net.run(2.0)
    assert_anchored(lab.uac.requests("INVITE")[0])
    offer = engine.asks[2]
    assert offer.op == OFFER
    assert (offer.from_tag, offer.to_tag) == (call.remote_tag.decode(), call.from_tag.decode())


# ---- deletes -------------------------------------------------------------------------------------


def test_bye_deletes_the_call() -> None:
    lab, engine = media_lab()
    call = place(lab)
    call.invite()
    lab.net.run(1.0)
    call.ack()
    call.bye()
    lab.net.run(2.0)
    assert callee_got(lab, "BYE")
    assert engine.ops() == [OFFER, ANSWER, DELETE]
    assert engine.asks[-1].call_id == call.call_id.decode()
    assert engine.asks[-1].token == 0
    assert not lab.proxy.media.flow.calls  # type: ignore[union-attr]


def test_a_failed_setup_deletes_the_call() -> None:
    lab, engine = media_lab(invite=(180, 486))
    call = place(lab)
    call.invite()
    lab.net.run(1.0)
    assert call.statuses[-1] == 486
    assert engine.ops() == [OFFER, DELETE]


def test_cancel_while_ringing_deletes_the_call() -> None:
    lab, engine = media_lab(invite=(180,))
    call = place(lab)
    call.invite()
    lab.net.run(1.0)
    call.cancel()
    lab.net.run(2.0)
    assert call.statuses[-1] == 487
    assert engine.ops() == [OFFER, DELETE]


def test_cancel_while_parked_deletes_after_the_offer() -> None:
    lab, engine = media_lab(latency=0.5)
    call = place(lab)
    call.invite()
    lab.net.run(0.1)
    call.cancel()
    lab.net.run(0.2)
    assert call.statuses[-1] == 487
    assert engine.ops() == [OFFER]  # the delete waits for the offer it ends
    lab.net.run(2.0)
    assert engine.ops() == [OFFER, DELETE]
    assert not callee_got(lab)


def test_an_invite_again_after_a_challenge_offers_after_the_delete() -> None:
    lab, engine = media_lab(invite=(407,), latency=0.0)
    call = place(lab)
    call.invite()
    lab.net.run(1.0)
    assert engine.ops() == [OFFER, DELETE]
    lab.uas[0].script = Script(invite=(180, 200))
    again = call.data.replace(b"CSeq: 1 INVITE", b"CSeq: 2 INVITE").replace(
        call.branch, call.branch + b"x"
    )
    lab.uac.send(again, call.proxy)
    lab.net.run(2.0)
    assert engine.ops() == [OFFER, DELETE, OFFER, ANSWER]
    assert call.call_id in lab.proxy.media.flow.calls  # type: ignore[union-attr]


def test_max_call_age_deletes_the_call() -> None:
    lab, engine = media_lab(settings=ProxySettings(max_call_age=60.0))
    call = place(lab)
    call.invite()
    lab.net.run(1.0)
    call.ack()
    lab.net.run(30.0)
    assert engine.ops() == [OFFER, ANSWER]
    lab.net.run(65.0)
    assert engine.ops() == [OFFER, ANSWER, DELETE]
    assert lab.proxy.stats["media_deletes"] == 1


# ---- engine failure ------------------------------------------------------------------------------


def test_failed_engine_forwards_unanchored() -> None:
    lab, engine = media_lab()
    engine.mode = "fail"
    call = place(lab)
    call.invite()
    lab.net.run(1.0)
    assert callee_got(lab)[0].body == CALLER_SDP
    assert call.responses[-1].body == CALLEE_SDP
    assert engine.ops() == [OFFER, DELETE]  # after a failed offer the call is unanchored
    assert lab.proxy.stats["media_failures"] == 1


def test_failed_engine_rejects_with_503() -> None:
    lab, engine = media_lab(Policy(on_failure="reject"))
    engine.mode = "fail"
    call = place(lab)
    call.invite()
    lab.net.run(1.0)
    assert call.statuses == [100, 503]
    assert not callee_got(lab)


def test_silent_engine_times_out_on_the_core_timer() -> None:
    lab, engine = media_lab(Policy(on_failure="reject", timeout=0.5))
    engine.mode = "silent"
    call = place(lab)
    call.invite()
    lab.net.run(0.9)
    assert call.statuses == [100]
    lab.net.run(1.1)  # two engines' worth of timeouts: 0.5 * (1 + 1)
    assert call.statuses == [100, 503]
    assert lab.proxy.stats["media_timeouts"] == 1
    lab.proxy.media_done(engine.asks[0].token, sdp(ENGINE_HOST, 1), lab.clock.now)  # too late
    assert lab.proxy.stats["media_late"] == 1


def test_a_full_parked_table_counts_as_engine_failure() -> None:
    lab, engine = media_lab(max_waiting=1, latency=0.5)
    first, second = place(lab), place(lab)
    first.invite()
    second.invite()
    lab.net.run(2.0)
    bodies = [r.body for r in callee_got(lab)]
    assert bodies[0] == CALLER_SDP  # the second went on unanchored at once
    assert engine_port(callee_got(lab)[1]) == [ENGINE_HOST]
    assert engine.ops() == [OFFER, DELETE, ANSWER]  # the second is anchored no more
    assert lab.proxy.stats["media_waiting_full"] == 1
    assert [r.body for r in second.responses if r.status == 200] == [CALLEE_SDP]


# ---- which calls ---------------------------------------------------------------------------------


NAT_CASES = [
    # (Via sent-by, source host, SDP address, anchored)
    ("198.51.100.10:5061", "198.51.100.10", "198.51.100.10", False),
    ("10.0.0.5:5061", "198.51.100.10", "10.0.0.5", True),  # NAT: the Via is not the source
    ("198.51.100.10:5061", "198.51.100.10", "192.168.1.5", True),  # private SDP, public source
    ("10.0.0.5:5061", "10.0.0.5", "10.0.0.6", False),  # private on a private network
]


@pytest.mark.parametrize(("sent_by", "host", "media_host", "anchored"), NAT_CASES)
def test_anchor_nat(sent_by: str, host: str, media_host: str, anchored: bool) -> None:
    uac = UAC(target=Target("udp", host, 5061), sent_by=sent_by.encode())
    lab, engine = media_lab(Policy(anchor="nat"), uac=uac)
    call = place(lab, sdp(media_host, 4000))
    call.invite()
    lab.net.run(1.0)
    assert bool(engine.asks) is anchored
    assert (engine_port(callee_got(lab)[0]) == [ENGINE_HOST]) is anchored
    if anchored:  # the engine sends the caller's media to its NAT's address, not the SDP's
        nat = ("SIP-source-address", "received-from=IP4", f"received-from={host}")
        assert engine.asks[0].flags == ("replace-origin", *nat)
        assert engine.asks[1].flags == ("replace-origin",)  # the callee is not behind NAT


@pytest.mark.parametrize(
    ("anchor", "rule", "anchored"),
    [
        ("never", "always", True),
        ("always", "never", False),
        ("never", None, False),
    ],
)
def test_a_route_rule_overrides_anchor(anchor: str, rule: str | None, anchored: bool) -> None:
    routes = [RouteRule(set_name="pbx", media=rule)]
    lab, engine = media_lab(Policy(anchor=anchor), routes=routes)
    place(lab).invite()
    lab.net.run(1.0)
    assert bool(engine.asks) is anchored


def test_multipart_is_left_alone() -> None:
    lab, engine = media_lab()
    body = b"--b\r\nContent-Type: application/sdp\r\n\r\n" + CALLER_SDP + b"--b--\r\n"
    call = lab.uac.call(headers=[(b"Content-Type", b"multipart/mixed;boundary=b")], body=body)
    call.invite()
    lab.net.run(1.0)
    assert callee_got(lab)[0].body == body
    assert call.responses[-1].body == CALLEE_SDP
    assert engine.ops() == []  # the call is not anchored: its offer is not ours to rewrite
    assert lab.proxy.stats["media_not_sdp"] == 1


def test_multi_homed_calls_carry_direction() -> None:
    listeners = [
        Listener(0, "udp", PROXY_HOST, PROXY_PORT),
        Listener(1, "udp", "127.0.0.2", PROXY_PORT),
    ]
    lab, engine = media_lab(listeners=listeners, names=("external", "internal"))

    class Routing:
        def listener_for(self, target: Target) -> int | None:
            return 1 if target.port >= 5070 else 0

    lab.proxy.use_routing(Routing())
    place(lab).invite()
    lab.net.run(1.0)
    assert engine.asks[0].direction == ("external", "internal")
    assert engine.asks[1].direction == ("", "")


def test_without_media_nothing_is_asked() -> None:
    lab = make_lab([Script()])
    assert lab.proxy.media is None
    call = lab.uac.call(headers=[SDP_TYPE], body=CALLER_SDP)
    call.invite()
    lab.net.run(1.0)
    assert lab.uas[0].invites[0].body == CALLER_SDP
    assert lab.proxy.media_asks == []


def test_the_core_builds_its_anchor_from_settings() -> None:
    clock = FakeClock()
    lab = make_lab([Script()])
    proxy = Proxy(
        listeners=list(lab.proxy.listeners),
        sets=[],
        default_set="pbx",
        settings=ProxySettings(),
        health=lab.proxy.dispatcher.health.settings,
        now=clock.now,
        probing=False,
        media=Policy(),
    )
    assert isinstance(proxy.media, MediaAnchor)
    assert proxy.media_asks is proxy.media.asks


# ---- the SDP helpers -----------------------------------------------------------------------------


SDP_CASES = [
    (b"application/sdp", CALLER_SDP, True),
    (b"Application/SDP ; charset=x", CALLER_SDP, True),
    (b"application/sdp", b"", False),
    (b"multipart/mixed;boundary=b", CALLER_SDP, False),
    (None, CALLER_SDP, False),
]


@pytest.mark.parametrize(("content_type", "body", "expected"), SDP_CASES)
def test_is_sdp(content_type: bytes | None, body: bytes, expected: bool) -> None:
    headers = [(b"Via", b"SIP/2.0/UDP a;branch=z9hG4bK1")]
    if content_type is not None:
        headers.append((b"Content-Type", content_type))
    message = parse(build_request("INVITE", b"sip:b@example.com", headers, body))
    assert is_sdp(message) is expected


def test_connection_addresses_and_private() -> None:
    body = (
        b"v=0\r\nc=IN IP4 192.168.1.5/127\r\nm=audio 1 RTP/AVP 0\r\nc=IN IP6 fd00::1\r\nc=bad\r\n"
    )
    assert connection_addresses(body) == ["192.168.1.5", "fd00::1"]
    assert names_private(body)
    assert not names_private(sdp("198.51.100.1", 1))
    assert not is_private("host.example.com")


# ---- a route rule's media, from the config ---------------------------------------------------------


ROUTES = """
[[listen]]
address = "127.0.0.1:5060"
[[sets]]
name = "pbx"
destinations = [{ uri = "sip:127.0.0.1:5070" }]
[[routes]]
set = "pbx"
ruri_domain = "trunk\\\\.example\\\\.com"
media = "always"
[[routes]]
set = "pbx"
"""


def test_a_route_rule_media_comes_from_the_config() -> None:
    config = parse_config(ROUTES)
    assert [rule.media for rule in config.routes] == ["always", None]
    with pytest.raises(ConfigError) as info:
        parse_config(ROUTES.replace('media = "always"', 'media = "sometimes"'))
    assert [problem.path for problem in info.value.problems] == ["routes[0].media"]


def test_anchor_nat_anchors_a_call_to_a_phone_behind_nat() -> None:
    """A call along our Path to a phone registered from behind NAT is anchored, though its
    caller (a PBX on its own network, Via = source) is not behind NAT."""
    proxy = registrar.make_proxy()
    engine_asks: list[MediaAsk] = []
    anchor = MediaAnchor(Policy(anchor="nat"), proxy.context, proxy)
    anchor.asks = proxy.media_asks = engine_asks
    proxy.media = proxy.context.media = anchor
    request = registrar.forwarded(proxy, registrar.register(), registrar.PHONE_NAT, 0)
    registrar.registrar_ok(proxy, request)
    invite = registrar.invite_along_path(request.values(b"path"), b"sip:alice@192.168.1.10:5060")
    invite = invite.replace(b"10.0.0.3:5060;branch", b"10.0.0.2:5070;branch")
    body = sdp("10.0.0.50", 7000)
    invite = invite.replace(b"Content-Length: 0\r\n", b"Content-Type: application/sdp\r\n")
    invite = invite[: -len(b"\r\n")] + b"Content-Length: %d\r\n\r\n" % len(body) + body
    proxy.receive(invite, registrar.PBX, 0, 1.0)
    assert [ask.op for ask in engine_asks] == [OFFER]
    assert engine_asks[0].flags == ("replace-origin",)  # the PBX itself is not behind NAT
