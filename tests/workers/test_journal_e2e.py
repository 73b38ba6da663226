"""``workers = 2``: a failover in worker 1 shows in worker 0's journal (``GET /api/events``).

``siplb run`` with two workers in front of two SIPp callees that refuse every call with 503.
The test sends INVITEs whose Call-ID worker 1 owns (the workers' own rendezvous rule), so
worker 1's core tries the first callee, gets 503 and fails over: only worker 1 sees that, and
worker 0, which serves the admin API, journals it only if worker 1 sent it. Counts and times
are bounded.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from attack.tools import RUN, UdpPeer, sip_request
from e2e.balancer import SiplbProcess
from e2e.conftest import SippLauncher, e2e_workdir, sipp  # noqa: F401 (fixtures)
from e2e.harness import LOOPBACK
from workers.two_workers import owned_by, start_two_workers, stop_cleanly

pytestmark = pytest.mark.e2e

INVITES = 5  # sent one by one until the journal shows a failover
DEADLINE_S = 3.0  # for each: the failover (about 1 ms), the next batch (0.2 s), scheduling


@pytest.fixture
def balancer(e2e_workdir: Path, sipp: SippLauncher) -> Iterator[SiplbProcess]:  # noqa: F811
    first, second = sipp.uases(2, "uas_503.xml")
    lb = start_two_workers(e2e_workdir, [first.sip_uri, second.sip_uri])
    try:
        yield lb
    finally:
        stop_cleanly(lb)


def owned_invites(worker: int, target: tuple[str, int], local: tuple[str, int]) -> Iterator[bytes]:
    """INVITEs that ``worker`` owns, each with a new Call-ID."""
    return owned_by(
        worker,
        lambda n: sip_request(
            "INVITE",
            f"sip:journal{n}@{target[0]}:{target[1]}",
            local=local,
            call_id=f"journal-{RUN}-{n}",
            from_tag=f"j{n}",
            to_uri=f"sip:journal{n}@{target[0]}:{target[1]}",
        ),
    )


def _events(lb: SiplbProcess) -> list[dict[str, Any]]:
    status, body = lb.api("GET", "/api/events?limit=500")
    assert status == 200, body
    assert isinstance(body, dict)
    return list(body["events"])


def _failovers(lb: SiplbProcess, within: float) -> list[dict[str, Any]]:
    """Wait ``within`` seconds for failover entries in the journal; those seen (maybe none)."""
    deadline = time.monotonic() + within
    while True:
        found = [e for e in _events(lb) if e["kind"] == "failover"]
        if found or time.monotonic() >= deadline:
            return found
        time.sleep(0.05)


def test_a_failover_in_worker_1_reaches_worker_0s_journal(balancer: SiplbProcess) -> None:
    target = balancer.address
    with UdpPeer(LOOPBACK) as caller:
        invites = owned_invites(1, target, caller.local)
        sent: list[str] = []
        found: list[dict[str, Any]] = []
        for data in itertools.islice(invites, INVITES):
            call_id = data.split(b"Call-ID: ", 1)[1].split(b"\r\n", 1)[0].decode()
            sent.append(call_id)
            assert caller.send(data, target)
            found = _failovers(balancer, DEADLINE_S)
            if found:
                break
    assert found, f"no failover journaled after {sent}\n{balancer.log_tail()}"
    for entry in found:  # worker 0 owned none of these calls: every entry came from worker 1
        assert entry["worker"] == 1, entry
        assert "in worker 1" in entry["message"], entry
        assert entry["set"] == "pbx", entry
        assert any(f"call {call_id} left" in entry["message"] for call_id in sent), entry
