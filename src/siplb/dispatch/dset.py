"""A destination set: its members, its priority levels and which of them may take a new call.

Eligible for a new call: state ``up`` or ``suspect``, not already tried by this request, and
under ``max_calls``. Inside a level, ``up`` destinations are preferred and ``suspect`` ones are
used only when no ``up`` one is eligible. Only the priority algorithm has more than one level:
the next level is used only when the whole level before it is ineligible.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from itertools import groupby
from typing import TYPE_CHECKING

from siplb.dispatch.algorithms import Member, Selector, make_selector
from siplb.dispatch.health import HealthTable, State
from siplb.dispatch.spec import Algorithm, DestinationSpec, SetSpec

if TYPE_CHECKING:
    import random


@dataclass(frozen=True, slots=True)
class Destination:
    """A destination of one set, as handed to the proxy."""

    spec: DestinationSpec
    set_name: str

    @property
    def uri(self) -> str:
        return self.spec.uri


class NoDestinationReason(StrEnum):
    UNKNOWN_SET = "unknown-set"
    ALL_DOWN = "all-down"  # nothing up or suspect
    ALL_FULL = "all-full"  # some are up but at max_calls: worth a Retry-After
    ALL_TRIED = "all-tried"  # every selectable destination already failed this request


@dataclass(frozen=True, slots=True)
class NoDestination:
    """No destination may take the call; the proxy answers 503."""

    set_name: str
    reason: NoDestinationReason


class DestinationSet:
    """The runtime side of a ``SetSpec``: members, levels and the selector's state."""

    def __init__(
        self,
        spec: SetSpec,
        *,
        rng: random.Random,
        active: Callable[[str], int],
        full: Callable[[str, int], bool] | None = None,
    ) -> None:
        uris = [d.uri for d in spec.destinations]
        if len(set(uris)) != len(uris):
            raise ValueError(f"set {spec.name!r}: a destination URI appears twice")
        self.spec = spec
        self.destinations = tuple(Destination(d, spec.name) for d in spec.destinations)
        members = [Member(i, d.uri, d.weight) for i, d in enumerate(spec.destinations)]
        self._levels = _levels(spec, members)
        self._max_calls = [d.max_calls for d in spec.destinations]
        self._selector: Selector = make_selector(spec.algorithm, rng=rng, active=active)
        self._full = full or (lambda uri, max_calls: active(uri) >= max_calls)
        self._no = {r: NoDestination(spec.name, r) for r in NoDestinationReason}

    def choose(
        self, health: HealthTable, hash_input: bytes, tried: frozenset[str]
    ) -> Destination | NoDestination:
        full = tried_seen = False
        for level in self._levels:
            up: list[Member] = []
            suspect: list[Member] = []
            for member in level:
                state = health.state(member.uri)
                if state is not State.UP and state is not State.SUSPECT:
                    continue
                if member.uri in tried:
                    tried_seen = True
                    continue
                max_calls = self._max_calls[member.index]
                if max_calls is not None and self._full(member.uri, max_calls):
                    full = True
                    continue
                (up if state is State.UP else suspect).append(member)
            pool = up or suspect
            if pool:
                return self.destinations[self._selector.pick(pool, hash_input).index]
        if full:
            return self._no[NoDestinationReason.ALL_FULL]
        if tried_seen:
            return self._no[NoDestinationReason.ALL_TRIED]
        return self._no[NoDestinationReason.ALL_DOWN]


def _levels(spec: SetSpec, members: list[Member]) -> tuple[tuple[Member, ...], ...]:
    """Priority levels, lowest value first, each in configured order; one level otherwise."""
    if spec.algorithm is not Algorithm.PRIORITY:
        return (tuple(members),)
    ordered = sorted(members, key=lambda m: (spec.destinations[m.index].priority, m.index))
    grouped = groupby(ordered, key=lambda m: spec.destinations[m.index].priority)
    return tuple(tuple(level) for _, level in grouped)
