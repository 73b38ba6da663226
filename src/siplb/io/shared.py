"""Calls, capacity leases and receive backlogs shared by worker processes: one table in shared
memory that every worker writes its own rows into and reads the others' from.

Layout, all 64-bit integers: ``SLOTS`` keys (a hash of a destination URI, 0 for a free slot),
then one row of ``SLOTS`` live-call counts per worker, then one row of ``SLOTS`` capacity leases
per worker (``siplb.cluster.leases``). A URI's slot is found by open addressing from its hash.
A worker only ever writes its own rows, so counts need no lock; claiming a free slot and
granting a lease take the lock the parent made before it started the workers: a grant reads the
other workers' leases and writes this one's as one step, so two workers can never be granted the
same spare capacity (the shared-memory form of the Redis script ``LEASE`` in
``siplb.io.cluster_store``).

After the leases, one word per worker: its receive backlog (``report_backlog``), so that each
worker's overload guard acts on the fullest queue of the node (``node_backlog``). A worker that
owns a call is behind for every worker: half of the answers to the others' calls land on its
socket, and what they hand it waits in its queue. The word holds the fill in millionths in its
low ``_FILL_BITS`` bits and the monotonic time of the report in milliseconds above them, so a
report is written and read whole; 0 is no report (none yet, or cleared).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from multiprocessing import shared_memory
from typing import Protocol

from siplb.cluster.leases import grant

SLOTS = 1024  # destination URIs the table can tell apart; a set lists a few dozen at most
_WORD = 8
# A worker reports every BACKLOG_INTERVAL (0.05 s, ``siplb.io.driver``). Silent for T1 (ten
# reports missed), its event loop has stopped turning: nothing sent to it is read, so it counts
# as full ...
BACKLOG_LATE = 0.5
# ... and silent for this long it is forgotten (hung or gone; the parent clears a dead one at
# once), so one stuck worker cannot refuse the node's calls for longer.
BACKLOG_FORGET = 2.0
_FILL_BITS = 20
_FILL_MASK = (1 << _FILL_BITS) - 1
_FILL_SCALE = 1_000_000  # <= _FILL_MASK


class Lock(Protocol):
    def acquire(self, block: bool = True, timeout: float = -1) -> bool: ...
    def release(self) -> None: ...


class SharedCallCounts:
    """Live calls and capacity leases per destination URI, by worker, and each worker's receive
    backlog. ``create`` in the parent; each forked worker keeps the parent's object."""

    def __init__(self, memory: shared_memory.SharedMemory, workers: int, lock: Lock) -> None:
        self.memory = memory
        self.workers = workers
        self._lock = lock
        assert memory.buf is not None  # open until close()
        self._words = memory.buf.cast("q")
        self._slots: dict[str, int] = {}

    @classmethod
    def create(cls, workers: int, lock: Lock) -> SharedCallCounts:
        size = (SLOTS * (1 + 2 * workers) + workers) * _WORD
        memory = shared_memory.SharedMemory(create=True, size=size)
        table = cls(memory, workers, lock)
        table._words[:] = memoryview(bytes(size)).cast("q")
        return table

    def slot(self, uri: str) -> int:
        """The slot of ``uri``, claimed on first use; raises ``OverflowError`` when full."""
        slot = self._slots.get(uri)
        if slot is not None:
            return slot
        key = _key(uri)
        words = self._words
        start = key % SLOTS
        self._lock.acquire()
        try:
            for step in range(SLOTS):
                slot = (start + step) % SLOTS
                if words[slot] == key:
                    break
                if words[slot] == 0:
                    words[slot] = key
                    break
            else:
                raise OverflowError(f"more than {SLOTS} destinations in the shared call table")
        finally:
            self._lock.release()
        self._slots[uri] = slot
        return slot

    def publish(self, worker: int, uri: str, calls: int) -> None:
        """Worker ``worker`` now has ``calls`` live calls on ``uri``."""
        self._words[SLOTS * (1 + worker) + self.slot(uri)] = calls

    def total(self, uri: str) -> int:
        """Live calls on ``uri`` over every worker."""
        slot = self.slot(uri)
        words = self._words
        return sum(words[SLOTS * (1 + w) + slot] for w in range(self.workers))

    def others(self, worker: int, uris: Iterable[str]) -> dict[str, int]:
        """Live calls the OTHER workers hold on each of ``uris`` (those with any)."""
        words = self._words
        out = {}
        for uri in uris:
            slot = self.slot(uri)
            n = sum(words[SLOTS * (1 + w) + slot] for w in range(self.workers) if w != worker)
            if n > 0:
                out[uri] = n
        return out

    def grant(self, worker: int, uri: str, cap: int, want: int) -> int:
        """Worker ``worker``'s new lease on ``uri``: ``want`` within what the other workers'
        leases leave of ``cap``, decided and stored under the lock."""
        slot = self.slot(uri)
        words = self._words
        base = SLOTS * (1 + self.workers)
        self._lock.acquire()
        try:
            others = sum(words[base + SLOTS * w + slot] for w in range(self.workers) if w != worker)
            granted = grant(cap, want, others)
            words[base + SLOTS * worker + slot] = granted
        finally:
            self._lock.release()
        return granted

    def lease(self, worker: int, uri: str) -> int:
        return self._words[SLOTS * (1 + self.workers + worker) + self.slot(uri)]

    def by_worker(self, uri: str) -> list[int]:
        slot = self.slot(uri)
        return [self._words[SLOTS * (1 + w) + slot] for w in range(self.workers)]

    def report_backlog(self, worker: int, fill: float, now: float) -> None:
        """Worker ``worker``'s receive queues are ``fill`` full (0-1) at ``now`` (monotonic)."""
        self._words[self._backlog + worker] = pack_backlog(fill, now)

    def node_backlog(self, worker: int, fill: float, now: float) -> float:
        """What worker ``worker``'s guard acts on: the fullest of its own ``fill`` and every
        other worker's last report, as ``peer_backlog`` reads it at ``now``."""
        words, base = self._words, self._backlog
        peers = [peer_backlog(words[base + w], now) for w in range(self.workers) if w != worker]
        return max([fill, *peers])

    def backlogs(self, now: float) -> list[float]:
        """Every worker's report as the others read it at ``now``."""
        base = self._backlog
        return [peer_backlog(self._words[base + w], now) for w in range(self.workers)]

    def clear_backlog(self, worker: int) -> None:
        """Withdraw worker ``worker``'s report (it stops: its silence means nothing)."""
        self._words[self._backlog + worker] = 0

    @property
    def _backlog(self) -> int:
        return SLOTS * (1 + 2 * self.workers)

    def clear(self, worker: int) -> None:
        """Forget a worker's calls, leases and backlog (it died; its calls died with it)."""
        for start in (SLOTS * (1 + worker), SLOTS * (1 + self.workers + worker)):
            for index in range(start, start + SLOTS):
                self._words[index] = 0
        self.clear_backlog(worker)

    def close(self) -> None:
        self._words.release()
        self.memory.close()

    def unlink(self) -> None:
        """Free the memory (the parent, when every worker has stopped)."""
        self.memory.unlink()


def _key(uri: str) -> int:
    """A non-zero 63-bit key for ``uri``, the same in every process."""
    digest = hashlib.blake2b(uri.encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") >> 1) or 1


def pack_backlog(fill: float, now: float) -> int:
    """One report as one word: ``fill`` (clamped to 0-1) and ``now`` in milliseconds."""
    units = round(min(1.0, max(0.0, fill)) * _FILL_SCALE)
    return (max(1, round(now * 1000)) << _FILL_BITS) | units


def peer_backlog(word: int, now: float) -> float:
    """Another worker's report read at ``now``: its fill while fresh, 1.0 (full) once it is
    ``BACKLOG_LATE``, 0.0 once it is ``BACKLOG_FORGET`` or when there is none."""
    if word <= 0:
        return 0.0
    age = now - (word >> _FILL_BITS) / 1000
    if age >= BACKLOG_FORGET:
        return 0.0
    if age >= BACKLOG_LATE:
        return 1.0
    return (word & _FILL_MASK) / _FILL_SCALE
