"""Capacity leases (``siplb.cluster.leases``): a cap held across members with no race."""

from __future__ import annotations

from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from siplb.cluster.leases import Leases, grant, headroom

URI = "sip:pbx1"

# (cap, want, others' leases, granted)
GRANTS = [
    (100, 10, 0, 10),
    (100, 10, 95, 5),
    (100, 10, 100, 0),
    (100, 10, 120, 0),  # others over the cap (a cap lowered): nothing, never negative
    (0, 1, 0, 0),
]


@pytest.mark.parametrize(("cap", "want", "others", "granted"), GRANTS)
def test_grant(cap: int, want: int, others: int, granted: int) -> None:
    assert grant(cap, want, others) == granted


def test_headroom() -> None:
    assert headroom(100, 1) == 25
    assert headroom(100, 3) == 9
    assert headroom(2, 4) == 1


def test_alone_the_lease_is_the_cap() -> None:
    leases = Leases()
    leases.set_caps({URI: 10})
    assert leases.alone
    assert leases.asks({URI: 9}) == {}
    assert leases.limits() == {URI: 10}
    assert leases.lease(URI) == 10
    assert leases.lease("sip:uncapped") is None


def test_in_a_cluster_nothing_until_granted_then_ask_when_running_out() -> None:
    leases = Leases()
    leases.set_caps({URI: 100})
    leases.members_changed(2)  # headroom 13
    assert leases.limits() == {URI: 0}
    assert leases.asks({}) == {URI: 13}
    leases.granted(URI, 13)
    assert leases.limits() == {URI: 13}
    assert leases.asks({URI: 11}) == {}  # 11 + 1 < 13
    assert leases.asks({URI: 12}) == {URI: 25}  # about to run out
    leases.granted(URI, 25)
    assert leases.asks({URI: 12}) == {}


def test_give_back_lowers_the_lease_at_once() -> None:
    leases = Leases(members=2)
    leases.set_caps({URI: 100})
    leases.granted(URI, 60)
    assert leases.asks({URI: 5}) == {URI: 18}  # 60 > 18 + 2 * 13
    assert leases.limits() == {URI: 18}  # before the store hears of it
    assert leases.asks({URI: 5}) == {}


def test_a_cap_removed_is_given_back_and_leaving_the_cluster_restores_the_cap() -> None:
    leases = Leases(members=3)
    leases.set_caps({URI: 10, "sip:b": 4})
    leases.granted(URI, 4)
    leases.set_caps({"sip:b": 4})
    assert leases.asks({}) == {URI: 0, "sip:b": 1}
    leases.members_changed(1)
    assert leases.limits() == {"sip:b": 4}
    leases.members_changed(2)
    assert leases.limits() == {"sip:b": 0}


def test_want_never_exceeds_the_cap() -> None:
    leases = Leases(members=2)
    leases.set_caps({URI: 3})
    assert leases.asks({URI: 3}) == {URI: 3}


STEP = st.tuples(st.sampled_from(["ask", "grant", "start", "end"]), st.integers(0, 3))


@settings(max_examples=300, deadline=None)
@given(
    cap=st.integers(0, 20),
    members=st.integers(2, 4),
    steps=st.lists(STEP, max_size=300),
)
def test_the_cap_holds_across_members(cap: int, members: int, steps: list[tuple[str, int]]) -> None:
    """Members ask, the store grants (atomically, against the sum of the others' leases) in any
    interleaving with calls starting and ending; each member admits while active < its lease."""
    sides = [Leases(members) for _ in range(members)]
    for side in sides:
        side.set_caps({URI: cap})
    store = [0] * members  # the lease the store counts for each member
    pending: list[deque[int]] = [deque() for _ in range(members)]
    active = [0] * members
    for what, index in steps:
        m = index % members
        if what == "ask":
            want = sides[m].asks({URI: active[m]}).get(URI)
            if want is not None:
                pending[m].append(want)
        elif what == "grant" and pending[m]:
            others = sum(store) - store[m]
            store[m] = grant(cap, pending[m].popleft(), others)
            sides[m].granted(URI, store[m])
        elif what == "start" and active[m] < sides[m].limits()[URI]:
            active[m] += 1
        elif what == "end" and active[m] > 0:
            active[m] -= 1
        assert sum(active) <= cap
        assert sum(store) <= cap
        assert all(sides[i].limits()[URI] <= store[i] for i in range(members))
