"""The dispatcher: destination sets, their health and their calls, behind one object.

The proxy asks ``choose(set_name, hash_input, tried)`` for each new call (and again, with the
failed URIs in ``tried``, on failover); the shell feeds health inputs to ``health`` and call
events to ``accounting``. A destination's health and calls are keyed by its URI and shared by
every set that lists it.

Reload (``replace_sets``) keeps the health and calls of URIs that stay (they take their set's
health settings, ``SetSpec.health``, else ``[health]``'s); new URIs start in the initial state
(``probing`` unless ``probe_first`` is off, or the state given); a removed URI with live calls is set draining and kept until its last call ends
(``sweep``), one without calls is dropped at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from siplb.dispatch.accounting import CallAccounting
from siplb.dispatch.dset import (
    Destination,
    DestinationSet,
    NoDestination,
    NoDestinationReason,
)
from siplb.dispatch.health import (
    AdminState,
    HealthSnapshot,
    HealthTable,
    State,
    StateChanged,
)
from siplb.dispatch.spec import DestinationSpec, HealthSettings, SetSpec

if TYPE_CHECKING:
    import random

REMOVED_CAUSE = "removed from config"
RESTORED_CAUSE = "back in config"


class Dispatcher:
    def __init__(
        self,
        sets: Sequence[SetSpec],
        health: HealthSettings,
        rng: random.Random,
        now: float,
        *,
        initial: State | None = None,
    ) -> None:
        self._rng = rng
        self._initial = initial
        self._health = HealthTable(health)
        self._accounting = CallAccounting()
        # what least-calls, max_calls and snapshots count: this table's calls plus the calls
        # the other members (workers, nodes) hold (``told_calls``); a URI with a told limit
        # (``told_limits``) is full at that many calls HERE
        self._remote: dict[str, int] = {}
        self._limits: dict[str, int] = {}
        self._sets: dict[str, DestinationSet] = {}
        # URIs removed from config that still carry calls, with their admin state before removal
        self._retiring: dict[str, AdminState | None] = {}
        self.replace_sets(sets, now)

    @property
    def health(self) -> HealthTable:
        return self._health

    @property
    def accounting(self) -> CallAccounting:
        return self._accounting

    def told_calls(self, remote: Mapping[str, int]) -> None:
        """The calls the OTHER cluster members hold on each URI (a whole snapshot): least-calls
        orders by these plus ours, snapshots show the sum."""
        self._remote = {uri: n for uri, n in remote.items() if n > 0}

    def told_limits(self, limits: Mapping[str, int]) -> None:
        """How many calls THIS member may hold on each capped URI (its capacity lease, see
        ``siplb.cluster.leases``); a URI absent here is full at its ``max_calls`` in total."""
        self._limits = dict(limits)

    def _active(self, uri: str) -> int:
        return self._accounting.active(uri) + self._remote.get(uri, 0)

    def _full(self, uri: str, max_calls: int) -> bool:
        limit = self._limits.get(uri)
        if limit is not None:
            return self._accounting.active(uri) >= limit
        return self._active(uri) >= max_calls

    def local_calls(self) -> dict[str, int]:
        """This member's own live calls per URI (what it publishes to the cluster)."""
        return {uri: n for uri in self._health if (n := self._accounting.active(uri)) > 0}

    def sets(self) -> tuple[SetSpec, ...]:
        return tuple(s.spec for s in self._sets.values())

    def destinations(self, set_name: str) -> tuple[Destination, ...]:
        """Raises ``KeyError`` for an unknown set."""
        return self._sets[set_name].destinations

    def choose(
        self, set_name: str, hash_input: bytes = b"", tried: frozenset[str] = frozenset()
    ) -> Destination | NoDestination:
        dset = self._sets.get(set_name)
        if dset is None:
            return NoDestination(set_name, NoDestinationReason.UNKNOWN_SET)
        return dset.choose(self._health, hash_input, tried)

    def health_settings(self, uri: str) -> HealthSettings:
        """How ``uri`` is probed: its set's ``health``, else ``[health]``."""
        return self._health.settings_of(uri)

    def probe_targets(self) -> tuple[DestinationSpec, ...]:
        """Every configured destination once (the first spec seen for a URI)."""
        specs: dict[str, DestinationSpec] = {}
        for dset in self._sets.values():
            for dest in dset.destinations:
                specs.setdefault(dest.uri, dest.spec)
        return tuple(specs.values())

    def retiring(self) -> frozenset[str]:
        """URIs removed from config that still carry calls."""
        return frozenset(self._retiring)

    def snapshot(self, uri: str) -> HealthSnapshot:
        """Health with the live call count; raises ``KeyError`` for an unknown URI."""
        return self._health.snapshot(uri, self._active(uri))

    def replace_sets(self, sets: Sequence[SetSpec], now: float) -> tuple[StateChanged, ...]:
        """Install a new configuration; returns the state changes it caused."""
        names = [s.name for s in sets]
        if len(set(names)) != len(names):
            raise ValueError("a set name appears twice")
        new_sets = {
            s.name: DestinationSet(s, rng=self._rng, active=self._active, full=self._full)
            for s in sets
        }
        wanted: dict[str, HealthSettings] = {}
        for spec in sets:
            for dest in spec.destinations:
                wanted.setdefault(dest.uri, spec.health or self._health.settings)
        events: list[StateChanged] = []
        for uri, settings in wanted.items():
            self._admit(uri, now, events, settings)
        for uri in [u for u in self._health if u not in wanted and u not in self._retiring]:
            self._retire(uri, now, events)
        self._sets = new_sets
        self.sweep()
        return tuple(events)

    def sweep(self) -> tuple[str, ...]:
        """Drop removed destinations whose last call has ended; returns their URIs."""
        done = [uri for uri in self._retiring if self._accounting.active(uri) == 0]
        for uri in done:
            del self._retiring[uri]
            self._health.remove(uri)
        return tuple(done)

    def _admit(
        self, uri: str, now: float, events: list[StateChanged], settings: HealthSettings
    ) -> None:
        self._health.add(uri, now, self._initial, settings)
        if uri in self._retiring:
            admin = self._retiring.pop(uri)
            _record(events, self._health.set_admin(uri, admin, now, RESTORED_CAUSE))

    def _retire(self, uri: str, now: float, events: list[StateChanged]) -> None:
        if self._accounting.active(uri) == 0:
            self._health.remove(uri)
            return
        admin = self._health.admin(uri)
        self._retiring[uri] = admin
        if admin is None:
            _record(events, self._health.set_admin(uri, AdminState.DRAINING, now, REMOVED_CAUSE))


def _record(events: list[StateChanged], event: StateChanged | None) -> None:
    if event is not None:
        events.append(event)
