"""A destination set: its members, its priority levels and which of them may take a new call.

Eligible for a new call: state ``up`` or ``suspect``, not already tried by this request, and
under ``max_calls``. Inside a level, ``up`` destinations are preferred and ``suspect`` ones are
used only when no ``up`` one is eligible. Only the priority algorithm has more than one level:
the next level is used only when the whole level before it is ineligible.

A destination of weight 0 takes no new call in this set (the LVS way to quiesce one: an
operator's ``siplb dest weight SET URI 0``); its calls in progress go on, as in-dialog requests
never ask the set; any weight above 0 makes it eligible again.

A destination still ``probing`` (new, no probe answered yet) is used only when no ``up`` or
``suspect`` destination of the whole set can take the call (there is none, they are full, or
this request already failed on each of them): at start every destination is probing for the
few milliseconds its first probe takes, and a call then goes to one of them rather than getting
a 503; a set whose live destinations can take the call never risks a new, unproven one.
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
        for d in spec.destinations:
            if d.weight < 0:
                raise ValueError(f"{d.uri}: weight must be at least 0, not {d.weight}")
        self.spec = spec
        self.destinations = tuple(Destination(d, spec.name) for d in spec.destinations)
        members = [
            Member(i, d.uri, d.weight) for i, d in enumerate(spec.destinations) if d.weight > 0
        ]
        self._levels = _levels(spec, members)
        self._max_calls = [d.max_calls for d in spec.destinations]
        self._selector: Selector = make_selector(spec.algorithm, rng=rng, active=active)
        self._full = full or (lambda uri, max_calls: active(uri) >= max_calls)
        self._no = {r: NoDestination(spec.name, r) for r in NoDestinationReason}

    def choose(
        self, health: HealthTable, hash_input: bytes, tried: frozenset[str]
    ) -> Destination | NoDestination:
        found = self._choose(health, hash_input, tried, LIVE)
        if isinstance(found, Destination):
            return found
        unproven = self._choose(health, hash_input, tried, UNPROVEN)
        if isinstance(unproven, Destination) or found.reason is NoDestinationReason.ALL_DOWN:
            return unproven  # (none live at all: why the probing ones could not take it)
        return found

    def _choose(
        self,
        health: HealthTable,
        hash_input: bytes,
        tried: frozenset[str],
        states: tuple[State, State | None],
    ) -> Destination | NoDestination:
        """The pick among destinations in ``states`` (preferred, fallback), level by level."""
        preferred, fallback = states
        full = tried_seen = False
        for level in self._levels:
            first: list[Member] = []
            second: list[Member] = []
            for member in level:
                state = health.state(member.uri)
                if state is not preferred and state is not fallback:
                    continue
                if member.uri in tried:
                    tried_seen = True
                    continue
                max_calls = self._max_calls[member.index]
                if max_calls is not None and self._full(member.uri, max_calls):
                    full = True
                    continue
                (first if state is preferred else second).append(member)
            pool = first or second
            if pool:
                return self.destinations[self._selector.pick(pool, hash_input).index]
        if full:
            return self._no[NoDestinationReason.ALL_FULL]
        if tried_seen:
            return self._no[NoDestinationReason.ALL_TRIED]
        return self._no[NoDestinationReason.ALL_DOWN]


# (preferred, used when no preferred one is eligible in a level)
LIVE: tuple[State, State | None] = (State.UP, State.SUSPECT)
UNPROVEN: tuple[State, State | None] = (State.PROBING, None)


def _levels(spec: SetSpec, members: list[Member]) -> tuple[tuple[Member, ...], ...]:
    """Priority levels, lowest value first, each in configured order; one level otherwise."""
    if spec.algorithm is not Algorithm.PRIORITY:
        return (tuple(members),)
    ordered = sorted(members, key=lambda m: (spec.destinations[m.index].priority, m.index))
    grouped = groupby(ordered, key=lambda m: spec.destinations[m.index].priority)
    return tuple(tuple(level) for _, level in grouped)
