"""Which worker owns a datagram, the channel's wire format, and the health hooks a following
worker uses (``siplb.io.workers``, ``HealthTable.follow``/``relay``)."""

from __future__ import annotations

import pytest

from siplb.dispatch import HealthSettings, HealthTable, State
from siplb.io.workers import (
    Steering,
    decode_control,
    decode_datagram,
    encode_control,
    encode_datagram,
)

INVITE = (
    b"INVITE sip:bob@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bK-n1.1-abc\r\n"
    b"From: <sip:a@b>;tag=1\r\nTo: <sip:bob@example.com>\r\n"
    b"Call-ID: %s\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
)


def _call_owner(call_id: bytes) -> int:
    """The worker that owns ``call_id`` (whatever the hash): the owner of a bare request."""
    return Steering("n1", 4, 2).owner(b"OPTIONS sip:x SIP/2.0\r\nCall-ID: " + call_id + b"\r\n\r\n")


def _response(branch: bytes, call_id: bytes = b"call-1") -> bytes:
    return (
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=" + branch + b"\r\n"
        b"Via: SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bK-n1.2-up\r\n"
        b"Call-ID: " + call_id + b"\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    )


# (datagram, owner among 4 workers)
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
    assert Steering("n1", 4, 2).owner(data) == owner


def test_an_invite_its_cancel_and_its_bye_have_one_owner() -> None:
    steering = Steering("n1", 2, 0)
    invite = INVITE % b"abc-123@10.0.0.9"
    cancel = invite.replace(b"INVITE sip", b"CANCEL sip").replace(b"1 INVITE", b"1 CANCEL")
    bye = invite.replace(b"INVITE sip", b"BYE sip").replace(b"1 INVITE", b"2 BYE")
    assert {steering.owner(m) for m in (invite, cancel, bye)} == {steering.owner(invite)}


def test_call_ids_spread_over_workers() -> None:
    steering = Steering("n1", 2, 0)
    owners = [steering.owner(INVITE % f"{n}-4242@127.0.0.1".encode()) for n in range(1000)]
    assert 400 <= owners.count(0) <= 600


DATAGRAMS = [
    (0, ("127.0.0.1", 5060), b"INVITE ..."),
    (3, ("::1", 65535), b""),
    (255, ("2001:db8::1", 1), bytes(range(256))),
]


@pytest.mark.parametrize(("listener", "source", "data"), DATAGRAMS)
def test_datagram_round_trip(listener: int, source: tuple[str, int], data: bytes) -> None:
    assert decode_datagram(encode_datagram(listener, source, data)) == (listener, source, data)


def test_control_round_trip() -> None:
    message = encode_control("health", states=[["sip:a", "down", "probe timeout"]])
    assert decode_control(message) == {
        "op": "health",
        "states": [["sip:a", "down", "probe timeout"]],
    }


# (state the deciding worker sent, effective state a following worker ends in, admin override)
FOLLOW = [
    (State.DOWN, State.DOWN, None),
    (State.SUSPECT, State.SUSPECT, None),
    (State.DRAINING, State.DRAINING, "draining"),
    (State.DISABLED, State.DISABLED, "disabled"),
    (State.UP, State.UP, None),
]


@pytest.mark.parametrize(("sent", "state", "admin"), FOLLOW)
def test_follow_takes_the_state_decided_elsewhere(
    sent: State, state: State, admin: str | None
) -> None:
    table = HealthTable(HealthSettings())
    table.add("sip:a", 0.0)
    table.set_admin("sip:a", None, 0.0)
    event = table.follow("sip:a", sent, 1.0, "probe timeout")
    assert table.state("sip:a") is state
    assert table.admin("sip:a") == admin
    assert (event is None) == (state is State.UP)
    assert table.follow("sip:unknown", sent, 1.0, "x") is None


def test_follow_clears_an_admin_state() -> None:
    table = HealthTable(HealthSettings())
    table.add("sip:a", 0.0)
    table.follow("sip:a", State.DISABLED, 1.0, "admin")
    table.follow("sip:a", State.UP, 2.0, "admin enabled")
    assert (table.state("sip:a"), table.admin("sip:a")) == (State.UP, None)


def test_relay_takes_passive_inputs_instead_of_the_table() -> None:
    table = HealthTable(HealthSettings(down_after=1))
    table.add("sip:a", 0.0)
    relayed: list[tuple[str, bool, float, str]] = []
    table.relay = lambda uri, ok, now, cause: relayed.append((uri, ok, now, cause))
    assert table.passive_failure("sip:a", 1.0, "timeout") is None
    assert table.passive_success("sip:a", 2.0) is None
    assert table.passive_failure("sip:unknown", 3.0, "timeout") is None
    assert table.state("sip:a") is State.UP  # only the deciding worker's states count here
    assert relayed == [("sip:a", False, 1.0, "timeout"), ("sip:a", True, 2.0, "traffic ok")]
    assert table.probe_result("sip:a", False, 4.0) is not None  # probes are not relayed
