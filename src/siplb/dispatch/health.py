"""Health state of each destination (docs/design.md section 4).

Rules, in one place:

- Every destination has a *probe state* (``PROBING``, ``UP``, ``SUSPECT`` or ``DOWN``), moved by
  OPTIONS probe results and, when ``HealthSettings.passive`` is true, by what live traffic shows
  (a timeout, a transport error, a 503). A new destination (at start or added by a reload) starts
  ``PROBING`` when ``HealthSettings.probe_first`` is true (the default), else ``UP``: like
  Kamailio's dispatcher probing mode, it takes calls once a probe showed it alive, so a dead one
  added by a reload never costs a caller a failover timeout.
- A success while ``PROBING`` makes it ``UP`` at once (one answer is enough: it was never seen
  failing); ``down_after`` consecutive failures make it ``DOWN``, fewer leave it ``PROBING``.
- A failure while ``UP`` makes it ``SUSPECT`` (still selectable); ``down_after`` consecutive
  failures make it ``DOWN``. A success while ``SUSPECT`` makes it ``UP`` again; while ``DOWN`` it
  takes ``up_after`` consecutive successes. A success resets the failure run and a failure resets
  the success run.
- An operator may set an *admin state* on top: ``DRAINING`` (no new calls, current ones finish)
  or ``DISABLED`` (no new calls). ``None`` (or ``AdminState.ENABLED``) clears it.
- The *effective state* is the admin state when one is set, else the probe state: admin over
  probe over config. Probe results keep updating the probe state under an admin override, so
  clearing the override lands on what the probes say now.
- Only ``UP`` and ``SUSPECT`` destinations take new calls; a call none of them can take goes to
  a ``PROBING`` one (``siplb.dispatch.dset``), so a balancer that just started does not answer
  503 in the milliseconds before the first probes come back.
- Every change of effective state is returned as a ``StateChanged`` event for the shell to log;
  inputs that change nothing return ``None``. Inputs about unknown destinations are ignored
  (a probe may answer after a reload removed its target).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum

from siplb.dispatch.spec import HealthSettings


class State(StrEnum):
    PROBING = "probing"
    UP = "up"
    SUSPECT = "suspect"
    DOWN = "down"
    DRAINING = "draining"
    DISABLED = "disabled"


class AdminState(StrEnum):
    """What an operator may set. ``ENABLED`` clears any override, like ``None``."""

    ENABLED = "enabled"
    DRAINING = "draining"
    DISABLED = "disabled"


SELECTABLE = frozenset({State.UP, State.SUSPECT})
PROBE_STATES = frozenset({State.PROBING, State.UP, State.SUSPECT, State.DOWN})


def first_state(settings: HealthSettings) -> State:
    """The probe state a new destination starts in."""
    return State.PROBING if settings.probe_first else State.UP


_ADMIN_TO_STATE = {AdminState.DRAINING: State.DRAINING, AdminState.DISABLED: State.DISABLED}


@dataclass(frozen=True, slots=True)
class StateChanged:
    """The effective state of destination ``uri`` went from ``old`` to ``new`` at ``at``."""

    uri: str
    old: State
    new: State
    cause: str
    at: float


@dataclass(frozen=True, slots=True)
class HealthSnapshot:
    """Read-only view of one destination for the admin API and metrics."""

    uri: str
    state: State
    cause: str
    since: float
    admin: AdminState | None
    probe_state: State
    consecutive_failures: int
    consecutive_successes: int
    total_failures: int
    active_calls: int
    drained: bool

    @property
    def selectable(self) -> bool:
        return self.state in SELECTABLE


class DestinationHealth:
    """The health state machine of one destination."""

    __slots__ = (
        "_down_after",
        "_up_after",
        "admin",
        "cause",
        "consecutive_failures",
        "consecutive_successes",
        "probe_state",
        "settings",
        "since",
        "state",
        "total_failures",
        "uri",
    )

    def __init__(
        self, uri: str, settings: HealthSettings, *, now: float, initial: State | None = None
    ) -> None:
        if initial is None:
            initial = first_state(settings)
        if initial not in PROBE_STATES:
            raise ValueError(f"initial state must be probing, up, suspect or down, not {initial}")
        self.uri = uri
        self.settings = settings
        self._down_after = self._up_after = 1
        self.configure(settings)
        self.probe_state = initial
        self.admin: AdminState | None = None
        self.state = initial
        self.cause = "config"
        self.since = now
        self.consecutive_failures = 0
        self.consecutive_successes = 0
        self.total_failures = 0

    def configure(self, settings: HealthSettings) -> None:
        """New thresholds (a reload changed its set's ``health``); the state stays."""
        self.settings = settings
        self._down_after = max(1, settings.down_after)
        self._up_after = max(1, settings.up_after)

    def failure(self, now: float, cause: str) -> StateChanged | None:
        self.consecutive_failures += 1
        self.consecutive_successes = 0
        self.total_failures += 1
        if self.probe_state is State.DOWN:
            return None
        if self.consecutive_failures >= self._down_after:
            return self._set_probe(State.DOWN, now, cause)
        if self.probe_state is State.PROBING:  # never seen alive: not worth a call yet
            return None
        return self._set_probe(State.SUSPECT, now, cause)

    def success(self, now: float, cause: str) -> StateChanged | None:
        self.consecutive_successes += 1
        self.consecutive_failures = 0
        if self.probe_state is State.DOWN and self.consecutive_successes < self._up_after:
            return None
        return self._set_probe(State.UP, now, cause)

    def set_admin(self, admin: AdminState | None, now: float, cause: str) -> StateChanged | None:
        admin = None if admin is None else AdminState(admin)  # also takes the plain value
        self.admin = None if admin is AdminState.ENABLED else admin
        return self._settle(now, cause)

    def follow(self, state: State, now: float, cause: str) -> StateChanged | None:
        """Take ``state`` as decided elsewhere (the health of another worker process)."""
        if state in PROBE_STATES:
            self.admin, self.probe_state = None, state
        else:
            self.admin = AdminState(state.value)
        return self._settle(now, cause)

    def follow_probe(self, state: State, now: float, cause: str) -> StateChanged | None:
        """Take the probe state decided by the member that owns this destination's health;
        an operator's admin state (shared separately) stays over it."""
        if state not in PROBE_STATES:
            raise ValueError(f"a probe state is probing, up, suspect or down, not {state}")
        self.consecutive_failures = self.consecutive_successes = 0
        return self._set_probe(state, now, cause)

    def snapshot(self, active_calls: int = 0) -> HealthSnapshot:
        return HealthSnapshot(
            uri=self.uri,
            state=self.state,
            cause=self.cause,
            since=self.since,
            admin=self.admin,
            probe_state=self.probe_state,
            consecutive_failures=self.consecutive_failures,
            consecutive_successes=self.consecutive_successes,
            total_failures=self.total_failures,
            active_calls=active_calls,
            drained=self.state is State.DRAINING and active_calls == 0,
        )

    def _set_probe(self, probe_state: State, now: float, cause: str) -> StateChanged | None:
        self.probe_state = probe_state
        return self._settle(now, cause)

    def _settle(self, now: float, cause: str) -> StateChanged | None:
        """Recompute the effective state: admin over probe."""
        new = self.probe_state if self.admin is None else _ADMIN_TO_STATE[self.admin]
        if new is self.state:
            return None
        event = StateChanged(self.uri, self.state, new, cause, now)
        self.state, self.cause, self.since = new, cause, now
        return event


class HealthTable:
    """Health of every known destination, keyed by URI."""

    def __init__(self, settings: HealthSettings) -> None:
        self.settings = settings
        self._machines: dict[str, DestinationHealth] = {}

    def add(
        self,
        uri: str,
        now: float,
        initial: State | None = None,
        settings: HealthSettings | None = None,
    ) -> None:
        """Start tracking ``uri`` (in ``initial``, else as ``probe_first`` says) with
        ``settings`` (its set's ``health``, else the table's); a URI already tracked keeps its
        state and takes the settings."""
        settings = settings or self.settings
        machine = self._machines.get(uri)
        if machine is None:
            self._machines[uri] = DestinationHealth(uri, settings, now=now, initial=initial)
        else:
            machine.configure(settings)

    def settings_of(self, uri: str) -> HealthSettings:
        """The health settings ``uri`` is checked with (the table's for an unknown URI)."""
        machine = self._machines.get(uri)
        return self.settings if machine is None else machine.settings

    def remove(self, uri: str) -> None:
        self._machines.pop(uri, None)

    def __contains__(self, uri: object) -> bool:
        return uri in self._machines

    def __iter__(self) -> Iterator[str]:
        return iter(self._machines)

    def __len__(self) -> int:
        return len(self._machines)

    def state(self, uri: str) -> State:
        """Effective state; raises ``KeyError`` for an unknown URI."""
        return self._machines[uri].state

    def admin(self, uri: str) -> AdminState | None:
        return self._machines[uri].admin

    def selectable(self, uri: str) -> bool:
        machine = self._machines.get(uri)
        return machine is not None and machine.state in SELECTABLE

    def probe_result(self, uri: str, ok: bool, now: float, cause: str = "") -> StateChanged | None:
        machine = self._machines.get(uri)
        if machine is None:
            return None
        if ok:
            return machine.success(now, cause or "probe ok")
        return machine.failure(now, cause or "probe failed")

    def passive_failure(self, uri: str, now: float, cause: str) -> StateChanged | None:
        """A timeout, transport error or 503 seen on live traffic."""
        machine = self._machines.get(uri)
        if machine is None or not machine.settings.passive:
            return None
        return machine.failure(now, cause)

    def passive_success(self, uri: str, now: float, cause: str = "") -> StateChanged | None:
        """A response seen on live traffic that shows the destination alive."""
        machine = self._machines.get(uri)
        if machine is None or not machine.settings.passive:
            return None
        return machine.success(now, cause or "traffic ok")

    def set_admin(
        self, uri: str, admin: AdminState | None, now: float, cause: str = ""
    ) -> StateChanged | None:
        machine = self._machines.get(uri)
        if machine is None:
            return None
        return machine.set_admin(admin, now, cause or f"admin {admin or AdminState.ENABLED}")

    def follow(self, uri: str, state: State, now: float, cause: str) -> StateChanged | None:
        """Set ``uri``'s effective state to ``state`` (decided by the health-owning worker);
        an admin state sets the override, a probe state clears it."""
        machine = self._machines.get(uri)
        if machine is None:
            return None
        return machine.follow(State(state), now, cause)

    def follow_probe(self, uri: str, state: State, now: float, cause: str) -> StateChanged | None:
        """Set ``uri``'s probe state as decided by the cluster member that owns its health."""
        machine = self._machines.get(uri)
        if machine is None or State(state) not in PROBE_STATES:
            return None
        return machine.follow_probe(State(state), now, cause)

    def snapshot(self, uri: str, active_calls: int = 0) -> HealthSnapshot:
        """Raises ``KeyError`` for an unknown URI."""
        return self._machines[uri].snapshot(active_calls)
