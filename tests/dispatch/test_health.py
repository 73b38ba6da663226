"""Health state machine: every state x input, counters, admin precedence, invariants."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from siplb.dispatch.health import (
    AdminState,
    DestinationHealth,
    HealthTable,
    State,
    StateChanged,
)
from siplb.dispatch.spec import HealthSettings

URI = "sip:10.0.0.1:5060"
SETTINGS = HealthSettings(down_after=2, up_after=2, passive=True)

Step = Callable[[HealthTable, float], StateChanged | None]

INPUTS: dict[str, Step] = {
    "probe-ok": lambda t, now: t.probe_result(URI, True, now, "200 OK"),
    "probe-fail": lambda t, now: t.probe_result(URI, False, now, "timeout"),
    "passive-fail": lambda t, now: t.passive_failure(URI, now, "503"),
    "passive-ok": lambda t, now: t.passive_success(URI, now, "180"),
    "admin-draining": lambda t, now: t.set_admin(URI, AdminState.DRAINING, now, "op"),
    "admin-disabled": lambda t, now: t.set_admin(URI, AdminState.DISABLED, now, "op"),
    "admin-enabled": lambda t, now: t.set_admin(URI, AdminState.ENABLED, now, "op"),
    "admin-none": lambda t, now: t.set_admin(URI, None, now, "op"),
}

# How to reach each starting point from a fresh (probing) destination, at times 1, 2, ...
STARTS: dict[str, tuple[str, ...]] = {
    "probing": (),
    "probing-1-fail": ("probe-fail",),
    "probing-drained": ("admin-draining",),
    "up": ("probe-ok",),
    "suspect": ("probe-ok", "probe-fail"),
    "down": ("probe-ok", "probe-fail", "probe-fail"),
    "down-1-ok": ("probe-ok", "probe-fail", "probe-fail", "probe-ok"),
    "draining": ("probe-ok", "admin-draining"),
    "disabled": ("probe-ok", "admin-disabled"),
    "draining-over-down": ("probe-ok", "probe-fail", "probe-fail", "admin-draining"),
    "disabled-over-suspect": ("probe-ok", "probe-fail", "admin-disabled"),
}

UP, SUS, DOWN, DRN, DIS = State.UP, State.SUSPECT, State.DOWN, State.DRAINING, State.DISABLED
PRB = State.PROBING

# start -> expected state after each input, in INPUTS order:
#        probe-ok probe-fail passive-fail passive-ok draining disabled enabled none
TRANSITIONS: dict[str, tuple[State, ...]] = {
    # one answer proves a new destination; down_after failures (2 here) make it down
    "probing": (UP, PRB, PRB, UP, DRN, DIS, PRB, PRB),
    "probing-1-fail": (UP, DOWN, DOWN, UP, DRN, DIS, PRB, PRB),
    "probing-drained": (DRN, DRN, DRN, DRN, DRN, DIS, PRB, PRB),
    "up": (UP, SUS, SUS, UP, DRN, DIS, UP, UP),
    "suspect": (UP, DOWN, DOWN, UP, DRN, DIS, SUS, SUS),
    "down": (DOWN, DOWN, DOWN, DOWN, DRN, DIS, DOWN, DOWN),
    "down-1-ok": (UP, DOWN, DOWN, UP, DRN, DIS, DOWN, DOWN),
    "draining": (DRN, DRN, DRN, DRN, DRN, DIS, UP, UP),
    "disabled": (DIS, DIS, DIS, DIS, DRN, DIS, UP, UP),
    "draining-over-down": (DRN, DRN, DRN, DRN, DRN, DIS, DOWN, DOWN),
    "disabled-over-suspect": (DIS, DIS, DIS, DIS, DRN, DIS, SUS, SUS),
}

CASES = [
    (start, name, expected)
    for start, row in TRANSITIONS.items()
    for name, expected in zip(INPUTS, row, strict=True)
]


def table_at(start: str, settings: HealthSettings = SETTINGS) -> HealthTable:
    table = HealthTable(settings)
    table.add(URI, now=0.0)
    for i, name in enumerate(STARTS[start], start=1):
        INPUTS[name](table, float(i))
    return table


@pytest.mark.parametrize(("start", "name", "expected"), CASES)
def test_transition(start: str, name: str, expected: State) -> None:
    table = table_at(start)
    before = table.snapshot(URI)
    event = INPUTS[name](table, 100.0)
    after = table.snapshot(URI)
    assert after.state is expected
    if expected is before.state:
        assert event is None
        assert (after.since, after.cause) == (before.since, before.cause)
    else:
        assert event is not None
        assert event == StateChanged(URI, before.state, expected, event.cause, 100.0)
        assert (after.since, after.cause) == (100.0, event.cause)
        assert event.cause in {"200 OK", "timeout", "503", "180", "op"}


@pytest.mark.parametrize("start", list(STARTS))
@pytest.mark.parametrize("name", ["passive-fail", "passive-ok"])
def test_passive_ignored_when_off(start: str, name: str) -> None:
    table = table_at(start, HealthSettings(down_after=2, up_after=2, passive=False))
    before = table.snapshot(URI)
    assert INPUTS[name](table, 100.0) is None
    assert table.snapshot(URI) == before


THRESHOLD_CASES = [
    # down_after, up_after, inputs, expected states after each input
    (1, 1, ("probe-fail", "probe-ok"), (DOWN, UP)),
    (3, 1, ("probe-fail", "probe-fail", "probe-fail", "probe-ok"), (SUS, SUS, DOWN, UP)),
    (2, 3, ("probe-fail", "probe-fail", "probe-ok", "probe-ok", "probe-ok"), (SUS, DOWN, DOWN, DOWN, UP)),
    # a failure in the middle of the success run starts the run again
    (2, 2, ("probe-fail",) * 2 + ("probe-ok", "probe-fail", "probe-ok", "probe-ok"), (SUS, DOWN, DOWN, DOWN, DOWN, UP)),
    # a success in the middle of the failure run starts it again: never down
    (2, 2, ("probe-fail", "probe-ok", "probe-fail", "passive-ok", "probe-fail"), (SUS, UP, SUS, UP, SUS)),
    # passive and probe failures add up
    (3, 2, ("passive-fail", "probe-fail", "passive-fail"), (SUS, SUS, DOWN)),
]  # fmt: skip


@pytest.mark.parametrize(("down_after", "up_after", "inputs", "expected"), THRESHOLD_CASES)
def test_thresholds(
    down_after: int, up_after: int, inputs: tuple[str, ...], expected: tuple[State, ...]
) -> None:
    table = HealthTable(HealthSettings(down_after=down_after, up_after=up_after))
    table.add(URI, now=0.0)
    table.probe_result(URI, True, 0.5)  # the first probe shows it alive
    states = []
    for i, name in enumerate(inputs, start=1):
        INPUTS[name](table, float(i))
        states.append(table.state(URI))
    assert tuple(states) == expected


def test_counters_and_snapshot() -> None:
    table = HealthTable(SETTINGS)
    table.add(URI, now=5.0)
    snap = table.snapshot(URI)
    assert (snap.state, snap.cause, snap.since, snap.total_failures) == (PRB, "config", 5.0, 0)
    assert not snap.selectable
    table.probe_result(URI, True, 5.5)
    assert table.snapshot(URI).selectable
    table.probe_result(URI, False, 6.0, "timeout")
    table.passive_failure(URI, 7.0, "503 Service Unavailable")
    table.probe_result(URI, False, 8.0, "timeout")
    snap = table.snapshot(URI)
    assert (snap.state, snap.cause, snap.since) == (DOWN, "503 Service Unavailable", 7.0)
    assert (snap.consecutive_failures, snap.consecutive_successes, snap.total_failures) == (3, 0, 3)
    table.probe_result(URI, True, 9.0)
    snap = table.snapshot(URI)
    assert (snap.consecutive_failures, snap.consecutive_successes, snap.total_failures) == (0, 1, 3)
    assert (snap.state, snap.probe_state, snap.selectable) == (DOWN, DOWN, False)
    table.probe_result(URI, True, 10.0)
    snap = table.snapshot(URI)
    assert (snap.state, snap.cause, snap.since, snap.selectable) == (UP, "probe ok", 10.0, True)


def test_admin_over_probe() -> None:
    table = table_at("up")
    table.set_admin(URI, AdminState.DISABLED, 1.0, "maintenance")
    # probes keep running underneath and decide the state once the override is cleared
    assert table.probe_result(URI, False, 2.0) is None
    assert table.probe_result(URI, False, 3.0) is None
    snap = table.snapshot(URI)
    assert (snap.state, snap.probe_state, snap.admin, snap.since) == (
        DIS,
        DOWN,
        AdminState.DISABLED,
        1.0,
    )
    event = table.set_admin(URI, None, 4.0, "maintenance over")
    assert event == StateChanged(URI, DIS, DOWN, "maintenance over", 4.0)
    assert table.snapshot(URI).admin is None


def test_enabled_clears_the_override() -> None:
    table = table_at("draining")
    table.set_admin(URI, AdminState.ENABLED, 5.0)
    snap = table.snapshot(URI)
    assert (snap.admin, snap.state, snap.cause) == (None, UP, "admin enabled")


@pytest.mark.parametrize(
    ("start", "active", "drained"),
    [("draining", 0, True), ("draining", 3, False), ("up", 0, False), ("disabled", 0, False)],
)
def test_drained(start: str, active: int, drained: bool) -> None:
    snap = table_at(start).snapshot(URI, active_calls=active)
    assert (snap.drained, snap.active_calls) == (drained, active)


@pytest.mark.parametrize(
    ("initial", "oks_to_up"),
    [(State.UP, 0), (State.SUSPECT, 1), (State.DOWN, 2), (State.PROBING, 1)],
)
def test_initial_state(initial: State, oks_to_up: int) -> None:
    table = HealthTable(SETTINGS)
    table.add(URI, now=0.0, initial=initial)
    assert table.state(URI) is initial
    for i in range(oks_to_up):
        table.probe_result(URI, True, float(i + 1))
    assert table.state(URI) is State.UP


@pytest.mark.parametrize("initial", [State.DRAINING, State.DISABLED])
def test_initial_must_be_a_probe_state(initial: State) -> None:
    with pytest.raises(ValueError, match="initial state"):
        DestinationHealth(URI, SETTINGS, now=0.0, initial=initial)


def test_probe_first_off_starts_up() -> None:
    table = HealthTable(HealthSettings(probe_first=False))
    table.add(URI, now=0.0)
    assert table.state(URI) is UP
    # a set's own settings decide for its destinations
    table.add("sip:10.0.0.2:5060", now=0.0, settings=SETTINGS)
    assert table.state("sip:10.0.0.2:5060") is PRB


def test_add_again_takes_new_settings_and_keeps_the_state() -> None:
    table = table_at("up")
    table.add(URI, now=9.0, settings=HealthSettings(down_after=1, passive=False))
    assert table.state(URI) is UP
    assert table.passive_failure(URI, 10.0, "503") is None  # passive is off now
    table.probe_result(URI, False, 11.0)
    assert table.state(URI) is DOWN  # down_after is 1 now


def test_follow_probe_takes_probing_and_leaves_it() -> None:
    table = table_at("up")
    assert table.follow_probe(URI, PRB, 1.0, "owner just added it") is not None
    assert table.state(URI) is PRB
    table.follow_probe(URI, UP, 2.0, "owner's probe ok")
    assert table.state(URI) is UP


def test_add_keeps_existing_state() -> None:
    table = table_at("down")
    table.add(URI, now=50.0)
    assert table.state(URI) is DOWN


@pytest.mark.parametrize("name", list(INPUTS))
def test_unknown_uri_is_ignored(name: str) -> None:
    table = HealthTable(SETTINGS)
    table.add("sip:10.0.0.9:5060", now=0.0)
    assert INPUTS[name](table, 1.0) is None
    assert URI not in table
    assert not table.selectable(URI)


def test_remove() -> None:
    table = table_at("up")
    assert (URI in table, len(table), list(table)) == (True, 1, [URI])
    table.remove(URI)
    table.remove(URI)
    assert (URI in table, len(table)) == (False, 0)
    with pytest.raises(KeyError):
        table.state(URI)


ADMIN_VALUES = [AdminState.DRAINING, AdminState.DISABLED, AdminState.ENABLED, None]
ADMIN_STATE = {AdminState.DRAINING: DRN, AdminState.DISABLED: DIS}
OPS = st.one_of(
    st.tuples(st.just("probe"), st.booleans()),
    st.tuples(st.just("passive"), st.booleans()),
    st.tuples(st.just("admin"), st.sampled_from(ADMIN_VALUES)),
)


@given(
    down_after=st.integers(1, 4),
    up_after=st.integers(1, 4),
    passive=st.booleans(),
    initial=st.sampled_from([State.UP, State.DOWN, State.PROBING]),
    ops=st.lists(OPS, max_size=60),
)
def test_invariants(
    down_after: int,
    up_after: int,
    passive: bool,
    initial: State,
    ops: list[tuple[str, object]],
) -> None:
    table = HealthTable(HealthSettings(down_after=down_after, up_after=up_after, passive=passive))
    table.add(URI, now=0.0, initial=initial)
    failures = 0
    for i, (kind, arg) in enumerate(ops, start=1):
        now = float(i)
        before = table.snapshot(URI)
        if kind == "probe":
            event = table.probe_result(URI, bool(arg), now)
            failures += not arg
        elif kind == "passive":
            if arg:
                event = table.passive_success(URI, now)
            else:
                event = table.passive_failure(URI, now, "timeout")
                failures += passive
        else:
            assert arg is None or isinstance(arg, AdminState)
            event = table.set_admin(URI, arg, now)
        snap = table.snapshot(URI)
        # admin over probe
        assert snap.state is (snap.probe_state if snap.admin is None else ADMIN_STATE[snap.admin])
        # an event exactly when the effective state changed, and it tells the truth
        if snap.state is before.state:
            assert event is None
            assert snap.since == before.since
        else:
            assert event is not None
            assert event == StateChanged(URI, before.state, snap.state, event.cause, now)
            assert snap.since == now
        # counters agree with the probe state
        assert snap.consecutive_failures == 0 or snap.consecutive_successes == 0
        assert snap.total_failures == failures
        if snap.probe_state is State.UP:
            assert snap.consecutive_failures == 0
        elif snap.probe_state is State.PROBING:
            assert snap.consecutive_successes == 0
            assert snap.consecutive_failures < down_after
        elif snap.probe_state is State.SUSPECT:
            assert 1 <= snap.consecutive_failures < down_after
        else:
            assert snap.consecutive_successes < up_after
        assert snap.selectable == (snap.state in {State.UP, State.SUSPECT})
