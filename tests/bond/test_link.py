"""Link health (siplb/bond/link.py) on a fake clock: detection after
``max(missed_beats * beat_interval, rtt_multiple * srtt)``, RTT smoothing, loss from beats."""

from __future__ import annotations

import pytest

from siplb.bond.link import Link, LinkState
from siplb.bond.settings import HealthSettings

HEALTH = HealthSettings(beat_interval=0.05, missed_beats=3, rtt_multiple=4.0)

# (RTT samples, when the link is declared dead after the last thing heard at t=10)
DETECTION = [
    ([], 0.15),  # no RTT yet: three beat intervals
    ([0.02], 0.15),  # 4 x 20 ms = 80 ms is less than three beats
    ([0.1], 0.4),  # 4 x 100 ms
    ([0.3], 1.2),  # a slow satellite link is given longer
]


@pytest.mark.parametrize(("samples", "dead_after"), DETECTION)
def test_detection_time(samples: list[float], dead_after: float) -> None:
    link = Link(1, 1, HEALTH)
    link.heard(0, -1.0)
    for i, rtt in enumerate(samples):
        link.beat_sent(float(i))
        link.answered(float(i), i + rtt)
    link.heard(100, 10.0)
    assert link.death_due() == pytest.approx(10.0 + dead_after)
    assert not link.check(10.0 + dead_after - 0.001)
    assert link.check(10.0 + dead_after)
    assert link.state is LinkState.DOWN
    assert link.death_due() is None


def test_back_when_it_answers() -> None:
    link = Link(1, 1, HEALTH)
    assert link.heard(10, 0.0)
    assert link.check(1.0)
    assert link.heard(10, 2.0)  # came up again
    assert not link.heard(10, 2.01)


def test_rtt_is_smoothed() -> None:
    link = Link(1, 1, HEALTH)
    link.heard(10, 0.0)
    link.answered(-5.0, 0.1)  # sent while the link was down: maybe held up, not a sample
    assert link.srtt is None
    link.beat_sent(0.0)
    link.answered(0.0, 0.1)
    assert link.srtt == pytest.approx(0.1)
    link.beat_sent(1.0)
    link.answered(1.0, 1.9)
    assert link.srtt == pytest.approx(0.1 * 7 / 8 + 0.9 / 8)


def test_an_answer_from_the_future_is_ignored() -> None:
    link = Link(1, 1, HEALTH)
    link.answered(5.0, 1.0)
    assert link.srtt is None


def test_loss_counts_unanswered_beats_once_they_are_due() -> None:
    link = Link(1, 1, HEALTH)
    for i in range(10):
        link.beat_sent(i * 0.1)
        if i % 2 == 0:
            link.answered(i * 0.1, i * 0.1 + 0.01)
    assert link.loss(now=2.0) == pytest.approx(0.5)
    assert link.loss(now=0.0) == 0.0  # nothing is due yet


def test_beats_while_idle_and_at_least_every_measure_interval() -> None:
    link = Link(1, 1, HEALTH)
    link.sent(100, 1.0)
    link.beat_sent(0.9)
    assert link.beat_due() == pytest.approx(1.05)
    for t in range(100):
        link.sent(100, 1.0 + t * 0.02)  # busy: data every 20 ms
    assert link.beat_due() == pytest.approx(0.9 + HEALTH.measure_interval)
