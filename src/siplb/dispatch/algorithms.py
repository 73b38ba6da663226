"""Selection algorithms: each picks one member from a non-empty pool of eligible ones.

The pool is built by ``siplb.dispatch.dset`` (health, ``tried``, ``max_calls`` and priority levels
already applied) and keeps the set's configured order. Every pick is O(len(pool)).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from siplb.dispatch.spec import Algorithm

if TYPE_CHECKING:
    import random

_UNIT = 2.0**-52


class Member:
    """A destination as the algorithms see it; ``current`` is smooth weighted round robin state."""

    __slots__ = ("current", "hasher", "index", "uri", "weight")

    def __init__(self, index: int, uri: str, weight: int) -> None:
        if weight < 1:
            raise ValueError(f"{uri}: weight must be at least 1, not {weight}")
        self.index = index
        self.uri = uri
        self.weight = weight
        # BLAKE2b state after the URI and a NUL (a URI holds none): copied for each hash input
        self.hasher = hashlib.blake2b(uri.encode() + b"\0", digest_size=8)
        self.current = 0


class Selector(Protocol):
    def pick(self, pool: Sequence[Member], hash_input: bytes) -> Member: ...


class RoundRobin:
    """The set's destinations in order, skipping the ineligible ones."""

    def __init__(self) -> None:
        self._next = 0

    def pick(self, pool: Sequence[Member], hash_input: bytes) -> Member:
        chosen = pool[0]
        for member in pool:
            if member.index >= self._next:
                chosen = member
                break
        self._next = chosen.index + 1
        return chosen


class SmoothWeighted:
    """nginx's smooth weighted round robin: exact shares, no bursts (5,1,1 -> a a b a c a a)."""

    def pick(self, pool: Sequence[Member], hash_input: bytes) -> Member:
        total = 0
        best = pool[0]
        for member in pool:
            member.current += member.weight
            total += member.weight
            if member.current > best.current:
                best = member
        best.current -= total
        return best


def rendezvous_score(member: Member, hash_input: bytes) -> float:
    """Weighted highest-random-weight score, ``-weight / ln(h)`` with ``h`` uniform in (0, 1).

    ``h`` comes from the top 52 bits of BLAKE2b-64 over ``uri + NUL + hash_input`` (plus half a
    step, so never 0 or 1): the same in every process and Python run, unlike ``hash()``. The
    winner is chosen with probability ``weight / sum(weights)``.
    """
    hasher = member.hasher.copy()
    hasher.update(hash_input)
    h = ((int.from_bytes(hasher.digest(), "big") >> 12) + 0.5) * _UNIT
    return -member.weight / math.log(h)


class RendezvousHash:
    """Weighted rendezvous hashing: a dead destination's keys spread, the others' stay put."""

    def pick(self, pool: Sequence[Member], hash_input: bytes) -> Member:
        best = pool[0]
        best_score = -1.0
        for member in pool:
            score = rendezvous_score(member, hash_input)
            if score > best_score:
                best, best_score = member, score
        return best


class LeastCalls:
    """Fewest active calls per unit of weight; equals take turns in set order."""

    def __init__(self, active: Callable[[str], int]) -> None:
        self._active = active
        self._next = 0

    def pick(self, pool: Sequence[Member], hash_input: bytes) -> Member:
        n = len(pool)
        start = 0
        for position, member in enumerate(pool):
            if member.index >= self._next:
                start = position
                break
        best = pool[start]
        best_active = self._active(best.uri)
        for step in range(1, n):
            member = pool[(start + step) % n]
            active = self._active(member.uri)
            # active / weight < best_active / best.weight, without division
            if active * best.weight < best_active * member.weight:
                best, best_active = member, active
        self._next = best.index + 1
        return best


class WeightedRandom:
    """Weighted random with the dispatcher's ``random.Random``."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def pick(self, pool: Sequence[Member], hash_input: bytes) -> Member:
        total = 0
        for member in pool:
            total += member.weight
        point = self._rng.randrange(total)
        for member in pool:
            point -= member.weight
            if point < 0:
                return member
        raise AssertionError("unreachable: point < total")  # pragma: no cover


def make_selector(
    algorithm: Algorithm, *, rng: random.Random, active: Callable[[str], int]
) -> Selector:
    """The selector for one set. Priority is weighted inside each level (see ``dset``)."""
    match algorithm:
        case Algorithm.ROUND_ROBIN:
            return RoundRobin()
        case Algorithm.WEIGHTED | Algorithm.PRIORITY:
            return SmoothWeighted()
        case Algorithm.HASH:
            return RendezvousHash()
        case Algorithm.LEAST_CALLS:
            return LeastCalls(active)
        case Algorithm.RANDOM:
            return WeightedRandom(rng)
