"""Requests addressed to siplb itself, end to end: SIPp's built-in ``uac`` scenario.

``sipp -sn uac`` ignores Record-Route: its ACK and BYE go to the balancer with no Route and a
Request-URI ``sip:service@<siplb>``. A balancer that forwards such a request by its Request-URI
sends it to itself until Max-Forwards runs out (one BYE became about 70, nothing logged); siplb
sends it to the destination of that call, once, and the calls complete.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .balancer import SiplbProcess, start_siplb
from .conftest import SippLauncher
from .sipp import sipp_binary

pytestmark = pytest.mark.e2e

CALLS = 20


@pytest.fixture
def balancers() -> Iterator[list[SiplbProcess]]:
    started: list[SiplbProcess] = []
    yield started
    for proc in started:
        assert proc.stop() == 0, proc.log_tail()


def builtin_uac(workdir: Path) -> Path:
    """SIPp's own ``uac`` scenario, as ``-sn uac`` runs it (``-sd`` writes it out)."""
    # (SIPp exits with 99 after dumping a scenario: the output is what counts)
    dumped = subprocess.run(
        [sipp_binary(), "-sd", "uac"], capture_output=True, check=False, timeout=10
    ).stdout
    assert b"<scenario" in dumped
    assert b"BYE sip:[service]@[remote_ip]:[remote_port]" in dumped  # no Route: to siplb itself
    path = workdir / "builtin_uac.xml"
    path.write_bytes(dumped[dumped.index(b"<?xml") :])
    return path


def requests_by_method(lb: SiplbProcess) -> dict[str, float]:
    status, text = lb.api("GET", "/metrics")
    assert status == 200, text
    found = re.findall(r'^siplb_requests_total\{method="([^"]+)"\} (\S+)$', str(text), re.M)
    return {method: float(value) for method, value in found}


def test_sipp_builtin_uac_bye_is_not_looped(
    sipp: SippLauncher, e2e_workdir: Path, balancers: list[SiplbProcess]
) -> None:
    uas = sipp.uas()
    lb = start_siplb(e2e_workdir, [uas.sip_uri])
    balancers.append(lb)
    scenario = builtin_uac(e2e_workdir)
    result = sipp.run_uac(lb.address, scenario, calls=CALLS, rate=10, duration_ms=100, timeout_s=30)
    served = uas.stop()
    counted = requests_by_method(lb)
    report = f"{result.describe()}\nsiplb requests: {counted}\n{lb.log_tail()}"
    # each BYE crossed siplb once (a loop would count about 70 per call) and reached the callee
    assert counted.get("BYE") == CALLS, report
    assert counted.get("ACK") == CALLS, report
    assert served.stats.received("BYE") == CALLS, report
    assert served.stats.received("ACK") == CALLS, report
    assert result.stats.successful_calls == CALLS, report
    assert result.stats.failed_calls == 0, report
