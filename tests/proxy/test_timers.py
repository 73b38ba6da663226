"""RFC 3261 timer values and the heap of deadlines (siplb.proxy.timers)."""

from __future__ import annotations

import pytest

from siplb.proxy.timers import TimerHeap, Timers

# (T1, T2, T4, Timer B = 64*T1, Timer D = max(32 s, Timer B))
TIMER_CASES = [
    (0.5, 4.0, 5.0, 32.0, 32.0),
    (0.1, 4.0, 5.0, 6.4, 32.0),
    (1.0, 8.0, 10.0, 64.0, 64.0),
]


@pytest.mark.parametrize(("t1", "t2", "t4", "b", "d"), TIMER_CASES)
def test_derived_timers(t1: float, t2: float, t4: float, b: float, d: float) -> None:
    timers = Timers(t1, t2, t4)
    assert timers.b == pytest.approx(b)
    assert timers.d == pytest.approx(d)


class Clock:
    """A timed object that records when it fired and may re-arm itself."""

    def __init__(self, heap: TimerHeap, again: float | None = None) -> None:
        self.heap = heap
        self.again = again
        self.deadline: float | None = None
        self.fired: list[float] = []

    def on_timer(self, now: float) -> None:
        self.fired.append(now)
        if self.again is not None:
            self.heap.schedule(self, now + self.again)


def test_next_deadline_and_run_due_in_order() -> None:
    heap = TimerHeap()
    a, b = Clock(heap), Clock(heap)
    heap.schedule(a, 2.0)
    heap.schedule(b, 1.0)
    assert heap.next_deadline() == 1.0
    heap.run_due(1.5)
    assert (a.fired, b.fired) == ([], [1.5])
    assert heap.next_deadline() == 2.0
    heap.run_due(2.0)
    assert a.fired == [2.0]
    assert heap.next_deadline() is None


def test_rescheduling_replaces_the_old_deadline() -> None:
    heap = TimerHeap()
    a = Clock(heap)
    heap.schedule(a, 1.0)
    heap.schedule(a, 3.0)
    assert heap.next_deadline() == 3.0  # the stale 1.0 entry is skipped
    heap.run_due(2.0)
    assert a.fired == []
    heap.schedule(a, None)
    assert heap.next_deadline() is None
    heap.run_due(10.0)
    assert a.fired == []


def test_an_object_rearming_in_the_future_runs_once_per_call() -> None:
    heap = TimerHeap()
    a = Clock(heap, again=1.0)
    heap.schedule(a, 1.0)
    heap.run_due(1.0)
    heap.run_due(1.0)
    assert a.fired == [1.0]
    assert heap.next_deadline() == 2.0
    assert a.deadline == 2.0
