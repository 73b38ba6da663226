"""What the demo shows: the live table of destinations, the caller's totals, the events.

Rendering is a pure function of a ``Frame`` (a snapshot taken by the runner), with or without
ANSI colours; the runner decides when and where to print it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

CLEAR: Final = "\x1b[H\x1b[2J"
HIDE_CURSOR: Final = "\x1b[?25l"
SHOW_CURSOR: Final = "\x1b[?25h"
_RESET: Final = "\x1b[0m"
_BOLD: Final = "\x1b[1m"
_DIM: Final = "\x1b[2m"
_STATE_COLOURS: Final = {
    "up": "\x1b[32m",
    "suspect": "\x1b[33m",
    "down": "\x1b[31m",
    "draining": "\x1b[35m",
    "disabled": "\x1b[35m",
}


@dataclass(frozen=True, slots=True)
class Row:
    """One destination as the balancer sees it, and what its demo PBX is really doing."""

    name: str
    uri: str
    state: str
    cause: str
    weight: int
    active_calls: int  # the balancer's count
    latency_ms: float | None
    answering: bool  # the demo PBX's switch
    pbx_calls: int  # the demo PBX's own count of dialogs


@dataclass(frozen=True, slots=True)
class Totals:
    placed: int
    answered: int
    in_call: int  # answered, no BYE sent yet
    setting_up: int
    completed: int
    cancelled: int
    lost: int  # failed or dropped calls a PBX outage of the script explains
    failed: int  # every other failure
    failovers: int
    probes_ok: int
    probes_failed: int
    hanging_up: int = 0  # BYE sent, its answer awaited (the balancer no longer counts them)
    given_up: int = 0  # given up when stopping, their INVITE still open at the balancer


@dataclass(frozen=True, slots=True)
class Frame:
    elapsed: float
    listen: str
    set_name: str
    algorithm: str
    rows: Sequence[Row]
    totals: Totals
    now: str  # what is happening, in a sentence
    events: Sequence[str]
    dashboard: str = ""  # "URL (token ...)" of the admin API and dashboard, when it runs


def render(frame: Frame, *, colour: bool) -> str:
    def paint(text: str, code: str) -> str:
        return f"{code}{text}{_RESET}" if colour else text

    lines = [
        paint(
            f"siplb demo   balancer udp {frame.listen}   set {frame.set_name} "
            f"({frame.algorithm})   {frame.elapsed:6.1f} s   Ctrl-C stops",
            _BOLD,
        ),
        *([f"dashboard    {frame.dashboard}"] if frame.dashboard else []),
        "",
        paint(
            f"  {'pbx':<5} {'destination':<20} {'state':<8} {'cause':<22} {'weight':>6} "
            f"{'calls':>5}  {'pbx says':<13} {'probe':>8}",
            _DIM,
        ),
    ]
    for row in frame.rows:
        state = f"{row.state:<8}"
        if colour:
            state = paint(state, _STATE_COLOURS.get(row.state, ""))
        pbx = f"{'answering' if row.answering else 'SILENT':<9} {row.pbx_calls:>3}"
        if colour and not row.answering:
            pbx = paint(pbx, _STATE_COLOURS["down"])
        latency = "-" if row.latency_ms is None else f"{row.latency_ms:.1f} ms"
        lines.append(
            f"  {row.name:<5} {row.uri:<20} {state} {_cut(row.cause, 22):<22} {row.weight:>6} "
            f"{row.active_calls:>5}  {pbx:<13} {latency:>8}"
        )
    lines += ["", *totals_lines(frame.totals), f"  now      {frame.now}", ""]
    lines.append(paint("  events", _DIM))
    lines += [f"    {event}" for event in frame.events]
    return "\n".join(lines) + "\n"


def totals_lines(t: Totals) -> list[str]:
    return [
        f"  calls    placed {t.placed}  answered {t.answered}  in call {t.in_call}  "
        f"setting up {t.setting_up}  hanging up {t.hanging_up}",
        f"           completed {t.completed}  cancelled {t.cancelled}  "
        f"lost with a stopped pbx {t.lost}  failed {t.failed}",
        f"  balancer failovers {t.failovers}  probes answered {t.probes_ok}  "
        f"unanswered {t.probes_failed}",
    ]


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "~"
