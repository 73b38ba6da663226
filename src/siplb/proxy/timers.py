"""RFC 3261 timer values and one heap of deadlines for every timer the core runs.

The core never reads a clock: every input carries ``now``; ``TimerHeap.next_deadline()`` tells the
shell when to call back (the ``get_timer()`` of aioquic and h11's design).
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass
from typing import Final, Protocol


@dataclass(frozen=True, slots=True)
class Timers:
    """T1, T2, T4 (RFC 3261 17.1.1.1, table 4) and the values derived from them."""

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0

    @property
    def b(self) -> float:  # INVITE transaction timeout; also F, H, J, L, M
        return 64 * self.t1

    @property
    def d(self) -> float:  # wait for response retransmissions (unreliable)
        return max(32.0, self.b)


class Timed(Protocol):
    deadline: float | None

    def on_timer(self, now: float) -> None: ...


# stale entries allowed past twice the live ones before the heap is rebuilt
COMPACT_SLACK: Final = 1024


class TimerHeap:
    """Deadlines of many objects; an object has one live deadline, older entries are skipped.

    A moved or cancelled deadline leaves its entry behind, and that entry holds on to its object
    (a transaction and its messages) until it comes to the top: a Timer C entry three minutes
    out would keep a call that ended long ago. So when stale entries outnumber live ones, the
    heap is rebuilt from the live ones (amortised: at most once per ``live + COMPACT_SLACK``
    schedules).
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Timed]] = []
        self._seq = itertools.count()
        self._live = 0  # objects with a deadline (each has exactly one valid entry)

    def schedule(self, obj: Timed, when: float | None) -> None:
        if obj.deadline == when:
            return  # its entry is in the heap already
        if obj.deadline is None:
            if when is None:
                return
            self._live += 1
        elif when is None:
            self._live -= 1
        obj.deadline = when
        if when is not None:
            heap = self._heap
            heapq.heappush(heap, (when, next(self._seq), obj))
            if len(heap) > 2 * self._live + COMPACT_SLACK:
                self._compact()

    def _compact(self) -> None:
        heap = self._heap  # in place: ``run_due`` may be iterating over it
        heap[:] = [entry for entry in heap if entry[2].deadline == entry[0]]
        heapq.heapify(heap)
        self._live = len(heap)

    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap and heap[0][2].deadline != heap[0][0]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def run_due(self, now: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= now:
            when, _, obj = heapq.heappop(heap)
            if obj.deadline == when:
                obj.deadline = None
                self._live -= 1
                obj.on_timer(now)

    def __len__(self) -> int:
        return len(self._heap)
