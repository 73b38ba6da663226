"""Calls and capacity leases shared by worker processes: one table in shared memory that every
worker writes its own rows into and reads the others' from.

Layout, all 64-bit integers: ``SLOTS`` keys (a hash of a destination URI, 0 for a free slot),
then one row of ``SLOTS`` live-call counts per worker, then one row of ``SLOTS`` capacity leases
per worker (``siplb.cluster.leases``). A URI's slot is found by open addressing from its hash.
A worker only ever writes its own rows, so counts need no lock; claiming a free slot and
granting a lease take the lock the parent made before it started the workers: a grant reads the
other workers' leases and writes this one's as one step, so two workers can never be granted the
same spare capacity (the shared-memory form of the Redis script ``LEASE`` in
``siplb.io.cluster_store``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from multiprocessing import shared_memory
from typing import Protocol

from siplb.cluster.leases import grant

SLOTS = 1024  # destination URIs the table can tell apart; a set lists a few dozen at most
_WORD = 8


class Lock(Protocol):
    def acquire(self, block: bool = True, timeout: float = -1) -> bool: ...
    def release(self) -> None: ...


class SharedCallCounts:
    """Live calls and capacity leases per destination URI, by worker. ``create`` in the parent, ``attach`` in each
    worker (a forked worker may also keep the parent's object)."""

    def __init__(self, memory: shared_memory.SharedMemory, workers: int, lock: Lock) -> None:
        self.memory = memory
        self.workers = workers
        self._lock = lock
        assert memory.buf is not None  # open until close()
        self._words = memory.buf.cast("q")
        self._slots: dict[str, int] = {}

    @classmethod
    def create(cls, workers: int, lock: Lock) -> SharedCallCounts:
        size = SLOTS * (1 + 2 * workers) * _WORD
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

    def clear(self, worker: int) -> None:
        """Forget a worker's calls and leases (it died; its calls died with it)."""
        for start in (SLOTS * (1 + worker), SLOTS * (1 + self.workers + worker)):
            for index in range(start, start + SLOTS):
                self._words[index] = 0

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
