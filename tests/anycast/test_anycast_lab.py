"""Anycast end to end: three siplb nodes on one address behind a router that sends every packet
to a different node (``anycast_lab``), real SIPp callers and callees, a real Redis.

The figures (datagrams handed between nodes, calls failed, setups continued) are printed:
``.venv/bin/pytest -s tests/anycast/test_anycast_lab.py``.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from e2e import sipp as sp

from .anycast_lab import (
    ANYCAST,
    BACKEND,
    CLIENT,
    PBX_PORTS,
    SCENARIOS,
    SIP_PORT,
    AnycastLab,
    wait_until,
)

pytestmark = pytest.mark.e2e

ALL = {"n1", "n2", "n3"}


def start_lab(
    workdir: Path, scenario: str | Path, *, nodes: list[int] | None = None
) -> tuple[AnycastLab, list[sp.SippProcess]]:
    """The lab with ``nodes`` (default: all three) running, each announcing the anycast
    address through its ExaBGP to the router's BIRD."""
    lab = AnycastLab(workdir, bgp=True)
    nodes = list(lab.indexes) if nodes is None else nodes
    pbxs: list[sp.SippProcess] = []
    try:
        lab.build()
        lab.start_redis()
        for port in PBX_PORTS:
            pbx = sp.start_uas(
                workdir,
                scenario,
                host=BACKEND,
                port=port,
                netns=lab.net.ns("backend"),
                timeout_s=180,
            )
            pbxs.append(pbx)
        for index in nodes:
            lab.start_node(index)
        lab.wait_cluster({f"n{i}" for i in nodes}, on=nodes)
        for index in nodes:
            lab.wait_destinations_up(index)
            lab.start_exabgp(index)
        for index in nodes:
            wait_until(f"n{index} announced", lambda i=index: lab.routed(i), timeout=15.0)
    except BaseException:
        sp.stop_all(pbxs)
        lab.close()
        raise
    return lab, pbxs


@pytest.fixture
def sprayed(tmp_path: Path) -> Iterator[AnycastLab]:
    lab, pbxs = start_lab(tmp_path, "uas.xml")
    try:
        yield lab
    finally:
        sp.stop_all(pbxs)
        lab.close()


def caller(lab: AnycastLab, workdir: Path, **kwargs: object) -> sp.SippProcess:
    return sp.start_uac(
        (ANYCAST, SIP_PORT),
        workdir,
        host=CLIENT,
        port=SIP_PORT,
        netns=lab.net.ns("client"),
        **kwargs,  # type: ignore[arg-type]
    )


def handed_over(lab: AnycastLab, nodes: list[int]) -> int:
    return sum(lab.cluster_stats(i)["handed_over"] for i in nodes)


def test_every_packet_on_any_node_costs_no_call(sprayed: AnycastLab, tmp_path: Path) -> None:
    uac = caller(sprayed, tmp_path, calls=1000, rate=100.0, duration_ms=100, timeout_s=60)
    result = uac.wait()
    handed = handed_over(sprayed, list(sprayed.indexes))
    print(
        f"\nper-packet spraying: {result.stats.successful_calls} calls ok, "
        f"{result.stats.failed_calls} failed, {handed} datagrams handed between nodes"
    )
    assert result.stats.successful_calls == 1000, result.describe()
    assert result.stats.failed_calls == 0, result.describe()
    assert handed > 1000  # the spraying is real: most calls crossed nodes


@pytest.fixture
def ringing(tmp_path: Path) -> Iterator[AnycastLab]:
    lab, pbxs = start_lab(tmp_path, SCENARIOS / "uas_slow.xml")
    try:
        yield lab
    finally:
        sp.stop_all(pbxs)
        lab.close()


def placed(uac: sp.SippProcess) -> int:
    return uac.result().stats.outgoing_calls


def test_a_node_killed_mid_run_costs_no_call(ringing: AnycastLab, tmp_path: Path) -> None:
    lab = ringing
    uac = caller(lab, tmp_path, calls=300, rate=30.0, duration_ms=2000, timeout_s=90)
    wait_until_placed = time.monotonic() + 30
    while placed(uac) < 120:  # calls established and in setup on every node
        assert time.monotonic() < wait_until_placed, uac.result().describe()
        time.sleep(0.1)
    killed = time.monotonic()
    lab.nodes[2].signal(signal.SIGKILL)
    wait_until("n2's route withdrawn", lambda: not lab.routed(2), timeout=5.0, step=0.01)
    withdrawn = time.monotonic() - killed
    result = uac.wait()
    survivors = [1, 3]
    adopted = sum(lab.cluster_stats(i)["setups"]["adopted"] for i in survivors)
    handed = handed_over(lab, survivors)
    print(
        f"\nn2 killed: route withdrawn {withdrawn * 1000:.0f} ms after SIGKILL; "
        f"{result.stats.successful_calls} calls ok, {result.stats.failed_calls} failed, "
        f"{adopted} calls in setup continued by the survivors, {handed} datagrams handed "
        "between the survivors"
    )
    assert withdrawn < 1.0
    assert result.stats.successful_calls == 300, result.describe()
    assert result.stats.failed_calls == 0, result.describe()


def run_with(lab: AnycastLab, workdir: Path, action: Callable[[], None]) -> sp.SippResult:
    """300 ringing calls at 30/s; ``action`` once 120 are placed (calls established and in
    setup on every node then)."""
    uac = caller(lab, workdir, calls=300, rate=30.0, duration_ms=2000, timeout_s=90)
    deadline = time.monotonic() + 30
    while placed(uac) < 120:
        assert time.monotonic() < deadline, uac.result().describe()
        time.sleep(0.1)
    action()
    return uac.wait()


def test_a_node_joining_mid_run_costs_no_call(tmp_path: Path) -> None:
    lab, pbxs = start_lab(tmp_path, SCENARIOS / "uas_slow.xml", nodes=[1, 2])
    try:

        def join() -> None:
            lab.start_node(3)
            lab.wait_cluster(ALL, on=[1, 2, 3])
            lab.wait_destinations_up(3)
            lab.start_exabgp(3)
            wait_until("n3 announced", lambda: lab.routed(3), timeout=15.0)

        result = run_with(lab, tmp_path, join)
        taken = lab.cluster_stats(3)["taken_over"]
        print(
            f"\nn3 joined: {result.stats.successful_calls} calls ok, "
            f"{result.stats.failed_calls} failed, n3 handled {taken} datagrams handed to it"
        )
        assert result.stats.successful_calls == 300, result.describe()
        assert result.stats.failed_calls == 0, result.describe()
        assert taken > 0  # the joiner took its share
    finally:
        sp.stop_all(pbxs)
        lab.close()


def live_calls(lab: AnycastLab, index: int) -> int:
    status, body = lab.api(index, "GET", "/api/status")
    assert status == 200, body
    return int(body["totals"]["active_calls"])


def test_a_node_drained_mid_run_costs_no_call(ringing: AnycastLab, tmp_path: Path) -> None:
    lab = ringing
    withdrawn: list[float] = []

    def drain() -> None:
        start = time.monotonic()
        status, body = lab.api(1, "POST", "/api/node", {"drain": True})
        assert (status, body["draining"]) == (503, True), body  # unhealthy now
        wait_until("n1's route withdrawn", lambda: not lab.routed(1), timeout=5.0, step=0.01)
        withdrawn.append(time.monotonic() - start)

    result = run_with(lab, tmp_path, drain)
    left = wait_until("n1's calls finished", lambda: live_calls(lab, 1) == 0, timeout=15.0)
    print(
        f"\nn1 drained: route withdrawn {withdrawn[0] * 1000:.0f} ms after the drain; "
        f"{result.stats.successful_calls} calls ok, {result.stats.failed_calls} failed; "
        f"n1 had no call left {left:.1f} s after the run"
    )
    assert result.stats.successful_calls == 300, result.describe()
    assert result.stats.failed_calls == 0, result.describe()


def test_a_node_stopped_mid_run_costs_no_call(ringing: AnycastLab, tmp_path: Path) -> None:
    lab = ringing
    timing: list[float] = []

    def stop() -> None:
        start = time.monotonic()
        lab.nodes[2].signal(signal.SIGTERM)
        wait_until("n2's route withdrawn", lambda: not lab.routed(2), timeout=5.0, step=0.01)
        timing.append(time.monotonic() - start)
        assert lab.nodes[2].poll() is None  # withdrawn first, then the calls drain

    result = run_with(lab, tmp_path, stop)
    exited = lab.nodes[2].wait(15.0)
    print(
        f"\nn2 stopped (SIGTERM): route withdrawn {timing[0] * 1000:.0f} ms after the signal; "
        f"{result.stats.successful_calls} calls ok, {result.stats.failed_calls} failed"
    )
    assert exited == 0
    assert result.stats.successful_calls == 300, result.describe()
    assert result.stats.failed_calls == 0, result.describe()
