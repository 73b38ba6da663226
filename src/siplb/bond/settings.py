"""What the bond's cores are configured with (built from the bond's TOML file by
``siplb.config.bond``)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Mode(StrEnum):
    """How a flow's datagrams use the links (chosen per flow, at each end for what it sends).

    - ``BALANCED``: each datagram on one link, by weight and measured quality.
    - ``REDUNDANT``: each datagram on every live link; the first copy wins.
    - ``PARITY``: datagrams in groups of up to ``parity_group`` (one fewer than the live links),
      each on its own link, and their XOR on one more, so any one loss in a group is rebuilt.
    """

    BALANCED = "balanced"
    REDUNDANT = "redundant"
    PARITY = "parity"


@dataclass(frozen=True, slots=True)
class HealthSettings:
    """A link is dead after ``max(missed_beats * beat_interval, rtt_multiple * srtt)`` without
    hearing anything on it; a beat goes out on a link that has carried nothing for
    ``beat_interval`` (and at least every ``measure_interval``, to keep RTT and loss current)."""

    beat_interval: float = 0.05
    missed_beats: int = 3
    rtt_multiple: float = 4.0
    measure_interval: float = 0.5
    loss_beats: int = 40  # the beats the loss figure is taken over


@dataclass(frozen=True, slots=True)
class FlowPolicy:
    mode: Mode = Mode.BALANCED
    parity_group: int = 3  # data datagrams per parity datagram, at most
    parity_wait: float = 0.1  # a group that has not filled by then gets its parity anyway
    reorder: float = 0.0  # seconds a datagram ahead of a gap may wait for it (0: no reordering)
