"""Probing first: a destination added by a reload takes calls only after a probe answered.

A real ``siplb run`` serves one SIPp callee; a reload adds a dead destination (a UDP port bound
and never read: no answer, no ICMP error, like a crashed host) and a second live callee. SIPp
calls placed right after the reload never reach the dead one, so none waits the failover
timeout; the live one joins once its first probe is answered.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from .balancer import SiplbProcess, start_siplb, write_config
from .conftest import SippLauncher
from .harness import LOOPBACK, free_port

pytestmark = pytest.mark.e2e

CALLS, RATE = 40, 40  # one second of calls, started at once after the reload


@pytest.fixture
def dead() -> Iterator[socket.socket]:
    """A destination that never answers: bound (so no port unreachable comes back), never read
    while the test runs; what it received is read at the end."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((LOOPBACK, free_port()))
    try:
        yield sock
    finally:
        sock.close()


def received_methods(sock: socket.socket) -> list[str]:
    sock.setblocking(False)
    methods = []
    while True:
        try:
            data = sock.recv(65535)
        except BlockingIOError:
            return methods
        methods.append(data.split(b" ", 1)[0].decode("ascii", "replace"))


def states(lb: SiplbProcess) -> dict[str, str]:
    status, body = lb.api("GET", "/api/sets")
    assert status == 200, body
    return {d["uri"]: d["state"] for s in body["sets"] for d in s["destinations"]}  # type: ignore[index]


def wait_for(what: str, check: Callable[[], bool], lb: SiplbProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.02)
    pytest.fail(f"{what} within {timeout} s: {states(lb)}\n{lb.log_tail()}")


def test_calls_right_after_a_reload_never_reach_a_new_dead_destination(
    sipp: SippLauncher, e2e_workdir: Path, dead: socket.socket
) -> None:
    a, b = sipp.uases(2)
    dead_uri = f"sip:{LOOPBACK}:{dead.getsockname()[1]}"
    lb = start_siplb(e2e_workdir, [a.sip_uri])
    try:
        wait_for("a up", lambda: states(lb)[a.sip_uri] == "up", lb, 5.0)
        assert lb.admin_url is not None
        write_config(
            lb.config_path,
            lb.address[1],
            [a.sip_uri, dead_uri, b.sip_uri],
            admin_port=urlsplit(lb.admin_url).port,
        )
        status, outcome = lb.api("POST", "/api/reload")
        assert status == 200, outcome
        uac = sipp.uac(lb.address, calls=CALLS, rate=RATE, duration_ms=100, timeout_s=30)
        after = states(lb)
        assert after[dead_uri] == "probing", after  # no answer yet, and not a call either
        result = uac.wait()
        assert result.stats.successful_calls == CALLS, result.describe()
        assert result.stats.failed_calls == 0, result.describe()
        # no call waited for the dead one: every answer came well within the failover timeout
        # (SIPp's cumulative buckets of the time from the INVITE to its 200, in ms)
        buckets = {
            k.rpartition("_")[2]: int(v or 0)
            for k, v in result.stats.raw.items()
            if k.startswith("ResponseTimeRepartition1_")
        }
        assert sum(buckets.values()) == CALLS, buckets
        assert buckets["<2000"] == buckets[">=2000"] == 0, buckets
        # b joined as soon as its probe was answered, and took its share
        assert states(lb)[b.sip_uri] == "up"
        wait_for("dead down", lambda: states(lb)[dead_uri] == "down", lb, 5.0)
    finally:
        code = lb.stop()
    assert code == 0, lb.log_tail()
    results = sipp.stop_uases()
    got = {r.name: r.stats.calls_received for r in results}
    assert sum(got.values()) == CALLS, got
    assert got[results[1].name] > 0, got  # b
    methods = received_methods(dead)
    assert "INVITE" not in methods, methods
    assert set(methods) == {"OPTIONS"}, methods
    # the dead one went probing -> down, never up nor suspect
    changes = [c.new for c in lb.state_changes(dead_uri)]
    assert changes == ["down"], changes
