"""The calls and capacity leases worker processes share (``siplb.io.shared``), and what a
worker tells its dispatch core from them (``told_calls``, ``told_limits``)."""

from __future__ import annotations

import multiprocessing
import random
import threading
from collections.abc import Iterator

import pytest

from siplb.dispatch import (
    Algorithm,
    DestinationSpec,
    Dispatcher,
    HealthSettings,
    NoDestination,
    SetSpec,
)
from siplb.dispatch.dset import NoDestinationReason
from siplb.io.shared import SLOTS, SharedCallCounts

A, B = "sip:10.0.0.1:5060", "sip:10.0.0.2:5060"


@pytest.fixture
def counts() -> Iterator[SharedCallCounts]:
    table = SharedCallCounts.create(3, threading.Lock())
    yield table
    table.close()
    table.unlink()


# (what each worker publishes as (worker, uri, calls), the totals expected per URI)
CASES = [
    ([], {A: 0, B: 0}),
    ([(0, A, 2)], {A: 2, B: 0}),
    ([(0, A, 2), (1, A, 3), (2, B, 1)], {A: 5, B: 1}),
    ([(0, A, 2), (0, A, 1)], {A: 1, B: 0}),  # a worker's newer count replaces its older one
    ([(1, A, 4), (1, A, 0), (2, A, 1)], {A: 1, B: 0}),
]


@pytest.mark.parametrize(("published", "totals"), CASES)
def test_total_is_the_sum_of_every_worker(
    counts: SharedCallCounts, published: list[tuple[int, str, int]], totals: dict[str, int]
) -> None:
    for worker, uri, calls in published:
        counts.publish(worker, uri, calls)
    assert {uri: counts.total(uri) for uri in totals} == totals


def test_clear_forgets_one_worker(counts: SharedCallCounts) -> None:
    counts.publish(0, A, 2)
    counts.publish(1, A, 3)
    counts.clear(1)
    assert counts.by_worker(A) == [2, 0, 0]


def test_another_process_sees_the_same_slots_and_counts(counts: SharedCallCounts) -> None:
    """A forked worker publishes; the parent (another worker) reads its count."""
    counts.publish(0, A, 1)
    context = multiprocessing.get_context("fork")
    child = context.Process(target=_publish_in_child, args=(counts,))
    child.start()
    child.join(10)
    assert child.exitcode == 0
    assert counts.by_worker(A) == [1, 0, 0]
    assert counts.by_worker(B) == [0, 7, 0]
    assert counts.total(B) == 7


def _publish_in_child(counts: SharedCallCounts) -> None:
    counts.publish(1, B, 7)


def test_many_uris_get_distinct_slots(counts: SharedCallCounts) -> None:
    uris = [f"sip:10.0.{i // 250}.{i % 250}:5060" for i in range(SLOTS)]
    for i, uri in enumerate(uris):
        counts.publish(0, uri, i)
    assert [counts.total(uri) for uri in uris] == list(range(SLOTS))
    with pytest.raises(OverflowError):
        counts.publish(0, "sip:one-too-many", 1)


def test_others_are_every_other_worker(counts: SharedCallCounts) -> None:
    counts.publish(0, A, 2)
    counts.publish(1, A, 3)
    counts.publish(2, B, 1)
    assert counts.others(0, [A, B]) == {A: 3, B: 1}
    assert counts.others(2, [A, B]) == {A: 5}


# (grants asked in order as (worker, cap, want), the leases granted)
GRANTS = [
    ([(0, 10, 4), (1, 10, 4), (2, 10, 4)], [4, 4, 2]),  # the cap is never leased twice
    ([(0, 10, 8), (1, 10, 8), (0, 10, 2), (1, 10, 8)], [8, 2, 2, 8]),  # a give-back frees it
    ([(0, 2, 5), (1, 2, 1)], [2, 0]),
    ([(0, 10, 6), (0, 10, 6)], [6, 6]),  # its own lease is not counted against it
]


@pytest.mark.parametrize(("asks", "granted"), GRANTS)
def test_grants_never_lease_more_than_the_cap(
    counts: SharedCallCounts, asks: list[tuple[int, int, int]], granted: list[int]
) -> None:
    assert [counts.grant(worker, A, cap, want) for worker, cap, want in asks] == granted
    assert sum(counts.lease(w, A) for w in range(3)) <= asks[-1][1]


def test_clear_frees_a_dead_workers_lease(counts: SharedCallCounts) -> None:
    assert counts.grant(0, A, 10, 10) == 10
    assert counts.grant(1, A, 10, 5) == 0
    counts.clear(0)
    assert counts.grant(1, A, 10, 5) == 5


def test_least_calls_and_max_calls_count_what_the_core_is_told(
    counts: SharedCallCounts,
) -> None:
    """Worker 1 holds 2 calls on A: worker 0's least-calls picks B, and with no lease left on
    A, worker 0 may not add one there."""
    spec = SetSpec(
        "pbx",
        (DestinationSpec(A, "10.0.0.1", 5060, max_calls=2), DestinationSpec(B, "10.0.0.2", 5060)),
        Algorithm.LEAST_CALLS,
    )
    dispatcher = Dispatcher([spec], HealthSettings(), random.Random(1), 0.0)
    counts.publish(1, A, 2)
    assert counts.grant(1, A, 2, 2) == 2
    dispatcher.told_calls(counts.others(0, [A, B]))
    dispatcher.told_limits({A: counts.grant(0, A, 2, 1)})
    choice = dispatcher.choose("pbx")
    assert not isinstance(choice, NoDestination)
    assert choice.uri == B
    assert dispatcher.snapshot(A).active_calls == 2
    only_a = dispatcher.choose("pbx", tried=frozenset({B}))
    assert isinstance(only_a, NoDestination)
    assert only_a.reason is NoDestinationReason.ALL_FULL
    dispatcher.accounting.setup_started("x", B, 0.0)
    assert dispatcher.local_calls() == {B: 1}
