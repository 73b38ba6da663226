"""The media engines as the admin side shows them: ``/api/status``'s ``media`` object and the
``siplb_media_*`` metrics, both read from ``MediaView`` when asked (nothing kept between)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from siplb.media.engines import OFFER_BUCKETS, EngineState, MediaView

from .client import format_duration

JSON = dict[str, Any]
FAILURE_OPS = ("offer", "answer", "delete", "ping")  # every op label, so a rate() sees 0 first


def media_json(view: MediaView | None, wall: Callable[[float], float]) -> JSON | None:
    """``/api/status`` ``media``: None without ``[media]``. ``wall`` turns a loop time into
    seconds since the epoch."""
    if view is None:
        return None
    return {
        "engines": [
            {
                "address": reading.address,
                "state": str(reading.state),
                "since": round(wall(reading.since), 3),
                "weight": reading.weight,
                "calls": reading.calls,
                "offers": reading.offers,
                "offer_p50_ms": _ms(reading.offer_p50_ms),
                "offer_max_ms": _ms(reading.offer_max_ms),
                "failures": dict(reading.failures),
            }
            for reading in view.engines
        ],
        "calls": view.calls,
        "forgotten": view.forgotten,
        "pending": view.pending,
        "counters": dict(view.counters),
    }


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def media_metrics(view: MediaView) -> Iterator[Metric]:
    """``siplb_media_*``: engine state, calls, offer latency, failures, the client's drops."""
    up = GaugeMetricFamily(
        "siplb_media_engine_up",
        "1 while the media engine answers (unknown until its first reply counts as 0).",
        labels=["engine"],
    )
    calls = GaugeMetricFamily(
        "siplb_media_calls", "Calls whose media is on the engine.", labels=["engine"]
    )
    offers = HistogramMetricFamily(
        "siplb_media_offer_seconds",
        "Time from sending an offer to the engine's ok reply.",
        labels=["engine"],
    )
    failures = CounterMetricFamily(
        "siplb_media_failures",
        "Engine commands that got an error reply or none, by command.",
        labels=["engine", "op"],
    )
    for reading in view.engines:
        up.add_metric([reading.address], 1 if reading.state is EngineState.UP else 0)
        calls.add_metric([reading.address], reading.calls)
        pairs = zip(OFFER_BUCKETS, reading.offer_buckets, strict=True)
        buckets = [(f"{bound:g}", count) for bound, count in pairs]
        offers.add_metric(
            [reading.address],
            [*buckets, ("+Inf", reading.offers)],
            sum_value=reading.offer_seconds,
        )
        counts = dict(reading.failures)
        for op in sorted({*FAILURE_OPS, *counts}):
            failures.add_metric([reading.address, op], counts.get(op, 0))
    yield from (up, calls, offers, failures)
    dropped = CounterMetricFamily(
        "siplb_media_client_events",
        "The engine client's events: replies dropped (unknown_cookie, malformed), commands "
        "refused (busy), timed out, failed at once (unreachable), asks with no engine "
        "(no_engine) or failed on every engine (failed).",
        labels=["event"],
    )
    for name, count in view.counters:
        dropped.add_metric([name], count)
    yield dropped
    yield GaugeMetricFamily(
        "siplb_media_pending", "Engine commands waiting for a reply.", value=view.pending
    )


# ---- ``siplb status``: the engines table ------------------------------------------------------
MEDIA_COLUMNS = (
    ("State", 7, "<"),
    ("Weight", 6, ">"),
    ("Calls", 7, ">"),
    ("Offers", 8, ">"),
    ("p50(ms)", 8, ">"),
    ("max(ms)", 8, ">"),
    ("Fails", 6, ">"),
    ("Since", 8, ">"),
)


def format_media(media: Any, now: float) -> str:
    """``siplb status``'s engine lines, from ``/api/status`` ``media``; ``now``: epoch seconds."""
    engines = media["engines"]
    up = sum(1 for engine in engines if engine["state"] == "up")
    lines = [
        f"Media: {len(engines)} engine{'' if len(engines) == 1 else 's'}, {up} up; "
        f"{media['calls']} call{'' if media['calls'] == 1 else 's'} anchored; "
        f"{media['pending']} command{'' if media['pending'] == 1 else 's'} waiting"
    ]
    width = max([24, *(len(engine["address"]) + 5 for engine in engines)])
    head = (name for name, _, _ in MEDIA_COLUMNS)
    lines.append("  -> Engine".ljust(width) + " " + _media_row(head))
    lines.extend(
        f"  -> {engine['address']}".ljust(width) + " " + _media_row(_cells(engine, now))
        for engine in engines
    )
    return "\n".join(lines)


def _cells(engine: Any, now: float) -> list[str]:
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}"

    return [
        engine["state"],
        str(engine["weight"]),
        str(engine["calls"]),
        str(engine["offers"]),
        ms(engine["offer_p50_ms"]),
        ms(engine["offer_max_ms"]),
        str(sum(engine["failures"].values())),
        format_duration(max(0.0, now - engine["since"])),
    ]


def _media_row(cells: Any) -> str:
    out = []
    for (_, width, align), cell in zip(MEDIA_COLUMNS, cells, strict=True):
        out.append(cell.ljust(width) if align == "<" else cell.rjust(width))
    return " ".join(out).rstrip()
