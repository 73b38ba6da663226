"""A callee killed mid-run: the next INVITE sent to it meets an ICMP port unreachable (its host
is up, its SIP process gone), and siplb fails the call over at once instead of after
``failover_timeout`` (2 s). Real SIPp caller and callees, siplb as a process, on loopback.

The figure (the slowest call setup the caller saw, the failovers by transport error) is printed:
``.venv/bin/pytest -s tests/wildcard/test_icmp_failover.py``.
"""

from __future__ import annotations

import signal
import statistics
import time
from pathlib import Path

import pytest

from e2e import sipp as sp
from e2e.balancer import start_siplb
from e2e.conftest import SippLauncher

pytestmark = pytest.mark.e2e

FAILOVER_TIMEOUT = 2.0
# A setup on loopback takes milliseconds; one that waited for failover_timeout takes 2 s and
# more. Half a second leaves a loaded CI machine room and still tells the two apart 4 to 1.
BOUND_S = 0.5
CALLS, RATE = 80, 20


def setup_times(workdir: Path, caller: sp.SippProcess) -> list[float]:
    """Each call's INVITE-to-200 time in seconds (SIPp ``-trace_rtt``, ``rtd`` on the 200;
    SIPp's clock ticks in milliseconds)."""
    path = workdir / f"{caller.scenario.stem}_{caller.pid}_rtt.csv"
    times = []
    for line in path.read_text().splitlines()[1:]:
        fields = line.split(";")
        if len(fields) >= 2 and fields[1].strip():
            times.append(float(fields[1]) / 1000)
    return times


def test_a_killed_callee_fails_over_in_milliseconds(e2e_workdir: Path, sipp: SippLauncher) -> None:
    alive, doomed = sipp.uases(2, timeout_s=60)
    lb = start_siplb(
        e2e_workdir,
        [alive.sip_uri, doomed.sip_uri],
        extra=f"[proxy]\nfailover_timeout = {FAILOVER_TIMEOUT}\n",
    )
    try:
        caller = sipp.uac(
            lb.address,
            calls=CALLS,
            rate=RATE,
            duration_ms=100,
            timeout_s=40,
            extra_args=["-trace_rtt", "-rtt_freq", "1"],
        )
        time.sleep(1.0)  # about 20 calls in, half of them through the callee about to die
        doomed.process.signal(signal.SIGKILL)
        result = caller.wait()
        log = [entry.get("msg", "") for entry in lb.log_lines()]
    finally:
        lb.stop()
    failovers = [msg for msg in log if "failed over from" in msg and "transport error" in msg]
    times = setup_times(e2e_workdir, caller)
    print(
        f"\nICMP failover: {len(failovers)} calls failed over by port unreachable; call setup "
        f"over {len(times)} calls: median {statistics.median(times) * 1000:.1f} ms, "
        f"slowest {max(times) * 1000:.1f} ms (failover_timeout {FAILOVER_TIMEOUT * 1000:.0f} ms)"
    )
    # Every INVITE was answered (``rtd`` on the 200 of step 4): no call failed in setup. A call
    # the dead callee had answered already loses its BYE (answered 408 at once): at most the
    # calls in progress there at the kill, about RATE * 0.1 s / 2.
    assert result.stats.messages.get("4_200_Unexp", 0) == 0, result.describe()
    assert len(times) == CALLS, result.describe()
    assert result.stats.failed_calls <= 2, result.describe()
    assert result.stats.successful_calls + result.stats.failed_calls == CALLS, result.describe()
    assert failovers, "\n".join(log[-30:])
    assert max(times) < BOUND_S, sorted(times)[-5:]
