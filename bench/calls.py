"""A bounded batch of calls through one balancer, and everything measured about it.

``run_calls`` starts two SIPp callees, the balancer under test and a SIPp caller (``lab.Lab``),
places ``calls`` calls at ``rate`` per second, each held ``hold_ms``, and returns a ``Run``:
SIPp's counts (successful, failed, retransmissions on both sides), the caller's setup latency
(INVITE to 200), the balancer's CPU time over the load and its memory (PSS) idle and once every
call has been placed. The processes are stopped by PID when it returns or raises.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lab import CALLEE_COUNT, Lab, Meter, pss_bytes

from e2e.harness import HarnessError

IDLE_S = 1.0  # the balancer's idle CPU rate is measured this long before the load
TAIL_S = 1.0  # CPU time is read this long after the caller's last call ended
RECV_TIMEOUT_MS = 8000  # a call whose answer does not come in 8 s is aborted (bounds a run)
# SIPp's ResponseTimeRepartition bucket below 10 ms (uac.xml: "10, 20, 50, ...")
UNDER_10MS = "ResponseTimeRepartition1_<10"
RESPONSE_TIME = "ResponseTime1(C)"


@dataclass(frozen=True, slots=True)
class Run:
    subject: str
    rate: float
    calls: int
    hold_ms: int
    successful: int
    failed: int
    retransmissions: int  # the caller's plus the callees'
    reached_callees: int  # INVITEs the callees received (a call refused early never gets there)
    caller_wall_s: float
    cpu_s: float  # balancer process tree, user + system, over the load and TAIL_S
    wall_s: float
    idle_cpu_per_s: float
    setup_ms_mean: float | None
    setup_over_10ms: int
    pss_idle: int
    pss_loaded: int
    active_at_sample: int

    @property
    def clean(self) -> bool:
        """Every call succeeded and nothing was retransmitted."""
        return self.successful == self.calls and self.failed == 0 and self.retransmissions == 0

    @property
    def cpu_ms_per_call(self) -> float:
        return 1000.0 * self.cpu_s / self.calls

    @property
    def memory_per_active_call(self) -> float | None:
        if self.active_at_sample <= 0:
            return None
        return (self.pss_loaded - self.pss_idle) / self.active_at_sample

    @property
    def setup_over_10ms_share(self) -> float:
        return self.setup_over_10ms / max(1, self.successful)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(
            clean=self.clean,
            cpu_ms_per_call=self.cpu_ms_per_call,
            memory_per_active_call=self.memory_per_active_call,
            setup_over_10ms_share=self.setup_over_10ms_share,
        )
        return out

    def summary(self) -> str:
        return (
            f"{self.subject:8s} {self.rate:6g} cps x {self.calls:6d} hold {self.hold_ms} ms: "
            f"ok {self.successful} failed {self.failed} retrans {self.retransmissions} "
            f"cpu {self.cpu_ms_per_call:.3f} ms/call setup>10ms {self.setup_over_10ms} "
            f"pss +{(self.pss_loaded - self.pss_idle) / 2**20:.1f} MiB "
            f"at {self.active_at_sample} active"
        )


def _ms(value: str | None) -> float | None:
    """SIPp's "HH:MM:SS:uuuuuu" as milliseconds."""
    if not value:
        return None
    try:
        hours, minutes, seconds, micros = (int(part) for part in value.split(":"))
    except ValueError:
        return None
    return ((hours * 60 + minutes) * 60 + seconds) * 1000.0 + micros / 1000.0


def run_calls(
    subject: str,
    workdir: Path,
    *,
    rate: float,
    calls: int,
    hold_ms: int,
    idle_s: float = IDLE_S,
    wait_for_end: bool = True,
    siplb_extra: str = "",
) -> Run:
    """Place the calls through ``subject`` ("siplb" or "kamailio") and measure.

    With ``wait_for_end=False`` the caller is stopped right after the memory sample (the
    memory figure holds 20,000 calls and need not wait for their BYEs).
    """
    placing_s = calls / rate
    hold_s = hold_ms / 1000.0
    timeout_s = placing_s + hold_s + RECV_TIMEOUT_MS / 1000.0 + 20.0
    with Lab(workdir) as lab:
        # probes are answered too and count as calls: leave room in -m
        uases = lab.callees(CALLEE_COUNT, lifetime_s=timeout_s + 30.0, max_calls=calls + 10_000)
        balancer = lab.balancer(subject, [u.sip_uri for u in uases], siplb_extra=siplb_extra)
        meter = Meter(balancer.pid)
        time.sleep(idle_s)
        idle_cpu, idle_wall = meter.read()
        pss_idle = pss_bytes(balancer.pid)
        meter.restart()
        uac = lab.caller(
            balancer.address,
            calls=calls,
            rate=rate,
            hold_ms=hold_ms,
            timeout_s=timeout_s,
            extra=("-recv_timeout", str(RECV_TIMEOUT_MS)),
        )
        started = time.monotonic()
        sample_at = started + placing_s + min(2.0, hold_s / 2)
        while time.monotonic() < sample_at and uac.running():
            time.sleep(min(0.1, max(0.0, sample_at - time.monotonic())))
        pss_loaded = pss_bytes(balancer.pid)
        active = uac.result().stats.current_calls
        if wait_for_end:
            result = uac.wait()
            time.sleep(TAIL_S)
        else:
            result = uac.stop()
        cpu_s, wall_s = meter.read()
        caller_wall = time.monotonic() - started
        uas_results = lab.stop_callees()
    stats = result.stats
    if stats.outgoing_calls < calls or result.timed_out:
        raise HarnessError(
            f"the caller placed {stats.outgoing_calls} of {calls} calls\n{result.describe()}"
        )
    raw = stats.raw
    under = int(raw.get(UNDER_10MS) or 0) if UNDER_10MS in raw else stats.successful_calls
    return Run(
        subject=subject,
        rate=rate,
        calls=calls,
        hold_ms=hold_ms,
        successful=stats.successful_calls,
        failed=stats.failed_calls,
        retransmissions=stats.retransmissions + sum(r.stats.retransmissions for r in uas_results),
        reached_callees=sum(r.stats.calls_received for r in uas_results),
        caller_wall_s=caller_wall,
        cpu_s=cpu_s,
        wall_s=wall_s,
        idle_cpu_per_s=idle_cpu / idle_wall if idle_wall > 0 else 0.0,
        setup_ms_mean=_ms(raw.get(RESPONSE_TIME)),
        setup_over_10ms=max(0, stats.successful_calls - under),
        pss_idle=pss_idle,
        pss_loaded=pss_loaded,
        active_at_sample=active,
    )


__all__ = ["Run", "run_calls"]
