"""One link's health, as one end sees it.

Rules:

- A link starts ``DOWN`` and is ``UP`` as soon as anything authentic arrives on it (an answer
  to a beat or hello, a beat of the peer's, data): "back when it answers".
- An ``UP`` link goes ``DOWN`` after ``dead_after`` seconds without anything arriving on it,
  where ``dead_after = max(missed_beats * beat_interval, rtt_multiple * srtt)``. Each end beats on
  every link it has not sent on for ``beat_interval``, so a quiet but healthy link is never silent
  longer than about one interval plus the one-way delay.
- RTT: a smoothed value over the answers to beats (RFC 6298 gains, 1/8 and 1/4), started
  afresh each time the link comes up; answers to beats sent before that are not samples (they
  may have waited for the path to come back: ARP, a PPPoE reconnect).
- Loss: the share of the last ``loss_beats`` beats that got no answer within ``dead_after``,
  counted from when the link last came up (the beats of a dead link say nothing new).
- A beat also goes out at least every ``measure_interval`` on a busy link, to keep the figures
  current.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum

from .settings import HealthSettings

ALPHA = 1 / 8  # RFC 6298 2.3
BETA = 1 / 4
LOSS_REFRESH = 0.05


class LinkState(StrEnum):
    UP = "up"
    DOWN = "down"


@dataclass(slots=True)
class LinkStats:
    bytes_sent: int = 0
    bytes_received: int = 0
    packets_sent: int = 0
    packets_received: int = 0
    beats_sent: int = 0
    beats_answered: int = 0


@dataclass(slots=True)
class Link:
    id: int
    weight: int
    health: HealthSettings
    state: LinkState = LinkState.DOWN
    peer_down: bool = False  # the peer says it hears nothing on it (a one-way cut)
    srtt: float | None = None
    rttvar: float = 0.0
    last_heard: float = float("-inf")
    last_sent: float = float("-inf")
    last_beat: float = float("-inf")
    up_since: float = float("-inf")
    stats: LinkStats = field(default_factory=LinkStats)
    _beats: deque[tuple[float, bool]] = field(default_factory=deque)
    _loss: float = 0.0
    _loss_at: float = float("-inf")

    @property
    def up(self) -> bool:
        return self.state is LinkState.UP

    def dead_after(self) -> float:
        floor = self.health.missed_beats * self.health.beat_interval
        return max(floor, self.health.rtt_multiple * (self.srtt or 0.0))

    def heard(self, size: int, now: float) -> bool:
        """Something authentic arrived; True when that brought the link up."""
        self.last_heard = now
        self.stats.bytes_received += size
        self.stats.packets_received += 1
        if self.state is LinkState.UP:
            return False
        self.state = LinkState.UP
        self._beats.clear()  # loss is measured while up; being down is already known
        self._loss_at = float("-inf")
        self.srtt, self.up_since = None, now
        return True

    def sent(self, size: int, now: float) -> None:
        self.last_sent = now
        self.stats.bytes_sent += size
        self.stats.packets_sent += 1

    def beat_sent(self, now: float) -> None:
        self.last_beat = now
        self.stats.beats_sent += 1
        self._beats.append((now, False))
        while len(self._beats) > self.health.loss_beats:
            self._beats.popleft()

    def answered(self, sent: float, now: float) -> None:
        """The answer to our beat (or hello) sent at ``sent`` arrived: an RTT sample."""
        if sent > now:
            return  # not a time of ours
        for i, (when, done) in enumerate(self._beats):
            if when == sent and not done:
                self._beats[i] = (when, True)
                self.stats.beats_answered += 1
                break
        sample = now - sent
        if sent < self.up_since:
            return
        if self.srtt is None:
            self.srtt, self.rttvar = sample, sample / 2
        else:
            self.rttvar = (1 - BETA) * self.rttvar + BETA * abs(self.srtt - sample)
            self.srtt = (1 - ALPHA) * self.srtt + ALPHA * sample

    def loss(self, now: float) -> float:
        """Share of the recent beats, old enough to have been answered, that were not (worked
        out again at most every ``LOSS_REFRESH`` seconds: the scheduler asks per datagram)."""
        if now - self._loss_at < LOSS_REFRESH and self._loss_at <= now:
            return self._loss
        due = now - self.dead_after()
        settled = [done for when, done in self._beats if when < due]
        self._loss = settled.count(False) / len(settled) if settled else 0.0
        self._loss_at = now
        return self._loss

    def beat_due(self) -> float:
        """When this link should carry a beat next (maybe already past)."""
        idle = self.last_sent + self.health.beat_interval
        return min(idle, self.last_beat + self.health.measure_interval)

    def death_due(self) -> float | None:
        return self.last_heard + self.dead_after() if self.up else None

    def check(self, now: float) -> bool:
        """True when the link just died: silent for ``dead_after``."""
        due = self.death_due()
        if due is None or now < due:
            return False
        self.state = LinkState.DOWN
        return True
