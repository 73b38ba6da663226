"""The workers of one node as cluster members: which worker owns a datagram (the one ownership
rule, ``siplb.cluster.Ownership``, over ``node.0`` .. ``node.N-1``), the channel's payloads and
sealed frames (``siplb.io.workers``), and the health a following worker takes
(``HealthTable.follow``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

from siplb.cluster import Member, Ownership
from siplb.cluster.channel import Sealer
from siplb.dispatch import HealthSettings, HealthTable, State
from siplb.io.workers import (
    CONTROL,
    DATAGRAM,
    WorkerLink,
    WorkerSockets,
    decode_control,
    decode_datagram,
    encode_control,
    encode_datagram,
    open_worker_sockets,
)

WORKERS = [Member("n1", w) for w in range(4)]

INVITE = (
    b"INVITE sip:bob@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bK-n1.1-abc\r\n"
    b"From: <sip:a@b>;tag=1\r\nTo: <sip:bob@example.com>\r\n"
    b"Call-ID: %s\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
)


def _owner(data: bytes, me: int = 2, workers: int = 4) -> int:
    members = WORKERS[:workers] if workers <= 4 else [Member("n1", w) for w in range(workers)]
    return Ownership(members[me], members).owner(data).worker


def _call_owner(call_id: bytes) -> int:
    """The worker that owns ``call_id`` (whatever the hash): the owner of a bare request."""
    return _owner(b"OPTIONS sip:x SIP/2.0\r\nCall-ID: " + call_id + b"\r\n\r\n")


def _response(branch: bytes, call_id: bytes = b"call-1") -> bytes:
    return (
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=" + branch + b"\r\n"
        b"Via: SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bK-n1.2-up\r\n"
        b"Call-ID: " + call_id + b"\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    )


# (datagram, owner among 4 workers, received by worker 2)
CASES = [
    # requests: by Call-ID, whatever branch their Via carries
    (INVITE % b"call-1", _call_owner(b"call-1")),
    (INVITE % b"other@host", _call_owner(b"other@host")),
    (INVITE.replace(b"Call-ID: %s", b"i:  call-1 ") % (), _call_owner(b"call-1")),  # compact
    (INVITE.replace(b"Call-ID", b"CALL-ID") % b"call-1", _call_owner(b"call-1")),
    # responses with our branch: the worker in the branch
    (_response(b"z9hG4bK-n1.3-5a1"), 3),
    (_response(b"z9hG4bK-n1.0-p5a1"), 0),  # a probe's answer goes to the probing worker
    # responses to others' requests, or beyond our workers: by Call-ID
    (_response(b"z9hG4bK-n2.3-5a1"), _call_owner(b"call-1")),
    (_response(b"z9hG4bK-n1.7-5a1"), _call_owner(b"call-1")),
    (_response(b"z9hG4bKplain"), _call_owner(b"call-1")),
    # not SIP enough to have an owner: the receiving worker answers or drops it
    (b"\x00\xff garbage", 2),
]


@pytest.mark.parametrize(("data", "owner"), CASES)
def test_owner(data: bytes, owner: int) -> None:
    assert _owner(data) == owner


def test_an_invite_its_cancel_and_its_bye_have_one_owner() -> None:
    invite = INVITE % b"abc-123@10.0.0.9"
    cancel = invite.replace(b"INVITE sip", b"CANCEL sip").replace(b"1 INVITE", b"1 CANCEL")
    bye = invite.replace(b"INVITE sip", b"BYE sip").replace(b"1 INVITE", b"2 BYE")
    owners = {_owner(m, me=0, workers=2) for m in (invite, cancel, bye)}
    assert owners == {_owner(invite, me=0, workers=2)}


def test_call_ids_spread_over_workers() -> None:
    owners = [_owner(INVITE % f"{n}-4242@127.0.0.1".encode(), 0, 2) for n in range(1000)]
    assert 400 <= owners.count(0) <= 600


DATAGRAMS = [
    (0, ("127.0.0.1", 5060), b"INVITE ..."),
    (3, ("::1", 65535), b""),
    (255, ("2001:db8::1", 1), bytes(range(256))),
]


@pytest.mark.parametrize(("listener", "source", "data"), DATAGRAMS)
def test_datagram_round_trip(listener: int, source: tuple[str, int], data: bytes) -> None:
    assert decode_datagram(encode_datagram(listener, source, data)) == (listener, source, data)


def test_a_truncated_datagram_payload_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="truncated"):
        decode_datagram(b"\x00")


def test_a_control_message_may_carry_any_field_name() -> None:
    assert decode_control(encode_control("stats", op_=1, worker=1, to=2)) == {
        "op": "stats",
        "op_": 1,
        "worker": 1,
        "to": 2,
    }


def test_control_round_trip() -> None:
    message = encode_control("health", states=[["sip:a", "down", "probe timeout"]])
    assert decode_control(message) == {
        "op": "health",
        "states": [["sip:a", "down", "probe timeout"]],
    }


# ---- sealed frames ---------------------------------------------------------------------------


@pytest.fixture
def sockets() -> Iterator[WorkerSockets]:
    group = open_worker_sockets([], 2)
    yield group
    group.close()


class Received:
    def __init__(self) -> None:
        self.datagrams: list[tuple[int, tuple[str, int], bytes]] = []
        self.controls: list[dict[str, Any]] = []

    def link(self, worker: int, sockets: WorkerSockets) -> WorkerLink:
        return WorkerLink(
            WORKERS[worker],
            sockets,
            on_datagram=lambda *args: self.datagrams.append(args),
            on_control=self.controls.append,
        )


def test_the_parent_draws_a_secret_at_each_start(sockets: WorkerSockets) -> None:
    other = open_worker_sockets([], 2)
    try:
        assert len(sockets.secret) == 32
        assert sockets.secret != other.secret
    finally:
        other.close()


def test_a_sealed_frame_is_taken_once(sockets: WorkerSockets) -> None:
    got = Received()
    link = got.link(1, sockets)
    sealer = Sealer(sockets.secret, WORKERS[0], boot=1)
    frame = sealer.seal(DATAGRAM, encode_datagram(0, ("10.0.0.9", 5060), b"BYE"), time.time())
    link.receive(frame, ("127.0.0.1", 1))
    link.receive(frame, ("127.0.0.1", 1))  # replayed
    link.receive(sealer.seal(CONTROL, encode_control("unban", host="x"), time.time()), ("", 0))
    assert got.datagrams == [(0, ("10.0.0.9", 5060), b"BYE")]
    assert got.controls == [{"op": "unban", "host": "x"}]
    assert link.stats == {"taken_over": 1, "rejected_replayed": 1}


# (what reaches worker 1's channel, the counter it lands in)
BAD_FRAMES = [
    (lambda s: Sealer(b"x" * 32, WORKERS[0], 1).seal(DATAGRAM, b"", time.time()), "forged"),
    (lambda s: Sealer(s, WORKERS[0], 1).seal(DATAGRAM, b"", time.time() - 60), "stale"),
    (lambda s: b"\x01short", "malformed"),
    (lambda s: Sealer(s, WORKERS[0], 1).seal(DATAGRAM, b"\x00", time.time()), "malformed"),
    (lambda s: Sealer(s, WORKERS[0], 1).seal(CONTROL, b"[1]", time.time()), "malformed"),
    (lambda s: Sealer(s, WORKERS[0], 1).seal(9, b"", time.time()), "malformed"),
]


@pytest.mark.parametrize(("make", "reason"), BAD_FRAMES)
def test_a_rejected_frame_is_dropped_and_counted(
    sockets: WorkerSockets, make: Any, reason: str
) -> None:
    got = Received()
    link = got.link(1, sockets)
    link.receive(make(sockets.secret), ("127.0.0.1", 1))
    assert (got.datagrams, got.controls) == ([], [])
    assert link.stats == {f"rejected_{reason}": 1}


def test_a_hand_over_crosses_the_channel(sockets: WorkerSockets) -> None:
    got = Received()
    sender, receiver = Received().link(0, sockets), got.link(1, sockets)

    async def scene() -> None:
        loop = asyncio.get_running_loop()
        await sender.start(loop)
        await receiver.start(loop)
        arrived = asyncio.Event()
        receiver.on_control = lambda message: (got.controls.append(message), arrived.set())
        sender.hand_over(1, 0, ("10.0.0.9", 5060), b"INVITE")
        sender.control(1, "stats", worker=0)  # sent after the datagram: both are in when it is
        try:
            await asyncio.wait_for(arrived.wait(), 2.0)
        finally:
            sender.close()
            receiver.close()

    asyncio.run(scene())
    assert got.datagrams == [(0, ("10.0.0.9", 5060), b"INVITE")]
    assert got.controls == [{"op": "stats", "worker": 0}]
    assert sender.stats["handed_over"] == receiver.stats["taken_over"] == 1


# ---- following worker 0's health ---------------------------------------------------------------

# (state the deciding worker sent, effective state a following worker ends in, admin override)
FOLLOW = [
    (State.DOWN, State.DOWN, None),
    (State.SUSPECT, State.SUSPECT, None),
    (State.DRAINING, State.DRAINING, "draining"),
    (State.DISABLED, State.DISABLED, "disabled"),
    (State.UP, State.UP, None),
    (State.PROBING, State.PROBING, None),  # worker 0 has not heard a probe answer yet
]


@pytest.mark.parametrize(("sent", "state", "admin"), FOLLOW)
def test_follow_takes_the_state_decided_elsewhere(
    sent: State, state: State, admin: str | None
) -> None:
    table = HealthTable(HealthSettings())
    table.add("sip:a", 0.0)  # a new destination: probing
    table.set_admin("sip:a", None, 0.0)
    event = table.follow("sip:a", sent, 1.0, "probe timeout")
    assert table.state("sip:a") is state
    assert table.admin("sip:a") == admin
    assert (event is None) == (state is State.PROBING)
    assert table.follow("sip:unknown", sent, 1.0, "x") is None


def test_follow_clears_an_admin_state() -> None:
    table = HealthTable(HealthSettings())
    table.add("sip:a", 0.0)
    table.follow("sip:a", State.DISABLED, 1.0, "admin")
    table.follow("sip:a", State.UP, 2.0, "admin enabled")
    assert (table.state("sip:a"), table.admin("sip:a")) == (State.UP, None)
