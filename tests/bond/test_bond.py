"""Both ends of a bond on a fake clock (tests/bond/harness.py): links come up, a stream of 50
datagrams/s survives a cut link in each mode, detection takes what the rules say, a link that
comes back is used again, and the server keeps its clients apart."""

from __future__ import annotations

from collections import Counter

import pytest

from siplb.bond import BondServer, Channel, LinkWentDown, LinkWentUp, Mode, Path
from siplb.bond.packet import Data, Parity
from siplb.bond.peer import Bond, Role

from .harness import CLIENT_ID, KEY, Lab

DELAYS = {1: 0.010, 2: 0.020, 3: 0.030, 4: 0.015}  # one way
CUT_AT = 3.0


def loss_window(lab: Lab) -> float:
    """How long the stream lost datagrams: from the first lost one's send time to the last's."""
    missing = sorted(set(range(lab.meter.expected)) - set(lab.meter.arrivals))
    return (missing[-1] - missing[0] + 1) * 0.02 if missing else 0.0


def cut_one(mode: Mode, link: int = 2) -> Lab:
    lab = Lab(DELAYS, mode)
    lab.stream(start=1.0, stop=6.0)
    lab.run(until=CUT_AT)
    lab.cut(link)
    lab.run(until=7.0)
    return lab


def test_links_come_up_at_both_ends_within_a_round_trip() -> None:
    lab = Lab(DELAYS, Mode.BALANCED)
    lab.run(until=0.1)
    assert lab.went(LinkWentUp, "server") == [
        (d, link) for link, d in sorted(DELAYS.items(), key=lambda x: x[1])
    ]
    assert sorted(link for _, link in lab.went(LinkWentUp, "client")) == [1, 2, 3, 4]
    assert all(
        when == pytest.approx(2 * DELAYS[link]) for when, link in lab.went(LinkWentUp, "client")
    )


@pytest.mark.parametrize("mode", list(Mode))
def test_nothing_is_lost_on_healthy_links(mode: Mode) -> None:
    lab = Lab(DELAYS, mode)
    lab.stream(start=1.0, stop=3.0)
    lab.run(until=4.0)
    assert lab.meter.expected == 100
    assert lab.meter.lost == 0


def test_balanced_loses_under_250_ms_on_a_cut() -> None:
    lab = cut_one(Mode.BALANCED)
    assert 0 < lab.meter.lost <= 3
    assert loss_window(lab) < 0.25
    assert lab.meter.longest_gap < 0.1


@pytest.mark.parametrize("mode", [Mode.REDUNDANT, Mode.PARITY])
def test_redundant_and_parity_lose_nothing_on_a_cut(mode: Mode) -> None:
    lab = cut_one(mode)
    assert lab.meter.lost == 0
    assert lab.meter.longest_gap < 0.05
    if mode is Mode.PARITY:
        assert lab.server.bonds[CLIENT_ID].counters.recovered > 0


@pytest.mark.parametrize(("delay", "detected_within"), [(0.010, 0.18), (0.050, 0.45)])
def test_a_cut_is_detected_after_max_of_beats_and_rtt(delay: float, detected_within: float) -> None:
    lab = Lab({1: delay, 2: delay}, Mode.BALANCED)
    lab.run(until=2.0)
    lab.cut(2)
    lab.run(until=4.0)
    ((when, link),) = lab.went(LinkWentDown, "client")
    assert link == 2
    # dead_after: max(3 x 50 ms, 4 x RTT); the last thing heard left the server before the cut
    rtt = 2 * delay
    assert when - CUT_AT + 1.0 == pytest.approx(max(0.15, 4 * rtt), abs=delay + 0.05)
    assert when - 2.0 < detected_within


@pytest.mark.parametrize("mode", [Mode.REDUNDANT, Mode.PARITY])
def test_two_links_cut_one_after_the_other(mode: Mode) -> None:
    lab = Lab(DELAYS, mode)
    lab.stream(start=1.0, stop=6.0)
    lab.run(until=2.0)
    lab.cut(2)
    lab.run(until=3.5)
    lab.cut(4)
    lab.run(until=7.0)
    assert lab.meter.lost == 0
    assert [link for _, link in lab.went(LinkWentDown, "client")] == [2, 4]


def test_a_link_that_comes_back_is_used_again() -> None:
    lab = Lab(DELAYS, Mode.BALANCED)
    lab.stream(start=1.0, stop=8.0)
    lab.run(until=2.0)
    lab.cut(3)
    lab.run(until=4.0)
    lab.restore(3)
    lab.run(until=9.0)
    ups = [when for when, link in lab.went(LinkWentUp, "client") if link == 3]
    assert len(ups) == 2
    assert 4.0 < ups[1] < 4.2
    after = Counter(link for when, link in lab.to_server if when > 5.0)
    assert after[3] == pytest.approx(after[1], abs=2)


def test_weights_share_the_datagrams() -> None:
    lab = Lab({1: 0.01, 2: 0.01}, Mode.BALANCED, weights={1: 3, 2: 1})
    lab.stream(start=1.0, stop=5.0)
    lab.run(until=6.0)
    sent = Counter(link for _, link in lab.to_server)
    assert sent[1] == pytest.approx(3 * sent[2], abs=3)


# (mode, datagrams on the wire per datagram sent, with four links)
WIRE = [(Mode.BALANCED, 1.0), (Mode.REDUNDANT, 4.0), (Mode.PARITY, 4 / 3)]


@pytest.mark.parametrize(("mode", "copies"), WIRE)
def test_datagrams_on_the_wire_per_mode(mode: Mode, copies: float) -> None:
    lab = Lab(DELAYS, mode)
    lab.stream(start=1.0, stop=4.0)
    lab.run(until=5.0)
    assert len(lab.to_server) / lab.meter.expected == pytest.approx(copies, rel=0.02)


def client_bond(client: int, key: bytes) -> Bond:
    lab = Lab({1: 0.01}, Mode.BALANCED)
    return Bond(
        role=Role.CLIENT,
        client=client,
        key=key,
        links={1: 1},
        flows=lab.client.flows,
        health=lab.health,
        first_number=1,
    )


def server_for(keys: dict[int, bytes]) -> BondServer:
    lab = Lab({1: 0.01}, Mode.BALANCED)
    return BondServer(keys=keys, flows=lab.client.flows, health=lab.health, first_number=1)


def sent_data(bond: Bond, payload: bytes) -> bytes:
    bond.send(Channel(1), payload, 0.0)
    return bond.datagrams_to_send()[-1].data


def delivered(server: BondServer) -> list[tuple[int, bytes]]:
    out = []
    while (event := server.next_event()) is not None:
        if hasattr(event.event, "payload"):
            out.append((event.client, event.event.payload))
    return out


def test_two_clients_on_one_server_each_with_its_key() -> None:
    server = server_for({1: KEY, 2: bytes(32)})
    first, second = client_bond(1, KEY), client_bond(2, bytes(32))
    server.receive(sent_data(first, b"one"), Path(("a", 1), "s"), 0.0)
    server.receive(sent_data(second, b"two"), Path(("b", 1), "s"), 0.0)
    assert delivered(server) == [(1, b"one"), (2, b"two")]
    assert server.paths == {(1, 1): Path(("a", 1), "s"), (2, 1): Path(("b", 1), "s")}


def test_a_client_posing_as_another_is_dropped_and_moves_no_link() -> None:
    server = server_for({1: KEY, 2: bytes(32)})
    server.receive(sent_data(client_bond(1, KEY), b"mine"), Path(("a", 1), "s"), 0.0)
    delivered(server)
    impostor = client_bond(1, bytes(32))  # claims to be client 1 with client 2's key
    server.receive(sent_data(impostor, b"forged"), Path(("evil", 9), "s"), 0.0)
    assert delivered(server) == []
    assert server.paths[1, 1] == Path(("a", 1), "s")
    assert server.bonds[1].counters.dropped == 1


def test_a_replayed_packet_is_dropped_even_from_another_address() -> None:
    server = server_for({1: KEY})
    data = sent_data(client_bond(1, KEY), b"once")
    server.receive(data, Path(("a", 1), "s"), 0.0)
    server.receive(data, Path(("evil", 9), "s"), 0.0)
    assert delivered(server) == [(1, b"once")]
    assert server.paths[1, 1] == Path(("a", 1), "s")


def test_an_unknown_client_is_counted() -> None:
    server = server_for({1: KEY})
    server.receive(sent_data(client_bond(3, KEY), b"who"), Path(("a", 1), "s"), 0.0)
    server.receive(b"junk", Path(("a", 1), "s"), 0.0)
    assert server.unknown == 2


def test_a_group_that_does_not_fill_gets_its_parity_after_parity_wait() -> None:
    lab = Lab(DELAYS, Mode.PARITY)
    lab.run(until=1.0)
    bond = lab.client
    bond.send(Channel(1), b"lonely", 1.0)
    assert [t.data[1] for t in bond.datagrams_to_send()] == [5]  # DATA
    timer = bond.get_timer()
    assert timer is not None
    assert timer <= 1.0 + bond.flows[1].parity_wait
    bond.handle_timer(1.0 + bond.flows[1].parity_wait)
    kinds = [t.data[1] for t in bond.datagrams_to_send()]
    assert 6 in kinds  # PARITY (of a group of one: a copy on another link)


def test_a_restarted_client_is_accepted_again() -> None:
    """Its packet numbers and sequence numbers start from the wall clock, above the old ones."""
    server = server_for({1: KEY})
    old = client_bond(1, KEY)
    server.receive(sent_data(old, b"before"), Path(("a", 1), "s"), 0.0)
    restarted = Bond(
        role=Role.CLIENT,
        client=1,
        key=KEY,
        links={1: 1},
        flows=old.flows,
        health=old.health,
        first_number=1_000_000,
    )
    server.receive(sent_data(restarted, b"after"), Path(("a", 2), "s"), 1.0)
    assert delivered(server) == [(1, b"before"), (1, b"after")]
    assert server.paths[1, 1] == Path(("a", 2), "s")  # the link moved (a new source port)


@pytest.mark.parametrize("toward", ["client", "server"])
def test_a_link_cut_one_way_is_left_by_both_ends(toward: str) -> None:
    lab = Lab(DELAYS, Mode.BALANCED)
    lab.run(until=1.0)
    lab.cut(2, toward=toward)
    lab.run(until=2.0)
    server = lab.server.bonds[CLIENT_ID]
    assert [link.id for link in lab.client.live_links()] == [1, 3, 4]
    assert [link.id for link in server.live_links()] == [1, 3, 4]
    lab.restore(2)
    lab.run(until=2.5)
    assert [link.id for link in lab.client.live_links()] == [1, 2, 3, 4]
    assert [link.id for link in server.live_links()] == [1, 2, 3, 4]


def test_a_reorder_window_delivers_in_sequence_across_a_cut() -> None:
    """Links of 10 to 30 ms one way reorder a stream of 200 datagrams/s all the time; with a
    window longer than their spread, what arrives is in sequence, and nothing waits longer than
    the window."""
    window = 0.03
    lab = Lab(DELAYS, Mode.PARITY, reorder=window)
    lab.stream(start=1.0, stop=6.0, rate=200)
    lab.run(until=CUT_AT)
    lab.cut(2)
    lab.run(until=7.0)
    assert lab.meter.lost == 0
    assert lab.meter.order == sorted(lab.meter.order)
    late = [when - (1.0 + seq / 200) for seq, when in lab.meter.arrivals.items()]
    assert max(late) <= max(DELAYS.values()) + window + 1e-9
    assert lab.server.bonds[CLIENT_ID].counters.reorder_skipped == 0


def test_without_a_window_the_spread_links_reorder() -> None:
    lab = Lab(DELAYS, Mode.PARITY)
    lab.stream(start=1.0, stop=3.0, rate=200)
    lab.run(until=4.0)
    assert lab.meter.order != sorted(lab.meter.order)


def groups_on_the_wire(lab: Lab) -> list[list[int]]:
    """The links each parity group went on (its datagrams', then its parity's)."""
    links_of = {body.seq: link for link, body in lab.wire if isinstance(body, Data)}
    return [
        [links_of[seq] for seq in range(body.first, body.first + body.count)] + [link]
        for link, body in lab.wire
        if isinstance(body, Parity)
    ]


# (link cut, when, when it comes back): the live set changes in the middle of groups
CHANGES = [(link, 2.0 + i * 0.007, 3.0 + i * 0.011) for link in (1, 2, 3, 4) for i in range(6)]


@pytest.mark.parametrize(("link", "cut_at", "back_at"), CHANGES)
def test_a_group_never_puts_two_of_its_datagrams_on_one_link(
    link: int, cut_at: float, back_at: float
) -> None:
    """Whatever link fails, every group has lost at most one and is rebuilt: its datagrams
    and its parity each went on a link of their own, also when a link died or came back (or
    the peer stopped or started hearing one) in the middle of the group."""
    lab = Lab(DELAYS, Mode.PARITY)
    lab.stream(start=1.0, stop=4.0)
    lab.run(until=cut_at)
    lab.cut(link)
    lab.run(until=back_at)
    lab.restore(link)
    lab.run(until=5.0)
    groups = groups_on_the_wire(lab)
    assert len(groups) > 40
    shared = [links for links in groups if len(set(links)) != len(links)]
    assert shared == []
    assert lab.meter.lost == 0


# (first link cut, when, second link cut, when): the second is cut before the first is noticed
OVERLAPPING = [(1, 2.0, 4, 2.12), (1, 2.0132, 4, 2.1032), (2, 2.0, 4, 2.12)]


@pytest.mark.parametrize(("first", "first_at", "second", "second_at"), OVERLAPPING)
def test_a_link_noticed_dead_mid_group_moves_nothing_onto_another_failing_link(
    first: int, first_at: float, second: int, second_at: float
) -> None:
    """The first link is declared dead in the middle of a group while the second is already
    cut: the rest of the group must not go on a link the group has used (once picked by its
    place among the live links, two datagrams of one group landed on the second link and
    both were lost)."""
    lab = Lab(DELAYS, Mode.PARITY)
    lab.stream(start=1.0, stop=4.0)
    lab.run(until=first_at)
    lab.cut(first)
    lab.run(until=second_at)
    lab.cut(second)
    lab.run(until=5.0)
    assert lab.meter.lost == 0
