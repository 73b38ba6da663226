"""The figures of the benchmark: what each one runs and which number it keeps.

Every figure runs siplb and Kamailio alternately (siplb, Kamailio, siplb, Kamailio ...), one pair
after the other, each run with fresh processes; a pair's ratio is siplb's value over Kamailio's.

    cpu500   CPU per call of the balancer's process tree at 500 calls/s for 20 s   (lower wins)
    cpu2000  the same at 2000 calls/s for 10 s                                     (lower wins)
    sweep    highest rate with 0 failed calls and 0 retransmissions, 10 s a step   (higher wins)
    latency  share of calls whose setup (INVITE to 200) took 10 ms or more, 1000 calls/s
    memory   PSS growth per active call with 20,000 calls held open                (lower wins)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from calls import Run, run_calls

SHORT_HOLD_MS = 100  # calls of the CPU, sweep and latency figures: answered, held 0.1 s, BYE
SWEEP_RATES = tuple(range(500, 6001, 500))  # steps of 500 calls/s
SWEEP_STOP_AFTER = 2  # unclean steps in a row that end a sweep (the curve past the ceiling)


@dataclass(frozen=True, slots=True)
class Plan:
    """What one figure runs: a fixed load (rate x seconds) or a sweep over ``rates``."""

    name: str
    title: str
    unit: str
    better: str  # "lower" or "higher"
    rate: float = 0.0
    seconds: float = 0.0
    hold_ms: int = SHORT_HOLD_MS
    calls: int = 0  # 0: rate x seconds
    rates: tuple[int, ...] = ()
    wait_for_end: bool = True
    idle_s: float = 1.0
    target: str = ""

    @property
    def call_count(self) -> int:
        return self.calls or max(1, round(self.rate * self.seconds))


FULL: dict[str, Plan] = {
    "cpu500": Plan(
        "cpu500",
        "CPU per call at 500 calls/s",
        "ms",
        "lower",
        rate=500,
        seconds=20,
        target="ratio <= 1.3",
    ),
    "cpu2000": Plan(
        "cpu2000", "CPU per call at 2000 calls/s", "ms", "lower", rate=2000, seconds=10
    ),
    "sweep": Plan(
        "sweep",
        "Highest clean rate",
        "calls/s",
        "higher",
        seconds=10,
        rates=SWEEP_RATES,
        target="ratio >= 0.8",
    ),
    "latency": Plan(
        "latency",
        "Calls with setup >= 10 ms at 1000 calls/s",
        "%",
        "lower",
        rate=1000,
        seconds=10,
        target="ratio <= 2",
    ),
    "memory": Plan(
        "memory",
        "Memory per active call (20,000 held)",
        "bytes",
        "lower",
        rate=1000,
        calls=20_000,
        hold_ms=25_000,
        wait_for_end=False,
        target="ratio <= 1",
    ),
}

# --quick: the same figures, smaller and shorter (for trying the machinery, not for the docs)
QUICK: dict[str, Plan] = {
    "cpu500": replace(FULL["cpu500"], seconds=8),
    "cpu2000": replace(FULL["cpu2000"], seconds=4),
    "sweep": replace(FULL["sweep"], seconds=4, rates=(500, 1000, 2000, 3000, 4000)),
    "latency": replace(FULL["latency"], seconds=4),
    "memory": replace(FULL["memory"], calls=5000, hold_ms=8000),
}

# --smoke: one short pair at a low rate, every number taken from the same run
SMOKE = Plan(
    "smoke",
    "Smoke run (50 calls/s, 2 s)",
    "ms",
    "lower",
    rate=50,
    seconds=2,
    hold_ms=1000,
    idle_s=0.3,
)

GROUPS = {"cpu": ("cpu500", "cpu2000")}


def select(only: str | None, *, quick: bool) -> list[Plan]:
    """The plans named in ``--only`` (``cpu`` means both CPU figures), in the canonical order."""
    plans = QUICK if quick else FULL
    if not only:
        return list(plans.values())
    wanted: set[str] = set()
    for word in only.split(","):
        word = word.strip()
        names = GROUPS.get(word, (word,))
        unknown = [name for name in names if name not in plans]
        if unknown:
            choices = ", ".join([*GROUPS, *plans])
            raise ValueError(f"unknown figure {word!r}; choose from {choices}")
        wanted.update(names)
    return [plan for name, plan in plans.items() if name in wanted]


# --- measuring ----------------------------------------------------------------------------------


@dataclass
class SubjectResult:
    """One subject's part of one pair: its value and the runs it came from."""

    value: float | None
    runs: list[Run] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"value": self.value, "runs": [run.to_json() for run in self.runs]}


Log = Callable[[str], None]


def measure(plan: Plan, subject: str, workdir: Path, log: Log, siplb_extra: str) -> SubjectResult:
    if plan.rates:
        return _sweep(plan, subject, workdir, log, siplb_extra)
    run = run_calls(
        subject,
        workdir,
        rate=plan.rate,
        calls=plan.call_count,
        hold_ms=plan.hold_ms,
        idle_s=plan.idle_s,
        wait_for_end=plan.wait_for_end,
        siplb_extra=siplb_extra if subject == "siplb" else "",
    )
    log(f"  {plan.name}: {run.summary()}")
    return SubjectResult(value_of(plan, run), [run])


def value_of(plan: Plan, run: Run) -> float | None:
    if plan.name == "memory":
        return run.memory_per_active_call
    if plan.name == "latency":
        return 100.0 * run.setup_over_10ms_share
    return run.cpu_ms_per_call


def _sweep(plan: Plan, subject: str, workdir: Path, log: Log, siplb_extra: str) -> SubjectResult:
    """Ascending rates until SWEEP_STOP_AFTER unclean steps in a row; the value is the highest
    clean rate (a lone unclean step below it is noise of a shared machine, and is kept)."""
    result = SubjectResult(value=0.0)
    unclean_in_a_row = 0
    for rate in plan.rates:
        run = run_calls(
            subject,
            workdir / f"{rate}",
            rate=rate,
            calls=round(rate * plan.seconds),
            hold_ms=plan.hold_ms,
            idle_s=plan.idle_s,
            siplb_extra=siplb_extra if subject == "siplb" else "",
        )
        result.runs.append(run)
        log(f"  sweep: {run.summary()}{'' if run.clean else '  NOT CLEAN'}")
        if run.clean:
            unclean_in_a_row = 0
            result.value = max(result.value or 0.0, float(rate))
            continue
        unclean_in_a_row += 1
        if unclean_in_a_row >= SWEEP_STOP_AFTER:
            break
    return result
