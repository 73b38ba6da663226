"""Calls in setup shared between nodes (an anycast listener, ``siplb.cluster.setups``): every
attempt is told to the other nodes, a call in setup stays pinned to its live node, and when its
node is gone the node that owns its Call-ID continues it with the same downstream branch, so the
PBX sees a retransmission of the INVITE it has, not a second call."""

from __future__ import annotations

import dataclasses
from typing import Any

from siplb.cluster import Member, Ownership
from siplb.cluster.setups import Setup, SetupEnded
from siplb.proxy.actions import HandOver
from siplb.settings import ProxySettings
from siplb.sip import Request, Response, parse

from .harness import UAC_TARGET, Call, Lab, Script, make_lab

A = Member("a", 0)
B = Member("b", 0)
SHARED = frozenset({0})  # the UDP listener is the anycast one


def node(me: Member, *, live: tuple[Member, ...] = (A, B), script: Script | None = None) -> Lab:
    lab = make_lab([script or Script()], settings=ProxySettings(node_id=me.node))
    lab.proxy.share_setups()
    lab.proxy.members_changed(Ownership(me, live), shared=SHARED)
    return lab


def call_id_owned_by(member: Member, start: int = 0) -> bytes:
    ownership = Ownership(A, (A, B))
    for n in range(start, start + 1000):
        call_id = b"call-%d@example.com" % n
        if ownership.owner_of_key(call_id) == member:
            return call_id
    raise AssertionError("no Call-ID for that member")


def ringing() -> Script:
    return Script(invite=[180, (200, 30.0)])


def ringing_on_a() -> tuple[Lab, Call, Setup, Setup]:
    """A call in setup on node a, ringing: a told the others its attempt, then that the PBX
    answered it provisionally."""
    a = node(A, script=ringing())
    call = a.uac.call(call_id=call_id_owned_by(A))
    call.invite()
    a.net.run(1.0)
    setup, proceeding = a.proxy.setup_notes
    assert isinstance(setup, Setup)
    assert isinstance(proceeding, Setup)
    return a, call, setup, proceeding


def invites_to_pbx(lab: Lab) -> list[Request]:
    out = []
    for wire in lab.net.sent_by_proxy(lab.uas[0].target):
        message = wire.message
        if isinstance(message, Request) and message.method == "INVITE":
            out.append(message)
    return out


def test_every_attempt_and_its_end_are_told() -> None:
    lab = node(A)
    call = lab.uac.call(call_id=call_id_owned_by(A))
    call.invite()
    lab.net.run(1.0)
    assert call.statuses[-1] == 200
    setup, proceeding, ended = lab.proxy.setup_notes
    assert isinstance(setup, Setup)
    assert not setup.proceeding
    assert proceeding == Setup(**{**_fields(setup), "proceeding": True})  # the 180 came
    [sent] = invites_to_pbx(lab)
    assert (setup.call_id, setup.owner, setup.uri) == (call.call_id, A, lab.uri(0))
    assert setup.branch == sent.top_via().branch
    assert (setup.source, setup.listener, setup.attempts) == (("127.0.0.1", 5061), 0, 1)
    assert parse(setup.invite).to_bytes() == call.data
    assert ended == SetupEnded(call.call_id, A)
    assert lab.proxy.setups is not None
    assert len(lab.proxy.setups) == 0


def test_a_call_in_setup_stays_pinned_to_its_live_node() -> None:
    _, call, setup, _ = ringing_on_a()
    # b heard it; a is drained now, so rendezvous gives the Call-ID to b, but the pin holds
    b = node(B)
    b.proxy.setup_heard(setup, 1.0)
    b.proxy.members_changed(Ownership(B, (A, B), drained=(A,)), shared=SHARED)
    b.uac.send(call.data)
    b.net.settle()
    assert b.proxy.handovers == [HandOver(A, call.data, UAC_TARGET, 0)]
    # a new call is b's: a drained node gets none
    fresh = b.uac.call(call_id=call_id_owned_by(A, start=2000))
    fresh.invite()
    b.net.settle()
    assert len(b.proxy.handovers) == 1
    assert fresh.statuses[-1] == 200


def test_a_datagram_on_a_unicast_listener_is_never_handed_over() -> None:
    b = node(B)
    call = b.uac.call(call_id=call_id_owned_by(A), to=b.net._listener_target(1))
    call.invite()
    b.net.settle()
    assert b.proxy.handovers == []


def test_the_setup_of_a_node_gone_continues_with_the_same_branch() -> None:
    a, call, setup, _ = ringing_on_a()
    assert call.statuses == [100, 180]
    pbx = a.uas[0]
    b = node(B)
    b.net.add(pbx)  # the same PBX, with the transaction a started
    b.proxy.setup_heard(setup, 1.0)
    b.proxy.members_changed(Ownership(B, (B,)), shared=SHARED)  # a is gone
    assert b.proxy.adopt_orphans(1.0) == 1
    b.net.settle()
    [again] = invites_to_pbx(b)
    assert again.top_via().branch == setup.branch
    assert len(pbx.transactions) == 1  # a retransmission to the PBX, not a second call
    # the PBX repeats its 180 to the branch of a node gone: b relays it to the caller
    relayed = [r for r in b.uac.responses("INVITE") if r.call_id == call.call_id]
    assert [r.status for r in relayed] == [180]
    # b tells the others it owns the setup now, and that the PBX answered it
    told, proceeding_told = b.proxy.setup_notes
    assert isinstance(told, Setup)
    assert (told.owner, told.branch, told.uri, told.proceeding) == (
        B,
        setup.branch,
        setup.uri,
        False,
    )
    assert isinstance(proceeding_told, Setup)
    assert proceeding_told.proceeding
    assert b.proxy.stats["setups_adopted"] == 1
    # a second look adopts nothing more
    assert b.proxy.adopt_orphans(1.0) == 0


def test_a_setup_answered_provisionally_is_adopted_quietly() -> None:
    a, call, _, proceeding = ringing_on_a()
    [sent] = invites_to_pbx(a)
    b = node(B)
    b.proxy.setup_heard(proceeding, 1.0)
    b.proxy.members_changed(Ownership(B, (B,)), shared=SHARED)
    assert b.proxy.adopt_orphans(1.0) == 1
    b.net.settle()
    assert invites_to_pbx(b) == []  # Proceeding: the PBX has it, nothing is sent again
    # the PBX's 200, sent to the branch of the node gone, reaches the caller through b
    ok = Response.build(
        200,
        b"OK",
        [(b"Via", value) for value in sent.get_all(b"via")]
        + [
            (b"From", sent.get(b"from") or b""),
            (b"To", (sent.get(b"to") or b"") + b";tag=pbx"),
            (b"Call-ID", call.call_id),
            (b"CSeq", b"1 INVITE"),
            (b"Contact", b"<sip:uas0@127.0.0.1:5070>"),
        ],
        b"",
    )
    b.uas[0].send(ok.to_bytes())
    b.net.settle()
    statuses = [r.status for r in b.uac.responses("INVITE") if r.call_id == call.call_id]
    assert statuses[-1] == 200


def test_alone_a_foreign_siplb_branch_is_still_dropped() -> None:
    lab = make_lab(1)
    lab.uas[0].send(
        b"SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-n9.0-abc\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bKx\r\nFrom: <sip:a@x>;tag=1\r\n"
        b"To: <sip:b@y>;tag=2\r\nCall-ID: r1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    )
    lab.net.settle()
    assert lab.net.sent_by_proxy() == []
    assert lab.proxy.stats["dropped"] == 1


def _fields(setup: Setup) -> dict[str, Any]:
    return {f.name: getattr(setup, f.name) for f in dataclasses.fields(setup)}
