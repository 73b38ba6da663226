"""The call counts worker processes share (``siplb.io.shared``), and the pure hooks that feed
them (``CallAccounting.on_count``, ``Dispatcher.count_calls_with``)."""

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
from siplb.dispatch.accounting import CallAccounting
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


def test_accounting_reports_every_change_of_a_count() -> None:
    seen: list[tuple[str, int]] = []
    table = CallAccounting()
    table.on_count = lambda uri, n: seen.append((uri, n))
    table.setup_started("c1", A, 0.0)
    table.setup_started("c2", A, 0.0)
    table.moved("c2", B, 1.0)
    table.ended("c1")
    table.expire(500.0, max_age=10.0, setup_timeout=10.0)
    assert seen == [(A, 1), (A, 2), (A, 1), (B, 1), (A, 0), (B, 0)]


def test_least_calls_and_max_calls_count_with_the_injected_total(
    counts: SharedCallCounts,
) -> None:
    """Worker 1 holds 2 calls on A: worker 0's least-calls picks B, and A's cap of 2 is full."""
    spec = SetSpec(
        "pbx",
        (DestinationSpec(A, "10.0.0.1", 5060, max_calls=2), DestinationSpec(B, "10.0.0.2", 5060)),
        Algorithm.LEAST_CALLS,
    )
    dispatcher = Dispatcher([spec], HealthSettings(), random.Random(1), 0.0)
    dispatcher.count_calls_with(counts.total)
    dispatcher.accounting.on_count = lambda uri, n: counts.publish(0, uri, n)
    counts.publish(1, A, 2)
    choice = dispatcher.choose("pbx")
    assert not isinstance(choice, NoDestination)
    assert choice.uri == B
    assert dispatcher.snapshot(A).active_calls == 2
    only_a = dispatcher.choose("pbx", tried=frozenset({B}))
    assert isinstance(only_a, NoDestination)
    assert only_a.reason is NoDestinationReason.ALL_FULL
    dispatcher.accounting.setup_started("x", B, 0.0)
    assert counts.by_worker(B) == [1, 0, 0]
