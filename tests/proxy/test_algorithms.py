"""Every selection algorithm reached through the proxy (docs/design.md section 3 step 3)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from siplb.dispatch import Algorithm, HashKey
from siplb.settings import RouteRule

from .harness import Lab, make_lab


def destinations_of(lab: Lab, calls: int, *, hang_up: bool = True, **call_args: Any) -> list[int]:
    """Place ``calls`` calls one after another; the index of the destination each one reached."""
    chosen = []
    for _ in range(calls):
        call = lab.uac.call(**call_args)
        call.invite()
        lab.net.advance(0.1)
        assert call.statuses[-1] == 200
        [i] = [
            i
            for i, uas in enumerate(lab.uas)
            if any(r.from_tag == call.from_tag for r in uas.invites)
        ]
        chosen.append(i)
        if hang_up:
            call.ack()
            call.bye()
            lab.net.advance(0.1)
    return chosen


def test_round_robin_alternates() -> None:
    lab = make_lab(2, algorithm=Algorithm.ROUND_ROBIN)
    chosen = destinations_of(lab, 6)
    assert chosen in ([0, 1] * 3, [1, 0] * 3)


def test_round_robin_cycles_through_three() -> None:
    lab = make_lab(3, algorithm=Algorithm.ROUND_ROBIN)
    chosen = destinations_of(lab, 6)
    assert chosen[:3] == chosen[3:]
    assert sorted(chosen[:3]) == [0, 1, 2]


def test_weighted_follows_the_weights() -> None:
    lab = make_lab(2, algorithm=Algorithm.WEIGHTED, weights=[3, 1])
    assert Counter(destinations_of(lab, 8)) == {0: 6, 1: 2}


def test_priority_uses_the_first_level_only() -> None:
    lab = make_lab(3, algorithm=Algorithm.PRIORITY, priorities=[1, 0, 1])
    assert set(destinations_of(lab, 5)) == {1}


def test_least_calls_takes_the_least_loaded() -> None:
    lab = make_lab(2, algorithm=Algorithm.LEAST_CALLS)
    # calls stay up: each new one goes where fewer calls are
    chosen = destinations_of(lab, 4, hang_up=False)
    assert Counter(chosen) == {0: 2, 1: 2}
    assert (lab.active(0), lab.active(1)) == (2, 2)


def test_random_reaches_both() -> None:
    lab = make_lab(2, algorithm=Algorithm.RANDOM, seed=7)
    assert set(destinations_of(lab, 20)) == {0, 1}


def test_hash_keeps_a_call_id_on_the_same_destination() -> None:
    lab = make_lab(3, algorithm=Algorithm.HASH, hash_key=HashKey.CALL_ID)
    first = {}
    for n in range(12):
        call_id = b"hash-%d@example.com" % n
        [first[call_id]] = destinations_of(lab, 1, call_id=call_id)
    for call_id, dest in first.items():
        assert destinations_of(lab, 2, call_id=call_id) == [dest, dest]
    assert set(first.values()) == {0, 1, 2}  # the keys spread over the set


# (hash key, the call arguments that carry key number n)
HASH_CASES = [
    (HashKey.CALL_ID, lambda n: {"call_id": b"hash-%d@example.com" % n}),
    (HashKey.RURI_USER, lambda n: {"ruri": b"sip:user%d@127.0.0.1:5060" % n}),
    (HashKey.FROM_URI, lambda n: {"from_uri": b"sip:caller%d@example.com" % n}),
    (HashKey.TO_URI, lambda n: {"to_uri": b"sip:callee%d@example.com" % n}),
]


@pytest.mark.parametrize(("hash_key", "key_args"), HASH_CASES)
def test_hash_keeps_a_key_on_the_same_destination(
    hash_key: HashKey, key_args: Callable[[int], dict[str, Any]]
) -> None:
    lab = make_lab(3, algorithm=Algorithm.HASH, hash_key=hash_key)
    first = {n: destinations_of(lab, 1, **key_args(n))[0] for n in range(12)}
    for n, dest in first.items():
        assert destinations_of(lab, 2, **key_args(n)) == [dest, dest]
    assert set(first.values()) == {0, 1, 2}  # the keys spread over the set


def test_hash_moves_only_the_dead_destinations_keys() -> None:
    """Rendezvous hashing: when one destination fails, only its keys move (docs/design.md 4)."""
    lab = make_lab(3, algorithm=Algorithm.HASH)
    before = {n: destinations_of(lab, 1, call_id=b"k%d" % n)[0] for n in range(12)}
    lab.proxy.dispatcher.health.probe_result(lab.uri(0), False, 1.0)
    lab.proxy.dispatcher.health.probe_result(lab.uri(0), False, 1.0)
    after = {n: destinations_of(lab, 1, call_id=b"k%d" % n)[0] for n in range(12)}
    for n in before:
        if before[n] != 0:
            assert after[n] == before[n]
        else:
            assert after[n] != 0


# (request, set it must reach): sets "pbx" (uas0, the default) and "registrar" (uas1)
ROUTE_CASES = [
    ("INVITE", b"sip:1000@127.0.0.1:5060", 0),
    ("REGISTER", b"sip:127.0.0.1:5060", 1),
    ("MESSAGE", b"sip:1000@127.0.0.1:5060", 0),
]


@pytest.mark.parametrize(("method", "ruri", "expected"), ROUTE_CASES)
def test_route_rules_pick_the_set(method: str, ruri: bytes, expected: int) -> None:
    rule = RouteRule("registrar", methods=frozenset({"REGISTER"}))
    lab = make_lab(2, routes=[rule], sets={"pbx": [0], "registrar": [1]})
    if method == "INVITE":
        assert destinations_of(lab, 2, ruri=ruri) == [expected, expected]
        return
    lab.uac.send(lab.uac.request(method, ruri))
    lab.net.advance(0.1)
    assert [r.status for r in lab.uac.responses(method)] == [200]
    assert [bool(uas.requests(method)) for uas in lab.uas] == [i == expected for i in range(2)]
