"""``[proxy] workers = 2``: two balancer processes sharing the SIP port, proven with SIPp.

One SIPp caller, one source address: the kernel's steering spreads its datagrams over both
workers, and each worker hands the ones it does not own to the owner (Call-ID for requests,
the Via branch for responses). Counts and times are bounded.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .balancer import SiplbProcess, launch, write_config
from .conftest import SippLauncher
from .harness import LOOPBACK, free_port

pytestmark = pytest.mark.e2e

WORKERS = 2
DETECTION_S = 1.0 * 2 + 0.5  # probe interval x down_after + timeout (the config below)
SYNC_S = 0.1  # worker 0 sends health states to the others at most this late
SLACK_S = 0.6  # scheduling on a loaded 2-core machine, the log's millisecond stamps


@pytest.fixture
def balancers() -> Iterator[list[SiplbProcess]]:
    started: list[SiplbProcess] = []
    yield started
    for proc in started:
        code = proc.stop()
        assert code == 0, f"siplb exited with {code} on SIGTERM\n{proc.log_tail()}"


def _start(
    workdir: Path,
    balancers: list[SiplbProcess],
    destinations: list[str],
    *,
    algorithm: str = "round-robin",
    max_calls: int | None = None,
) -> SiplbProcess:
    port, admin_port = free_port(), free_port()
    config = workdir / "siplb.toml"
    write_config(
        config,
        port,
        destinations,
        algorithm=algorithm,
        extra=f"\n[proxy]\nworkers = {WORKERS}\n",
        admin_port=admin_port,
    )
    if max_calls is not None:
        text = config.read_text()
        for uri in destinations:
            text = text.replace(f'uri = "{uri}" }}', f'uri = "{uri}", max_calls = {max_calls} }}')
        config.write_text(text)
    proc = launch(workdir, config, (LOOPBACK, port), admin_port, timeout=15.0)
    balancers.append(proc)
    return proc


def _workers(lb: SiplbProcess, *, settle: float = 1.5) -> list[dict[str, Any]]:
    """Every worker's counters from the admin API, once the others have reported (1/s)."""
    time.sleep(settle)
    status, body = lb.api("GET", "/api/status")
    assert status == 200, body
    assert isinstance(body, dict)
    workers = body["workers"]
    assert [w["worker"] for w in workers] == list(range(WORKERS)), workers
    return list(workers)


def test_calls_through_two_workers(
    sipp: SippLauncher, e2e_workdir: Path, balancers: list[SiplbProcess]
) -> None:
    uases = sipp.uases(2)
    lb = _start(e2e_workdir, balancers, [u.sip_uri for u in uases])
    result = sipp.run_uac(lb.address, calls=600, rate=100, duration_ms=200, timeout_s=60)
    assert result.stats.successful_calls == 600, result.describe()
    assert result.stats.failed_calls == 0, result.describe()
    assert result.stats.retransmitted("INVITE") == 0, result.describe()
    received = [u.stop().stats.calls_received for u in uases]
    assert sum(received) == 600, received
    for count in received:  # each worker's round robin is even, so their sum is too
        assert abs(count - 300) <= WORKERS, received
    workers = _workers(lb)
    invites = [w["requests"].get("INVITE", 0) for w in workers]
    assert sum(invites) == 600, workers  # each INVITE handled once, by its owner
    for count in invites:  # Call-ID ownership spreads calls about evenly
        assert 200 <= count <= 400, invites
    assert all(w["handed_over"] > 0 for w in workers), workers
    assert all(w["taken_over"] > 0 for w in workers), workers
    status, metrics = lb.api("GET", "/metrics")
    assert status == 200
    assert 'siplb_requests_total{method="INVITE"} 600.0' in str(metrics)  # every worker's


def test_a_killed_worker_is_restarted(
    sipp: SippLauncher, e2e_workdir: Path, balancers: list[SiplbProcess]
) -> None:
    uases = sipp.uases(2)
    lb = _start(e2e_workdir, balancers, [u.sip_uri for u in uases])
    pid = _worker_pid(lb, 1)
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline and _worker_pid(lb, 1) == pid:
        time.sleep(0.1)
    assert _worker_pid(lb, 1) != pid, lb.log_tail()
    assert any(
        e["msg"].startswith(f"worker 1 (pid {pid}) died (exit -9): restarting")
        for e in lb.log_lines()
    ), lb.log_tail()
    time.sleep(1.0)  # the new worker 1 is up
    result = sipp.run_uac(lb.address, calls=200, rate=100, timeout_s=30)
    assert result.stats.successful_calls == 200, result.describe()
    assert result.stats.failed_calls == 0, result.describe()
    invites = [w["requests"].get("INVITE", 0) for w in _workers(lb)]
    assert sum(invites) == 200, invites
    assert min(invites) > 0, invites  # the new worker 1 takes its share


def _worker_pid(lb: SiplbProcess, worker: int) -> int:
    """The pid of the latest start of ``worker``, from the parent's log."""
    starts = [
        int(e["msg"].rsplit("pid ", 1)[1].rstrip(")"))
        for e in lb.log_lines()
        if e["msg"].startswith(f"worker {worker} started (pid ")
    ]
    assert starts, lb.log_tail()
    return starts[-1]


def test_cancel_across_workers(
    sipp: SippLauncher, e2e_workdir: Path, balancers: list[SiplbProcess]
) -> None:
    uases = sipp.uases(2, "uas_ring.xml")
    lb = _start(e2e_workdir, balancers, [u.sip_uri for u in uases])
    result = sipp.run_uac(lb.address, "uac_cancel.xml", calls=60, rate=20, duration_ms=300)
    assert result.stats.successful_calls == 60, result.describe()
    assert result.stats.failed_calls == 0, result.describe()
    assert result.stats.received(487) == 60, result.describe()
    assert sum(u.stop().stats.received("CANCEL") for u in uases) == 60
    workers = _workers(lb)
    cancels = [w["requests"].get("CANCEL", 0) for w in workers]
    invites = [w["requests"].get("INVITE", 0) for w in workers]
    assert sum(cancels) == 60, workers
    assert cancels == invites, workers  # every CANCEL met its INVITE's worker
    assert min(cancels) > 0, workers


def test_killed_destination_is_marked_down_by_every_worker(
    sipp: SippLauncher, e2e_workdir: Path, balancers: list[SiplbProcess]
) -> None:
    uases = sipp.uases(2)
    lb = _start(e2e_workdir, balancers, [u.sip_uri for u in uases])
    victim = uases[0]
    time.sleep(1.5)  # a few probes answered
    victim.stop()
    killed_at = time.time()
    deadline = time.monotonic() + DETECTION_S + SYNC_S + SLACK_S + 2.0
    downs: list[Any] = []
    while time.monotonic() < deadline:
        downs = [c for c in lb.state_changes(victim.sip_uri) if c.new == "down"]
        if len(downs) >= WORKERS:
            break
        time.sleep(0.1)
    assert len(downs) == WORKERS, lb.log_tail()
    followers = [c for c in downs if "follows worker 0" in c.cause]
    assert len(followers) == WORKERS - 1, downs
    for change in downs:
        assert change.at - killed_at <= DETECTION_S + SYNC_S + SLACK_S, downs
    result = sipp.run_uac(lb.address, calls=100, rate=50, timeout_s=30)
    assert result.stats.successful_calls == 100, result.describe()  # no worker picks the dead
    assert uases[1].stop().stats.calls_received == 100


def test_least_calls_honours_max_calls_across_workers(
    sipp: SippLauncher, e2e_workdir: Path, balancers: list[SiplbProcess]
) -> None:
    """Two destinations capped at 10 calls each: 30 long calls at once get 20 through and 10
    refused, whichever worker owns them. Per-worker counts would have let all 30 through."""
    uases = sipp.uases(2)
    lb = _start(
        e2e_workdir, balancers, [u.sip_uri for u in uases], algorithm="least-calls", max_calls=10
    )
    result = sipp.run_uac(lb.address, calls=30, rate=30, duration_ms=5000, timeout_s=40)
    assert result.stats.successful_calls == 20, result.describe()
    assert result.stats.failed_calls == 10, result.describe()
    received = [u.stop().stats.calls_received for u in uases]
    assert received == [10, 10], received
    workers = _workers(lb, settle=1.2)
    invites = [w["requests"].get("INVITE", 0) for w in workers]
    assert min(invites) > 0, invites  # both workers took calls against the shared cap


def test_sighup_to_the_parent_reloads_every_worker(
    sipp: SippLauncher, e2e_workdir: Path, balancers: list[SiplbProcess]
) -> None:
    uases = sipp.uases(2)
    lb = _start(e2e_workdir, balancers, [u.sip_uri for u in uases])
    removed = f'{{ uri = "{uases[1].sip_uri}" }}'
    lb.config_path.write_text(lb.config_path.read_text().replace(removed, ""))  # TOML: "[a, ]"
    lb.signal(signal.SIGHUP)
    deadline = time.monotonic() + 5.0
    reloads: list[str] = []
    while time.monotonic() < deadline and len(reloads) < WORKERS:
        reloads = [e["msg"] for e in lb.log_lines() if e["msg"].endswith("(SIGHUP)")]
        time.sleep(0.1)
    assert len(reloads) == WORKERS, lb.log_tail()
    assert all(f"removed pbx {uases[1].sip_uri}" in msg for msg in reloads), reloads
    result = sipp.run_uac(lb.address, calls=100, rate=50, timeout_s=30)
    assert result.stats.successful_calls == 100, result.describe()
    received = [u.stop().stats.calls_received for u in uases]
    assert received == [100, 0], received  # neither worker sends to the removed destination


def _options_answered(lb: SiplbProcess, source: str, count: int, wait: float = 1.0) -> int:
    """OPTIONS to the balancer itself from ``source``, each with its own Call-ID (so the
    workers share them): how many were answered within ``wait`` seconds."""
    from attack.tools import UdpPeer, options_to

    make = options_to(lb.address)
    with UdpPeer(source) as peer:
        for n in range(count):
            peer.send(make(n, peer.local), lb.address)
        return sum(1 for d in peer.collect(wait) if d.startswith(b"SIP/2.0 200"))


def test_a_ban_and_its_lift_reach_every_worker(
    sipp: SippLauncher, e2e_workdir: Path, balancers: list[SiplbProcess]
) -> None:
    uases = sipp.uases(2)
    lb = _start(e2e_workdir, balancers, [u.sip_uri for u in uases])
    source = "127.0.0.23"
    assert _options_answered(lb, source, 40) == 40  # both workers answer it
    status, body = lb.api("POST", "/api/bans", {"host": source, "seconds": 60})
    assert status == 200, body
    # none answered, those owned by worker 1 included: the ban reached it at once
    assert _options_answered(lb, source, 40) == 0
    status, body = lb.api("DELETE", f"/api/bans/{source}")
    assert status == 200, body
    assert _options_answered(lb, source, 40) == 40
    workers = _workers(lb)
    assert all(w["drops"].get("banned", 0) > 0 for w in workers), workers


def test_sigterm_to_the_parent_turns_unhealthy_before_the_workers_stop(
    tmp_path: Path, balancers: list[SiplbProcess], sipp: SippLauncher
) -> None:
    """As ``siplb run`` alone: unhealthy at once (routes withdrawn), still serving for
    ``[health] withdraw_delay`` (1 s by default), then stopped."""
    uas = sipp.uas()
    lb = _start(tmp_path, balancers, [uas.sip_uri])
    deadline = time.monotonic() + 10
    while lb.api("GET", "/api/health")[0] != 200:
        assert time.monotonic() < deadline, "never healthy"
        time.sleep(0.05)
    signalled = time.monotonic()
    lb.process.signal(signal.SIGTERM)
    while True:
        status, body = lb.api("GET", "/api/health")
        if status == 503:
            break
        assert time.monotonic() - signalled < 1.0, body
        time.sleep(0.02)
    unhealthy = time.monotonic() - signalled
    assert isinstance(body, dict)
    assert body["draining"] is True
    assert lb.process.poll() is None  # still serving while the routes go
    assert lb.process.wait(15.0) == 0
    print(f"\nworkers: unhealthy {unhealthy * 1000:.0f} ms after SIGTERM, then stopped")
    balancers.remove(lb)
