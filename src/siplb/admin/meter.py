"""Rates and latency figures for the admin views (plain data, no I/O).

``RateHistory`` turns cumulative counters (calls ever answered per destination) sampled once a
second into a per-second rate with a few minutes of history: the dashboard's chart and the
"calls per second" columns. ``latency_stats`` summarises the prober's recent probe times.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

HISTORY_S = 300  # five minutes at one sample a second
SMOOTHING_S = 5  # "calls per second" is the mean of the last five samples


class RateHistory:
    """Per-key rates from cumulative counters, one sample per ``sample`` call."""

    def __init__(self, span: int = HISTORY_S) -> None:
        self.span = span
        self.times: deque[float] = deque(maxlen=span)
        self._series: dict[str, deque[float]] = {}
        self._last: dict[str, int] = {}
        self._last_at: float | None = None

    def sample(self, totals: Mapping[str, int], at: float) -> None:
        """Record the counters' values at ``at``; keys absent from ``totals`` are forgotten."""
        interval = None if self._last_at is None else at - self._last_at
        for key, total in totals.items():
            previous = self._last.get(key)
            rate = 0.0
            if previous is not None and interval is not None and interval > 0:
                rate = max(0, total - previous) / interval  # a counter that went back: 0
            series = self._series.get(key)
            if series is None:
                series = deque([0.0] * len(self.times), maxlen=self.span)
                self._series[key] = series
            series.append(rate)
            self._last[key] = total
        for key in [k for k in self._series if k not in totals]:
            del self._series[key]
            del self._last[key]
        self.times.append(at)
        self._last_at = at

    def rate(self, key: str, window: int = SMOOTHING_S) -> float:
        """Mean rate over the last ``window`` samples (0 for an unknown key)."""
        series = self._series.get(key)
        if not series:
            return 0.0
        n = min(window, len(series))
        return sum(series[i] for i in range(len(series) - n, len(series))) / n

    def series(self, key: str, last: int | None = None) -> list[float]:
        """The per-second rates, oldest first, aligned with ``times`` (zeros before the key)."""
        values = self._series.get(key)
        if values is None:
            values = deque([0.0] * len(self.times))
        out = list(values)
        return out if last is None else out[-last:]

    def summed(self, keys: Iterable[str], last: int | None = None) -> list[float]:
        """The element-wise sum of several keys' series."""
        total = [0.0] * len(self.times)
        for key in keys:
            for i, value in enumerate(self.series(key)):
                total[i] += value
        return total if last is None else total[-last:]


@dataclass(frozen=True, slots=True)
class LatencyStats:
    """Probe round-trip times in milliseconds over the recent samples."""

    avg_ms: float
    p95_ms: float
    samples: int

    def to_json(self) -> dict[str, float | int]:
        return {"avg": round(self.avg_ms, 3), "p95": round(self.p95_ms, 3), "samples": self.samples}


def latency_stats(samples: Iterable[float] | None) -> LatencyStats | None:
    """Mean and 95th percentile (nearest rank) of probe times in seconds; None without any."""
    values = sorted(samples or ())
    if not values:
        return None
    rank = max(1, math.ceil(0.95 * len(values)))
    return LatencyStats(1000 * sum(values) / len(values), 1000 * values[rank - 1], len(values))
