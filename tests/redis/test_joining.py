"""A member joining an anycast cluster: drained (no new calls) for its first batches, told the
calls in setup the others own before it takes any; and a member started while Redis is down
serves alone after ``WARM_LIMIT`` instead of staying drained."""

from __future__ import annotations

import asyncio
from typing import Any

from redis_servers import HOST, RedisServer, free_port
from test_shared_dialogs import Host, until

from siplb.cluster import Member
from siplb.cluster.setups import Setup
from siplb.io import cluster as cluster_module
from siplb.io.cluster import WARM_TICKS, ClusterLink
from siplb.settings import ClusterSettings


def settings(node: str, redis_port: int) -> ClusterSettings:
    return ClusterSettings(
        node, (HOST, free_port()), b"s" * 32, name="j", redis=f"redis://{HOST}:{redis_port}"
    )


def test_a_joiner_hears_the_setups_before_it_takes_calls(redis_server: RedisServer) -> None:
    async def scenario() -> dict[str, Any]:
        old, new = Host(), Host()
        old.setups = [
            Setup(b"c1@x", Member("n1"), b"INVITE sip:b@x SIP/2.0\r\n\r\n", (HOST, 5060), 0,
                  "pbx", "sip:127.0.0.1:5070", "z9hG4bK-n1.0-1", 1)
        ]  # fmt: skip
        first = ClusterLink(settings("n1", redis_server.port), old)
        facts: dict[str, Any] = {}
        await first.start()
        await until(lambda: not first.warming, "n1 warm")
        second = ClusterLink(settings("n2", redis_server.port), new)
        try:
            await second.start()
            facts["joining"] = second.warming
            await until(lambda: len(first.membership.live) == 2, "n2 seen by n1")
            assert old.ownership is not None
            facts["n2_drained_at_first"] = Member("n2") not in old.ownership.serving
            await until(lambda: bool(new.heard), "n1's setups told to n2")
            facts["heard"] = new.heard
            await until(lambda: not second.warming, "n2 warm")
            await until(
                lambda: old.ownership is not None and Member("n2") in old.ownership.serving,
                "n2 serving",
            )
            facts["ticks"] = second._ticks_ok
        finally:
            await second.stop()
            await first.stop()
        return facts

    facts = asyncio.run(scenario())
    assert facts["joining"]
    assert facts["n2_drained_at_first"]
    assert [note.call_id for note in facts["heard"]] == [b"c1@x"]
    assert facts["ticks"] >= WARM_TICKS


def test_without_redis_a_new_member_serves_after_the_warm_limit(monkeypatch: Any) -> None:
    monkeypatch.setattr(cluster_module, "WARM_LIMIT", 0.3)

    async def scenario() -> tuple[bool, float]:
        link = ClusterLink(settings("n1", free_port()), Host())  # nothing listens there
        await link.start(first_sync=0.2)
        try:
            warming_at_start = link.warming
            waited = await until(lambda: not link.warming, "warm without Redis")
        finally:
            await link.stop(leave=False)
        return warming_at_start, waited

    warming_at_start, waited = asyncio.run(scenario())
    assert warming_at_start
    assert waited < 1.0
