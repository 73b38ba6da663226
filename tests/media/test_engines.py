"""The engine table (``siplb.media.engines``): states, choice and failover order, the calls."""

from __future__ import annotations

from collections import Counter

import pytest

from siplb.media.engines import OFFER_BUCKETS, EngineState, EngineTable, StateChanged
from siplb.media.settings import EngineSpec

A = EngineSpec("127.0.0.1", 2001)
B = EngineSpec("127.0.0.1", 2002)
C = EngineSpec("::1", 2003)


def table(*specs: EngineSpec, retry_after: float = 30.0, max_calls: int = 1000) -> EngineTable:
    return EngineTable(specs or (A, B, C), retry_after=retry_after, max_calls=max_calls, now=0.0)


def test_addresses() -> None:
    assert (A.address, C.address) == ("udp:127.0.0.1:2001", "udp:[::1]:2003")


def test_engines_start_unknown_and_any_reply_makes_them_up() -> None:
    engines = table()
    assert {engines.state(a) for a in engines.addresses} == {EngineState.UNKNOWN}
    change = engines.refused(A.address, "offer", 1.0, "Failed to parse SDP")
    assert change == StateChanged(
        A.address, EngineState.UNKNOWN, EngineState.UP, "offer refused: Failed to parse SDP"
    )
    assert engines.succeeded(A.address, "ping", 2.0) is None  # no change: no event
    assert engines.succeeded(B.address, "ping", 2.0) is not None


def test_a_timeout_takes_an_engine_out_until_its_retry_time() -> None:
    engines = table(retry_after=10.0)
    order = engines.order("call-1", 0.0)
    first = order[0]
    change = engines.timed_out(first, "offer", 5.0)
    assert change is not None
    assert change.new is EngineState.DOWN
    assert engines.order("call-1", 6.0) == order[1:]
    assert engines.order("call-1", 14.9) == order[1:]
    assert engines.order("call-1", 15.0) == [*order[1:], first]  # retry due: last resort
    assert engines.succeeded(first, "ping", 16.0) is not None
    assert engines.order("call-1", 16.0) == order  # back in its place


def test_all_down_leaves_nothing_until_a_retry_is_due() -> None:
    engines = table(A, B, retry_after=10.0)
    engines.timed_out(A.address, "ping", 0.0)
    engines.timed_out(B.address, "ping", 3.0)
    assert engines.order("x", 5.0) == []
    assert engines.order("x", 10.0) == [A.address]
    assert engines.targets("offer", "x", 5.0) == []


def test_the_order_is_rendezvous_over_the_call_id() -> None:
    one, two = table(), table()  # another node or worker ranks alike
    for n in range(50):
        assert one.order(f"c{n}", 0.0) == two.order(f"c{n}", 0.0)
    firsts = Counter(one.order(f"c{n}", 0.0)[0] for n in range(600))
    assert all(150 <= count <= 250 for count in firsts.values()), firsts


def test_a_dead_engine_moves_only_its_own_calls() -> None:
    engines = table()
    before = {n: engines.order(f"c{n}", 0.0)[0] for n in range(300)}
    engines.timed_out(C.address, "ping", 0.0)
    after = {n: engines.order(f"c{n}", 1.0)[0] for n in range(300)}
    moved = {n for n in before if before[n] != after[n]}
    assert moved == {n for n in before if before[n] == C.address}


def test_weights_share_new_calls() -> None:
    engines = table(EngineSpec("127.0.0.1", 1, weight=3), EngineSpec("127.0.0.1", 2, weight=1))
    firsts = Counter(engines.order(f"c{n}", 0.0)[0] for n in range(800))
    assert 540 <= firsts["udp:127.0.0.1:1"] <= 660, firsts


def test_targets() -> None:
    engines = table()
    order = engines.order("c", 0.0)
    assert engines.targets("offer", "c", 0.0) == order
    assert engines.targets("answer", "c", 0.0) == order  # unknown: the engines say who has it
    assert engines.targets("delete", "c", 0.0) == order[:1]
    engines.bind("c", order[2])
    assert engines.targets("offer", "c", 0.0) == [order[2], order[0], order[1]]  # a re-INVITE
    assert engines.targets("answer", "c", 0.0) == [order[2]]
    assert engines.targets("delete", "c", 0.0) == [order[2]]
    assert engines.targets("answer", "c", 0.0, shared=True) == [order[2], order[0], order[1]]
    engines.timed_out(order[2], "ping", 0.0)  # the call's engine is down
    assert engines.targets("offer", "c", 1.0) == order[:2]
    assert engines.targets("answer", "c", 1.0) == [order[2]]  # still its engine: it may be back


def test_calls_are_counted_per_engine_and_forgotten() -> None:
    engines = table()
    engines.bind("c1", A.address)
    engines.bind("c2", A.address)
    engines.bind("c2", B.address)  # moved (a re-INVITE went elsewhere)
    engines.bind("c3", "udp:192.0.2.9:1")  # not an engine of the table: ignored
    calls = {reading.address: reading.calls for reading in engines.readings()}
    assert calls == {A.address: 1, B.address: 1, C.address: 0}
    engines.forget("c1")
    engines.forget("c1")
    assert engines.calls == 1
    assert engines.engine_of("c2") == B.address
    assert engines.engine_of("c1") is None


def test_the_call_table_is_bounded_least_recently_used_first() -> None:
    engines = table(max_calls=3)
    for n in range(3):
        engines.bind(f"c{n}", A.address)
    engines.touch("c0")
    engines.bind("c3", B.address)
    assert [engines.engine_of(f"c{n}") for n in range(4)] == [
        A.address,
        None,
        A.address,
        B.address,
    ]
    assert (engines.calls, engines.forgotten) == (3, 1)
    assert sum(reading.calls for reading in engines.readings()) == 3


def test_readings() -> None:
    engines = table(A)
    for latency in (0.004, 0.001, 0.002, 0.5):
        engines.succeeded(A.address, "offer", 1.0, latency)
    engines.succeeded(A.address, "answer", 1.0, 9.0)  # only offers are timed
    engines.timed_out(A.address, "offer", 2.0)
    engines.timed_out(A.address, "delete", 2.0)
    engines.refused(A.address, "offer", 3.0, "x")
    engines.refused(A.address, "answer", 3.0, "Unknown call-id", fault=False)  # not counted
    (reading,) = engines.readings()
    assert reading.state is EngineState.UP
    assert reading.since == 3.0
    assert reading.offers == 4
    assert reading.offer_p50_ms == pytest.approx(2.0)
    assert reading.offer_max_ms == pytest.approx(500.0)
    assert reading.failures == (("delete", 1), ("offer", 2))
    expected = tuple(sum(1 for x in (0.004, 0.001, 0.002, 0.5) if x <= b) for b in OFFER_BUCKETS)
    assert reading.offer_buckets == expected
    assert reading.offer_seconds == pytest.approx(0.507)
    (empty,) = table(B).readings()
    assert (empty.offer_p50_ms, empty.offer_max_ms, empty.failures) == (None, None, ())


def test_update_keeps_state_and_forgets_calls_of_removed_engines() -> None:
    engines = table(A, B)
    engines.timed_out(A.address, "ping", 0.0)
    engines.bind("c1", A.address)
    engines.bind("c2", B.address)
    heavier = EngineSpec(A.host, A.port, weight=5)
    removed = engines.update((heavier, C), 1.0)
    assert removed == (B.address,)
    assert engines.addresses == (A.address, C.address)
    assert engines.state(A.address) is EngineState.DOWN
    assert engines.spec(A.address).weight == 5
    assert engines.state(C.address) is EngineState.UNKNOWN
    assert (engines.engine_of("c1"), engines.engine_of("c2")) == (A.address, None)


def test_unknown_engines_are_ignored() -> None:
    engines = table(A)
    assert engines.succeeded("udp:127.0.0.1:9", "offer", 0.0, 0.1) is None
    assert engines.refused("udp:127.0.0.1:9", "offer", 0.0, "x") is None
    assert engines.timed_out("udp:127.0.0.1:9", "offer", 0.0) is None


def test_max_calls_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_calls"):
        table(max_calls=0)
