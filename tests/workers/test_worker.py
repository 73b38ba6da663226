"""Two workers of one node in one event loop, on real sockets and a shared table: what they
share is told to each core as inputs (``siplb.workers.Worker``): calls, capacity leases, and
health decided by worker 0 from what either worker's traffic shows."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path

from siplb.config import load_config
from siplb.io.shared import SharedCallCounts
from siplb.io.workers import open_worker_sockets
from siplb.workers import Worker

A, B = "sip:127.0.0.1:9", "sip:127.0.0.1:7"
CAP = 8
DEADLINE = 2.0

CONFIG = f"""
[[listen]]
transport = "udp"
address = "127.0.0.1:0"

[[sets]]
name = "pbx"
destinations = [{{ uri = "{A}", max_calls = {CAP} }}, {{ uri = "{B}" }}]

[health]
interval = 30.0
timeout = 0.5
down_after = 1
"""


async def _until(condition: Callable[[], bool]) -> None:
    """Wait (at most ``DEADLINE`` seconds) for state the two workers change."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    while not condition():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def test_workers_share_calls_leases_and_health(tmp_path: Path) -> None:
    path = tmp_path / "siplb.toml"
    path.write_text(CONFIG)
    config = load_config(path)
    sockets = open_worker_sockets([(0, "127.0.0.1", 0, 1 << 20)], 2)
    counts = SharedCallCounts.create(2, threading.Lock())

    async def scene() -> None:
        workers = [
            Worker(config, worker=w, sockets=sockets, counts=counts, config_path=path)
            for w in range(2)
        ]
        for worker in workers:
            await worker.start()
        leader, follower = workers
        try:
            # leases: each worker holds some of A's cap, never more than the cap in all
            leases = [counts.lease(w, A) for w in range(2)]
            assert all(n > 0 for n in leases), leases
            assert sum(leases) <= CAP
            # calls: one on the follower is told to the leader's core
            follower.proxy.dispatcher.accounting.setup_started("c1", A, 0.0)
            follower.balancer.driver.flush()
            await _until(lambda: leader.proxy.dispatcher.snapshot(A).active_calls == 1)
            assert leader.proxy.dispatcher.local_calls() == {}
            # health: the follower's failure goes to the leader, which decides and is followed
            follower.proxy.passive_failure(B, "timer B", follower.loop.time())
            follower.balancer.driver.flush()
            states = [w.proxy.dispatcher.health for w in workers]
            await _until(lambda: [str(h.state(B)) for h in states] == ["down", "down"])
            assert not leader.link.stats.keys() & {"rejected_forged", "rejected_replayed"}
        finally:
            for worker in workers:
                await worker.stop()

    try:
        asyncio.run(scene())
    finally:
        sockets.close()
        counts.close()
        counts.unlink()
