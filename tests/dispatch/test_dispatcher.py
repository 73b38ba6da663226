"""Dispatcher: sets, shared health and calls, reasons for no destination, reload."""

from __future__ import annotations

import random

import pytest

from siplb.dispatch import (
    AdminState,
    Algorithm,
    Destination,
    DestinationSpec,
    Dispatcher,
    HealthSettings,
    NoDestination,
    NoDestinationReason,
    SetSpec,
    State,
    StateChanged,
)


def dest(n: int, weight: int = 1, max_calls: int | None = None) -> DestinationSpec:
    return DestinationSpec(
        f"sip:10.0.0.{n}:5060", f"10.0.0.{n}", 5060, weight=weight, max_calls=max_calls
    )


def uri(n: int) -> str:
    return f"sip:10.0.0.{n}:5060"


def rr(name: str, *ns: int) -> SetSpec:
    return SetSpec(name, tuple(dest(n) for n in ns), Algorithm.ROUND_ROBIN)


def make(*sets: SetSpec, initial: State = State.UP) -> Dispatcher:
    return Dispatcher(sets, HealthSettings(), random.Random(1), now=0.0, initial=initial)


def kill(disp: Dispatcher, n: int) -> None:
    disp.health.probe_result(uri(n), False, 1.0)
    disp.health.probe_result(uri(n), False, 1.0)


def picks(disp: Dispatcher, set_name: str, count: int = 12) -> set[str]:
    out = set()
    for _ in range(count):
        chosen = disp.choose(set_name)
        assert isinstance(chosen, Destination), chosen
        out.add(chosen.uri)
    return out


def test_views() -> None:
    pbx, reg = rr("pbx", 1, 2), rr("registrar", 2, 3)
    disp = make(pbx, reg)
    assert disp.sets() == (pbx, reg)
    assert disp.destinations("pbx") == (Destination(dest(1), "pbx"), Destination(dest(2), "pbx"))
    assert [d.uri for d in disp.destinations("registrar")] == [uri(2), uri(3)]
    assert disp.probe_targets() == (dest(1), dest(2), dest(3))
    assert sorted(disp.health) == [uri(1), uri(2), uri(3)]
    with pytest.raises(KeyError):
        disp.destinations("nope")


def test_choose_returns_the_set_destination() -> None:
    disp = make(rr("pbx", 1))
    chosen = disp.choose("pbx", b"call-id")
    assert chosen == Destination(dest(1), "pbx")
    assert isinstance(chosen, Destination)
    assert chosen.spec.address == ("10.0.0.1", 5060)
    assert chosen is disp.choose("pbx")  # prebuilt, no allocation per call


NO_DESTINATION_CASES = [
    # set, down, tried, calls open on, reason
    ("other", (), (), (), NoDestinationReason.UNKNOWN_SET),
    ("pbx", (1, 2), (), (), NoDestinationReason.ALL_DOWN),
    ("pbx", (), (1, 2), (), NoDestinationReason.ALL_TRIED),
    ("pbx", (1,), (2,), (), NoDestinationReason.ALL_TRIED),
    ("pbx", (), (), (1, 2), NoDestinationReason.ALL_FULL),
    ("pbx", (), (1,), (2,), NoDestinationReason.ALL_FULL),
    ("pbx", (1,), (), (2,), NoDestinationReason.ALL_FULL),
]


@pytest.mark.parametrize(("set_name", "down", "tried", "busy", "reason"), NO_DESTINATION_CASES)
def test_no_destination_reason(
    set_name: str,
    down: tuple[int, ...],
    tried: tuple[int, ...],
    busy: tuple[int, ...],
    reason: NoDestinationReason,
) -> None:
    disp = make(SetSpec("pbx", (dest(1, max_calls=1), dest(2, max_calls=1))))
    for n in down:
        kill(disp, n)
    for n in busy:
        disp.accounting.setup_started(n, uri(n), 0.0)
    chosen = disp.choose(set_name, b"", frozenset(uri(n) for n in tried))
    assert chosen == NoDestination(set_name, reason)


@pytest.mark.parametrize("admin", [AdminState.DRAINING, AdminState.DISABLED])
def test_admin_states_take_no_new_calls(admin: AdminState) -> None:
    disp = make(rr("pbx", 1, 2))
    disp.health.set_admin(uri(1), admin, 1.0)
    assert picks(disp, "pbx") == {uri(2)}
    disp.health.set_admin(uri(1), None, 2.0)
    assert picks(disp, "pbx") == {uri(1), uri(2)}


def test_health_and_calls_are_shared_between_sets() -> None:
    a = SetSpec("a", (dest(1, max_calls=1), dest(2)))
    b = SetSpec("b", (dest(1, max_calls=5), dest(3)))
    disp = make(a, b)
    kill(disp, 2)
    kill(disp, 3)
    assert picks(disp, "a") == picks(disp, "b") == {uri(1)}
    disp.accounting.setup_started("call", uri(1), 0.0)
    # each set applies its own cap to the one count
    assert disp.choose("a") == NoDestination("a", NoDestinationReason.ALL_FULL)
    assert picks(disp, "b") == {uri(1)}
    assert disp.probe_targets() == (dest(1, max_calls=1), dest(2), dest(3))


def test_snapshot_counts_calls() -> None:
    disp = make(rr("pbx", 1))
    disp.accounting.setup_started("c", uri(1), 0.0)
    disp.health.set_admin(uri(1), AdminState.DRAINING, 1.0, "maintenance")
    snap = disp.snapshot(uri(1))
    assert (snap.state, snap.cause, snap.active_calls, snap.drained) == (
        State.DRAINING,
        "maintenance",
        1,
        False,
    )
    disp.accounting.ended("c")
    assert disp.snapshot(uri(1)).drained


def test_initial_state() -> None:
    disp = make(rr("pbx", 1), initial=State.DOWN)
    assert disp.choose("pbx") == NoDestination("pbx", NoDestinationReason.ALL_DOWN)
    disp.health.probe_result(uri(1), True, 1.0)
    disp.health.probe_result(uri(1), True, 2.0)
    assert picks(disp, "pbx") == {uri(1)}


# ---- reload -------------------------------------------------------------------------------


def test_reload_keeps_state_of_staying_destinations() -> None:
    disp = make(rr("pbx", 1, 2))
    kill(disp, 1)
    disp.accounting.setup_started("c", uri(2), 0.0)
    events = disp.replace_sets([rr("pbx", 1, 2, 5), rr("new", 5)], now=10.0)
    assert events == ()
    assert disp.health.state(uri(1)) is State.DOWN
    assert disp.health.state(uri(5)) is State.UP
    assert disp.snapshot(uri(5)).since == 10.0
    assert disp.accounting.active(uri(2)) == 1
    assert picks(disp, "pbx") == {uri(2), uri(5)}
    assert picks(disp, "new") == {uri(5)}


def test_reload_drops_idle_removed_destination() -> None:
    disp = make(rr("pbx", 1, 2))
    assert disp.replace_sets([rr("pbx", 2)], now=10.0) == ()
    assert uri(1) not in disp.health
    assert disp.retiring() == frozenset()
    assert disp.health.probe_result(uri(1), True, 11.0) is None
    assert disp.probe_targets() == (dest(2),)


def test_reload_drains_removed_destination_with_calls() -> None:
    disp = make(rr("pbx", 1, 2))
    disp.accounting.setup_started("c1", uri(1), 0.0)
    disp.accounting.confirmed("c1", 0.5)
    events = disp.replace_sets([rr("pbx", 2)], now=10.0)
    assert events == (StateChanged(uri(1), State.UP, State.DRAINING, "removed from config", 10.0),)
    assert disp.retiring() == frozenset({uri(1)})
    assert picks(disp, "pbx") == {uri(2)}
    assert disp.probe_targets() == (dest(2),)
    assert disp.sweep() == ()
    assert not disp.snapshot(uri(1)).drained
    disp.accounting.ended("c1")
    assert disp.snapshot(uri(1)).drained
    assert disp.sweep() == (uri(1),)
    assert uri(1) not in disp.health
    assert disp.retiring() == frozenset()


def test_reload_sweeps_earlier_retired_destinations() -> None:
    disp = make(rr("pbx", 1, 2))
    disp.accounting.setup_started("c1", uri(1), 0.0)
    disp.replace_sets([rr("pbx", 2)], now=10.0)
    disp.accounting.ended("c1")
    disp.replace_sets([rr("pbx", 2)], now=20.0)
    assert uri(1) not in disp.health


@pytest.mark.parametrize(
    ("admin", "after_removal", "after_return"),
    [
        (None, State.DRAINING, State.UP),
        (AdminState.DISABLED, State.DISABLED, State.DISABLED),
        (AdminState.DRAINING, State.DRAINING, State.DRAINING),
    ],
)
def test_reload_brings_back_a_retiring_destination(
    admin: AdminState | None, after_removal: State, after_return: State
) -> None:
    disp = make(rr("pbx", 1, 2))
    disp.health.set_admin(uri(1), admin, 1.0)
    disp.accounting.setup_started("c1", uri(1), 0.0)
    disp.replace_sets([rr("pbx", 2)], now=10.0)
    assert disp.health.state(uri(1)) is after_removal
    events = disp.replace_sets([rr("pbx", 1, 2)], now=20.0)
    assert disp.health.state(uri(1)) is after_return
    assert disp.health.admin(uri(1)) is admin
    assert disp.retiring() == frozenset()
    expected = () if after_removal is after_return else (after_return,)
    assert tuple(e.new for e in events) == expected
    assert disp.accounting.active(uri(1)) == 1


INVALID_CASES = [
    ([SetSpec("pbx", (dest(1), dest(1)))], "appears twice"),
    ([rr("pbx", 1), rr("pbx", 2)], "appears twice"),
    ([SetSpec("pbx", (dest(1, weight=-1),))], "weight"),
]


@pytest.mark.parametrize(("sets", "message"), INVALID_CASES)
def test_invalid_sets(sets: list[SetSpec], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make(*sets)
    disp = make(rr("pbx", 3))
    with pytest.raises(ValueError, match=message):
        disp.replace_sets(sets, now=5.0)
    # a refused reload changes nothing
    assert disp.sets() == (rr("pbx", 3),)
    assert list(disp.health) == [uri(3)]


# ---- told by the cluster: the other members' calls, this member's leases ------------------------


def least(*specs: DestinationSpec) -> SetSpec:
    return SetSpec("pbx", specs, Algorithm.LEAST_CALLS)


def test_least_calls_orders_by_local_and_remote_calls() -> None:
    disp = make(least(dest(1), dest(2)))
    disp.accounting.setup_started("c1", uri(1), 0.0)  # one call here on 1
    disp.told_calls({uri(2): 3})  # three calls elsewhere on 2
    assert picks(disp, "pbx", 1) == {uri(1)}
    assert disp.snapshot(uri(2)).active_calls == 3
    disp.told_calls({})  # the other member left: its calls no longer count
    assert picks(disp, "pbx", 1) == {uri(2)}


def test_a_told_limit_caps_the_calls_held_here() -> None:
    disp = make(least(dest(1, max_calls=10), dest(2)))
    disp.told_limits({uri(1): 1})
    disp.accounting.setup_started("c1", uri(1), 0.0)
    assert picks(disp, "pbx", 4) == {uri(2)}  # 1 is full HERE, though 9 are left in total
    disp.told_limits({uri(1): 2})
    disp.told_calls({uri(2): 5})
    assert picks(disp, "pbx", 1) == {uri(1)}


def test_without_a_told_limit_the_cap_counts_every_member() -> None:
    disp = make(least(dest(1, max_calls=4), dest(2, max_calls=4)))
    disp.told_calls({uri(1): 4, uri(2): 4})
    chosen = disp.choose("pbx")
    assert isinstance(chosen, NoDestination)
    assert chosen.reason is NoDestinationReason.ALL_FULL
    assert disp.local_calls() == {}
