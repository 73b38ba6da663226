"""Selection algorithms through ``Dispatcher.choose``: distributions, hashing, caps, fallback."""

from __future__ import annotations

import hashlib
import math
import random
from collections import Counter

import pytest

from siplb.dispatch import (
    Algorithm,
    Destination,
    DestinationSpec,
    Dispatcher,
    HealthSettings,
    NoDestination,
    NoDestinationReason,
    SetSpec,
)
from siplb.dispatch.algorithms import Member, rendezvous_score

PICKS = 10_000


def dest(
    n: int, weight: int = 1, priority: int = 0, max_calls: int | None = None
) -> DestinationSpec:
    return DestinationSpec(
        f"sip:10.0.0.{n}:5060",
        f"10.0.0.{n}",
        5060,
        weight=weight,
        priority=priority,
        max_calls=max_calls,
    )


def uri(n: int) -> str:
    return f"sip:10.0.0.{n}:5060"


def make(
    algorithm: Algorithm, *dests: DestinationSpec, seed: int = 7, name: str = "s"
) -> Dispatcher:
    """A set whose destinations all answered their first probe (they start probing)."""
    disp = Dispatcher(
        [SetSpec(name, dests, algorithm)], HealthSettings(), random.Random(seed), now=0.0
    )
    for d in dests:
        disp.health.probe_result(d.uri, True, 0.0)
        assert disp.health.selectable(d.uri)
    return disp


def pick(disp: Dispatcher, hash_input: bytes = b"", tried: frozenset[str] = frozenset()) -> str:
    chosen = disp.choose("s", hash_input, tried)
    assert isinstance(chosen, Destination), chosen
    return chosen.uri


def kill(disp: Dispatcher, *uris: str) -> None:
    for u in uris:
        disp.health.probe_result(u, False, 1.0)
        disp.health.probe_result(u, False, 1.0)
        assert not disp.health.selectable(u)


def counts(disp: Dispatcher, n: int = PICKS) -> Counter[str]:
    return Counter(pick(disp) for _ in range(n))


# ---- round robin ----------------------------------------------------------------------------


def test_round_robin_order_and_counts() -> None:
    disp = make(Algorithm.ROUND_ROBIN, dest(1), dest(2), dest(3), dest(4))
    assert [pick(disp) for _ in range(6)] == [uri(1), uri(2), uri(3), uri(4), uri(1), uri(2)]
    assert counts(disp, 10_000) == {uri(n): 2500 for n in (1, 2, 3, 4)}


def test_round_robin_skips_ineligible() -> None:
    disp = make(Algorithm.ROUND_ROBIN, dest(1), dest(2), dest(3), dest(4))
    kill(disp, uri(2))
    assert [pick(disp) for _ in range(6)] == [uri(1), uri(3), uri(4), uri(1), uri(3), uri(4)]
    assert pick(disp, tried=frozenset({uri(1)})) == uri(3)


# ---- weighted (smooth weighted round robin) -------------------------------------------------


def test_weighted_is_smooth() -> None:
    # the sequence nginx documents for weights 5, 1, 1
    disp = make(Algorithm.WEIGHTED, dest(1, 5), dest(2, 1), dest(3, 1))
    assert [pick(disp) for _ in range(7)] == [uri(n) for n in (1, 1, 2, 1, 3, 1, 1)]


WEIGHT_CASES = [(1, 1, 1), (5, 3, 2), (7, 1, 2), (100, 1, 10)]


@pytest.mark.parametrize("weights", WEIGHT_CASES)
def test_weighted_shares(weights: tuple[int, ...]) -> None:
    disp = make(Algorithm.WEIGHTED, *(dest(i, w) for i, w in enumerate(weights, 1)))
    got = counts(disp)
    total = sum(weights)
    for i, w in enumerate(weights, 1):
        assert abs(got[uri(i)] / PICKS - w / total) < 0.01, got


def test_weighted_skips_ineligible() -> None:
    disp = make(Algorithm.WEIGHTED, dest(1, 5), dest(2, 3), dest(3, 2))
    kill(disp, uri(1))
    got = counts(disp)
    assert got[uri(1)] == 0
    assert abs(got[uri(2)] / PICKS - 0.6) < 0.01


# ---- random -----------------------------------------------------------------------------------


@pytest.mark.parametrize("weights", WEIGHT_CASES)
def test_random_shares(weights: tuple[int, ...]) -> None:
    disp = make(Algorithm.RANDOM, *(dest(i, w) for i, w in enumerate(weights, 1)), seed=1234)
    got = counts(disp)
    total = sum(weights)
    for i, w in enumerate(weights, 1):
        assert abs(got[uri(i)] / PICKS - w / total) < 0.03, got


def test_random_uses_the_given_rng() -> None:
    dests = (dest(1), dest(2), dest(3))
    a, b, c = (make(Algorithm.RANDOM, *dests, seed=s) for s in (99, 99, 100))
    seq_a = [pick(a) for _ in range(50)]
    assert seq_a == [pick(b) for _ in range(50)]
    assert seq_a != [pick(c) for _ in range(50)]


# ---- hash (weighted rendezvous) -------------------------------------------------------------


def keys(n: int = PICKS) -> list[bytes]:
    return [f"call-{i}@host.example.com".encode() for i in range(n)]


def test_rendezvous_score_formula() -> None:
    # h = top 52 bits of BLAKE2b-64("sip:10.0.0.1:5060" NUL "alice") + half a step, in (0, 1)
    digest = hashlib.blake2b(b"sip:10.0.0.1:5060\0alice", digest_size=8).digest()
    h = ((int.from_bytes(digest, "big") >> 12) + 0.5) / 2**52
    member = Member(0, uri(1), 3)
    assert rendezvous_score(member, b"alice") == pytest.approx(-3 / math.log(h), rel=1e-15)
    assert rendezvous_score(Member(0, uri(1), 1), b"alice") == pytest.approx(0.6868601333147459)


# Fixed expectations: any change of hash function or input layout breaks every deployed mapping.
GOLDEN = [
    (b"", 3),
    (b"a84b4c76e66710@pc33.atlanta.example.com", 2),
    (b"alice", 3),
    (b"sip:bob@biloxi.example.com", 4),
    (b"\x00\xff", 2),
]


@pytest.mark.parametrize(("hash_input", "expected"), GOLDEN)
def test_hash_golden(hash_input: bytes, expected: int) -> None:
    disp = make(Algorithm.HASH, dest(1, 1), dest(2, 2), dest(3, 3), dest(4, 4))
    assert pick(disp, hash_input) == uri(expected)


def test_hash_stable_across_dispatchers() -> None:
    dests = tuple(dest(i) for i in range(1, 6))
    one, two = make(Algorithm.HASH, *dests, seed=1), make(Algorithm.HASH, *dests, seed=2)
    first = [pick(one, k) for k in keys(2000)]
    assert first == [pick(one, k) for k in keys(2000)]
    assert first == [pick(two, k) for k in keys(2000)]
    # the set's order does not matter either
    three = make(Algorithm.HASH, *reversed(dests))
    assert first == [pick(three, k) for k in keys(2000)]


@pytest.mark.parametrize("weights", WEIGHT_CASES)
def test_hash_shares(weights: tuple[int, ...]) -> None:
    disp = make(Algorithm.HASH, *(dest(i, w) for i, w in enumerate(weights, 1)))
    got = Counter(pick(disp, k) for k in keys())
    total = sum(weights)
    for i, w in enumerate(weights, 1):
        assert abs(got[uri(i)] / PICKS - w / total) < 0.03, got


@pytest.mark.parametrize("dead", [1, 3, 5])
def test_hash_minimal_disruption(dead: int) -> None:
    disp = make(Algorithm.HASH, *(dest(i) for i in range(1, 6)))
    before = {k: pick(disp, k) for k in keys()}
    kill(disp, uri(dead))
    after = {k: pick(disp, k) for k in keys()}
    moved = [k for k in before if before[k] != after[k]]
    # only the dead destination's keys move ...
    assert all(before[k] == uri(dead) for k in moved)
    assert len(moved) == sum(1 for v in before.values() if v == uri(dead)) > 1500
    # ... and they spread over every survivor
    spread = Counter(after[k] for k in moved)
    assert set(spread) == {uri(i) for i in range(1, 6)} - {uri(dead)}
    for n in spread.values():
        assert 0.15 < n / len(moved) < 0.35, spread


def test_hash_failover_takes_the_next_highest_score() -> None:
    disp = make(Algorithm.HASH, *(dest(i, i) for i in range(1, 6)))
    for k in keys(200):
        members = [Member(i, uri(i), i) for i in range(1, 6)]
        ranking = [m.uri for m in sorted(members, key=lambda m: -rendezvous_score(m, k))]
        tried: frozenset[str] = frozenset()
        for expected in ranking:
            assert pick(disp, k, tried) == expected
            tried |= {expected}
        assert disp.choose("s", k, tried) == NoDestination("s", NoDestinationReason.ALL_TRIED)


# ---- least calls ----------------------------------------------------------------------------


def test_least_calls_balances_by_weight() -> None:
    disp = make(Algorithm.LEAST_CALLS, dest(1, 1), dest(2, 2), dest(3, 3))
    for i in range(600):
        disp.accounting.setup_started(i, pick(disp), 0.0)
    assert [disp.accounting.active(uri(n)) for n in (1, 2, 3)] == [100, 200, 300]
    # calls on 3 end: the next new calls go to 3 until it is level again
    for i in range(300, 600):
        entry = disp.accounting.get(i)
        assert entry is not None
        if entry.uri == uri(3):
            disp.accounting.ended(i)
    for i in range(1000, 1150):
        chosen = pick(disp)
        assert chosen == uri(3)
        disp.accounting.setup_started(i, chosen, 0.0)


def test_least_calls_follows_open_calls() -> None:
    disp = make(Algorithm.LEAST_CALLS, dest(1), dest(2), dest(3))
    disp.accounting.setup_started("x", uri(1), 0.0)
    disp.accounting.setup_started("y", uri(2), 0.0)
    assert [pick(disp) for _ in range(3)] == [uri(3)] * 3
    disp.accounting.ended("x")
    assert pick(disp) == uri(1)


def test_least_calls_equals_take_turns() -> None:
    disp = make(Algorithm.LEAST_CALLS, dest(1), dest(2), dest(3))
    assert [pick(disp) for _ in range(6)] == [uri(n) for n in (1, 2, 3, 1, 2, 3)]
    assert counts(disp, 9000) == {uri(n): 3000 for n in (1, 2, 3)}


# ---- max_calls ------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", list(Algorithm))
def test_max_calls_honoured(algorithm: Algorithm) -> None:
    disp = make(algorithm, dest(1, 3, max_calls=2), dest(2, 1, max_calls=3))
    for i in range(5):
        chosen = pick(disp, f"k{i}".encode())
        disp.accounting.setup_started(i, chosen, 0.0)
    assert (disp.accounting.active(uri(1)), disp.accounting.active(uri(2))) == (2, 3)
    full = NoDestination("s", NoDestinationReason.ALL_FULL)
    assert disp.choose("s", b"k5", frozenset()) == full
    ended = disp.accounting.ended(0)  # one call ends: room again on its destination
    assert ended is not None
    assert pick(disp, b"k6") == ended.uri


def test_full_is_not_down() -> None:
    disp = make(Algorithm.ROUND_ROBIN, dest(1, max_calls=1), dest(2))
    disp.accounting.setup_started("a", uri(1), 0.0)
    kill(disp, uri(2))
    assert disp.choose("s") == NoDestination("s", NoDestinationReason.ALL_FULL)
    kill(disp, uri(1))
    assert disp.choose("s") == NoDestination("s", NoDestinationReason.ALL_DOWN)


# ---- priority -------------------------------------------------------------------------------


def priority_set() -> Dispatcher:
    return make(
        Algorithm.PRIORITY,
        dest(3, weight=1, priority=1),  # backup, listed first on purpose
        dest(1, weight=3, priority=0),
        dest(2, weight=1, priority=0),
        dest(4, weight=1, priority=2),
    )


def test_priority_weighted_within_level() -> None:
    disp = priority_set()
    assert counts(disp, 8000) == {uri(1): 6000, uri(2): 2000}


PRIORITY_CASES = [
    # down, suspect, tried, allowed picks
    ((), (), (), {1, 2}),
    ((1,), (), (), {2}),
    ((1, 2), (), (), {3}),
    ((1, 2, 3), (), (), {4}),
    ((), (1,), (), {2}),  # up preferred inside the level
    ((2,), (1,), (), {1}),  # a suspect one keeps its level ahead of the backup
    ((), (1, 2), (), {1, 2}),
    ((), (), (1, 2), {3}),
    ((3,), (), (1, 2), {4}),
    ((1,), (), (2,), {3}),
]


@pytest.mark.parametrize(("down", "suspect", "tried", "allowed"), PRIORITY_CASES)
def test_priority_fallback(
    down: tuple[int, ...], suspect: tuple[int, ...], tried: tuple[int, ...], allowed: set[int]
) -> None:
    disp = priority_set()
    kill(disp, *(uri(n) for n in down))
    for n in suspect:
        disp.health.probe_result(uri(n), False, 1.0)
    got = {pick(disp, tried=frozenset(uri(n) for n in tried)) for _ in range(40)}
    assert got == {uri(n) for n in allowed}


def test_priority_all_down() -> None:
    disp = priority_set()
    kill(disp, *(uri(n) for n in (1, 2, 3, 4)))
    assert disp.choose("s") == NoDestination("s", NoDestinationReason.ALL_DOWN)


# ---- up before suspect, for every algorithm ---------------------------------------------------


@pytest.mark.parametrize("algorithm", list(Algorithm))
def test_up_preferred_over_suspect(algorithm: Algorithm) -> None:
    disp = make(algorithm, dest(1), dest(2), dest(3))
    disp.health.probe_result(uri(1), False, 1.0)
    disp.health.probe_result(uri(3), False, 1.0)
    assert {pick(disp, f"{i}".encode()) for i in range(200)} == {uri(2)}
    kill(disp, uri(2))
    assert {pick(disp, f"{i}".encode()) for i in range(200)} == {uri(1), uri(3)}


# ---- destinations still probing ---------------------------------------------------------------


def fresh(algorithm: Algorithm, *dests: DestinationSpec) -> Dispatcher:
    """A set just configured: no probe answered yet."""
    return Dispatcher([SetSpec("s", dests, algorithm)], HealthSettings(), random.Random(7), 0.0)


@pytest.mark.parametrize("algorithm", list(Algorithm))
def test_a_probing_destination_gets_no_call_while_another_is_up(algorithm: Algorithm) -> None:
    disp = fresh(algorithm, dest(1), dest(2), dest(3))
    disp.health.probe_result(uri(2), True, 0.1)
    assert {pick(disp, f"{i}".encode()) for i in range(200)} == {uri(2)}
    # even a suspect one is preferred to one never seen alive
    disp.health.probe_result(uri(2), False, 0.2)
    assert disp.health.state(uri(2)) == "suspect"
    assert {pick(disp, f"{i}".encode()) for i in range(200)} == {uri(2)}


@pytest.mark.parametrize("algorithm", list(Algorithm))
def test_a_set_with_nothing_up_yet_uses_its_probing_destinations(algorithm: Algorithm) -> None:
    disp = fresh(algorithm, dest(1), dest(2))
    assert {pick(disp, f"{i}".encode()) for i in range(200)} == {uri(1), uri(2)}
    # tried ones are left out, as always
    assert pick(disp, b"x", tried=frozenset({uri(1)})) == uri(2)
    assert disp.choose("s", b"x", frozenset({uri(1), uri(2)})) == NoDestination(
        "s", NoDestinationReason.ALL_TRIED
    )


def test_probing_fallback_is_only_for_a_set_with_no_live_destination() -> None:
    # priority: level 0 still probing, the backup level up -> the backup takes the calls
    disp = fresh(Algorithm.PRIORITY, dest(1, priority=0), dest(2, priority=1))
    disp.health.probe_result(uri(2), True, 0.1)
    assert {pick(disp) for _ in range(20)} == {uri(2)}
    disp.health.probe_result(uri(1), True, 0.2)
    assert {pick(disp) for _ in range(20)} == {uri(1)}


def test_a_failover_from_the_live_ones_tries_a_probing_one() -> None:
    """The request failed on every live destination: an unproven one is its last chance."""
    disp = fresh(Algorithm.ROUND_ROBIN, dest(1), dest(2))
    disp.health.probe_result(uri(1), True, 0.1)
    assert pick(disp, tried=frozenset({uri(1)})) == uri(2)
    assert disp.choose("s", b"", frozenset({uri(1), uri(2)})) == NoDestination(
        "s", NoDestinationReason.ALL_TRIED
    )


def test_live_ones_full_fall_back_to_probing_ones_else_stay_full() -> None:
    disp = fresh(Algorithm.ROUND_ROBIN, dest(1, max_calls=1), dest(2))
    disp.health.probe_result(uri(1), True, 0.1)
    disp.accounting.setup_started("c1", uri(1), 0.2)
    assert pick(disp) == uri(2)
    disp.health.probe_result(uri(2), False, 0.3)
    disp.health.probe_result(uri(2), False, 0.4)  # down now
    assert disp.choose("s") == NoDestination("s", NoDestinationReason.ALL_FULL)


# ---- weight 0: no new calls in the set ------------------------------------------------------


@pytest.mark.parametrize("algorithm", list(Algorithm))
def test_weight_0_takes_no_new_call_and_weight_1_puts_it_back(algorithm: Algorithm) -> None:
    disp = make(algorithm, dest(1), dest(2, weight=0), dest(3))
    assert {pick(disp, f"{i}".encode()) for i in range(300)} == {uri(1), uri(3)}
    assert disp.health.state(uri(2)) == "up"  # its health is untouched: calls go on
    spec = disp.sets()[0]
    again = SetSpec("s", (dest(1), dest(2, weight=1), dest(3)), spec.algorithm)
    disp.replace_sets([again], now=1.0)
    assert {pick(disp, f"{i}".encode()) for i in range(300)} == {uri(1), uri(2), uri(3)}


def test_a_set_of_weight_0_only_takes_no_call() -> None:
    disp = make(Algorithm.WEIGHTED, dest(1, weight=0), dest(2, weight=0))
    assert disp.choose("s") == NoDestination("s", NoDestinationReason.ALL_DOWN)


def test_weight_0_in_one_set_leaves_the_other_set_alone() -> None:
    disp = Dispatcher(
        [SetSpec("a", (dest(1, weight=0), dest(2))), SetSpec("b", (dest(1), dest(2)))],
        HealthSettings(probe_first=False),
        random.Random(1),
        now=0.0,
    )
    picked = {name: [disp.choose(name) for _ in range(10)] for name in ("a", "b")}
    assert {d.uri for d in picked["a"] if isinstance(d, Destination)} == {uri(2)}
    assert {d.uri for d in picked["b"] if isinstance(d, Destination)} == {uri(1), uri(2)}
    assert all(isinstance(d, Destination) for d in picked["a"] + picked["b"])
