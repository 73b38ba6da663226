"""The optional reorder window (siplb/bond/reorder.py), on a fake clock: what is in order passes
at once, a gap is waited for at most the window, and no more than the cap is held."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from siplb.bond import Channel, Delivered, FlowPolicy, HealthSettings, Mode, Role
from siplb.bond.peer import Bond
from siplb.bond.reorder import ReorderWindow

WINDOW = 0.03
STEP = 0.02  # one datagram every 20 ms


def payload(seq: int) -> bytes:
    return seq.to_bytes(4, "big")


def test_in_order_passes_straight_through() -> None:
    window = ReorderWindow(WINDOW)
    for seq in range(100, 110):
        released = window.push(seq, payload(seq), seq * STEP)
        assert released.payloads == [payload(seq)]
        assert window.deadline() is None
    assert len(window) == 0


def test_a_swap_is_delivered_in_order() -> None:
    window = ReorderWindow(WINDOW)
    assert window.push(0, payload(0), 0.00).payloads == [payload(0)]
    assert window.push(2, payload(2), 0.02).payloads == []
    assert window.deadline() == 0.02 + WINDOW
    released = window.push(1, payload(1), 0.025)
    assert released.payloads == [payload(1), payload(2)]
    assert released.skipped == 0
    assert window.deadline() is None


def test_a_lost_datagram_delays_the_next_by_at_most_the_window() -> None:
    window = ReorderWindow(WINDOW)
    window.push(0, payload(0), 0.00)  # 1 is lost
    assert window.push(2, payload(2), 0.02).payloads == []
    assert window.push(3, payload(3), 0.04).payloads == []
    due = window.deadline()
    assert due == 0.02 + WINDOW
    assert window.expire(due - 0.001).payloads == []
    released = window.expire(due)
    assert released.payloads == [payload(2), payload(3)]
    assert released.skipped == 1
    assert window.push(4, payload(4), 0.06).payloads == [payload(4)]
    late = window.push(1, payload(1), 0.07)  # after its gap was skipped: late, not lost
    assert (late.payloads, late.late) == ([payload(1)], 1)


def test_each_datagram_waits_from_its_own_arrival() -> None:
    window = ReorderWindow(WINDOW)
    window.push(0, payload(0), 0.00)  # 1 and 3 are lost
    window.push(2, payload(2), 0.02)
    window.push(4, payload(4), 0.06)
    assert window.expire(0.05).payloads == [payload(2)]
    assert window.deadline() == 0.06 + WINDOW
    released = window.expire(0.09)
    assert released.payloads == [payload(4)]
    assert released.skipped == 1


def test_the_cap_holds() -> None:
    window = ReorderWindow(10.0, max_held=4)
    window.push(0, payload(0), 0.0)  # 1 is lost; 2.. pile up behind it
    for seq in range(2, 6):
        assert window.push(seq, payload(seq), seq * STEP).payloads == []
    assert len(window) == 4
    released = window.push(6, payload(6), 6 * STEP)
    assert released.payloads == [payload(seq) for seq in range(2, 7)]
    assert released.skipped == 1
    assert len(window) == 0


def test_a_restarted_peer_is_not_waited_for() -> None:
    window = ReorderWindow(WINDOW)
    window.push(5, payload(5), 0.0)
    window.push(7, payload(7), 0.01)  # held for 6
    assert window.push(10**12, b"new", 0.02).payloads == [payload(7), b"new"]
    assert len(window) == 0
    assert window.push(10**12 + 1, b"next", 0.04).payloads == [b"next"]


@given(st.permutations(range(40)), st.sets(st.integers(0, 39)), st.integers(1, 8))
def test_everything_goes_out_once_and_in_order_unless_late(
    order: list[int], lost: set[int], cap: int
) -> None:
    window = ReorderWindow(WINDOW, max_held=cap)
    out: list[int] = []
    late = 0
    now = 0.0
    for seq in (seq for seq in order if seq not in lost):
        now += 0.001
        for released in (window.expire(now), window.push(seq, payload(seq), now)):
            out += [int.from_bytes(p, "big") for p in released.payloads]
            late += released.late
        assert len(window) <= cap
    out += [int.from_bytes(p, "big") for p in window.expire(now + WINDOW).payloads]
    assert sorted(out) == sorted(set(range(40)) - lost)
    in_order = [b > a for a, b in itertools.pairwise(out)]
    assert in_order.count(False) <= late


def bond(role: Role, reorder: float) -> Bond:
    policy = FlowPolicy(Mode.PARITY, parity_group=3, reorder=reorder)
    return Bond(
        role=role,
        client=1,
        key=bytes(32),
        links=dict.fromkeys([1, 2, 3, 4], 1) if role is Role.CLIENT else {},
        flows={1: policy},
        health=HealthSettings(),
        first_number=1,
    )


def delivered(bond: Bond) -> list[bytes]:
    out = []
    while (event := bond.next_event()) is not None:
        if isinstance(event, Delivered):
            out.append(event.payload)
    return out


def test_a_parity_rebuild_fills_the_gap() -> None:
    client, server = bond(Role.CLIENT, 0.0), bond(Role.SERVER, WINDOW)
    for seq in range(3):
        client.send(Channel(1), payload(seq), 0.0)
    d0, _d1, d2, parity = client.datagrams_to_send()
    server.receive(d0.data, 0.01)
    server.receive(d2.data, 0.01)  # d1 is lost
    assert delivered(server) == [payload(0)]
    assert server.get_timer() is not None
    server.receive(parity.data, 0.012)
    assert delivered(server) == [payload(1), payload(2)]
    assert server.counters.recovered == 1
    assert server.counters.reorder_skipped == 0


def test_the_bond_lets_a_gap_go_at_its_timer() -> None:
    client, server = bond(Role.CLIENT, 0.0), bond(Role.SERVER, WINDOW)
    for seq in range(3):
        client.send(Channel(1), payload(seq), 0.0)
    d0, _d1, d2, _parity = client.datagrams_to_send()  # d1 and the parity are lost
    server.receive(d0.data, 0.01)
    server.receive(d2.data, 0.01)
    delivered(server)
    due = server.get_timer()
    assert due is not None
    assert due <= 0.01 + WINDOW
    server.handle_timer(0.01 + WINDOW)
    assert delivered(server) == [payload(2)]
    assert server.counters.reorder_skipped == 1
