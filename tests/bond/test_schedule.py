"""Scheduling in ``balanced`` mode (siplb/bond/schedule.py): shares by weight, spread evenly,
smaller for a lossy or slow link."""

from __future__ import annotations

from collections import Counter

import pytest

from siplb.bond.link import Link
from siplb.bond.schedule import Balancer
from siplb.bond.settings import HealthSettings

HEALTH = HealthSettings()


def links(weights: dict[int, int]) -> list[Link]:
    return [Link(link, weight, HEALTH) for link, weight in weights.items()]


WEIGHTS = [
    ({1: 1, 2: 1, 3: 1, 4: 1}, {1: 100, 2: 100, 3: 100, 4: 100}),
    ({1: 2, 2: 1, 3: 1}, {1: 200, 2: 100, 3: 100}),
    ({1: 5, 2: 3}, {1: 250, 2: 150}),
]


@pytest.mark.parametrize(("weights", "shares"), WEIGHTS)
def test_shares_follow_weights(weights: dict[int, int], shares: dict[int, int]) -> None:
    balancer, pool = Balancer(), links(weights)
    picks = Counter(balancer.pick(pool, 0.0).id for _ in range(sum(shares.values())))
    assert dict(picks) == shares


def test_turns_are_spread_evenly() -> None:
    balancer, pool = Balancer(), links({1: 2, 2: 1, 3: 1})
    assert [balancer.pick(pool, 0.0).id for _ in range(8)] == [1, 2, 3, 1, 1, 2, 3, 1]


def lossy(link: Link, loss_every: int) -> None:
    for i in range(40):
        link.beat_sent(i * 0.01)
        if i % loss_every:
            link.answered(i * 0.01, i * 0.01 + 0.001)


def test_a_lossy_link_gets_less() -> None:
    balancer, pool = Balancer(), links({1: 1, 2: 1})
    lossy(pool[1], loss_every=4)  # 25% loss: half its weight
    picks = Counter(balancer.pick(pool, 10.0).id for _ in range(300))
    assert picks[1] == 200
    assert picks[2] == 100


def test_a_much_slower_link_gets_half() -> None:
    balancer, pool = Balancer(), links({1: 1, 2: 1})
    for link, rtt in zip(pool, (0.02, 0.2), strict=True):
        link.beat_sent(0.0)
        link.answered(0.0, rtt)
    picks = Counter(balancer.pick(pool, 1.0).id for _ in range(300))
    assert picks == {1: 200, 2: 100}
