"""RedisLink against a real redis-server: batches, a crash and a restart, a Sentinel failover."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import Any

import pytest
import redis.utils
from redis_servers import HOST, SERVICE, RedisServer, SentinelGroup, command, free_port, wait_for

from siplb.config import HostPort
from siplb.io.cluster_store import ClusterStore
from siplb.io.redis_link import RedisLink, Step, shown_url
from siplb.settings import ClusterSettings

SECRET = b"s" * 32
DEADLINE = 10.0


def settings_for(port: int, **changes: Any) -> ClusterSettings:
    base = ClusterSettings("n1", (HOST, 7000), SECRET, redis=f"redis://{HOST}:{port}/0")
    return dataclasses.replace(base, **changes)


async def until_up(link: RedisLink, store: ClusterStore, deadline: float = DEADLINE) -> float:
    """Run heartbeats until one succeeds; the seconds it took."""
    start = time.monotonic()
    while time.monotonic() - start < deadline:
        if await link.run([store.heartbeat("n1.0", {"peer": "x"})]) is not None:
            return time.monotonic() - start
        await asyncio.sleep(0.05)
    raise AssertionError(f"the link did not come back within {deadline:g} s")


def test_hiredis_parses() -> None:
    assert redis.utils.HIREDIS_AVAILABLE


def test_exchange_runs_one_batch(redis_server: RedisServer) -> None:
    async def scenario() -> tuple[Any, ...]:
        link = RedisLink(settings_for(redis_server.port))
        try:
            replies = await link.exchange(
                lambda pipe: (pipe.set("k", "v"), pipe.get("k"), pipe.incr("k"))
            )
            readings = await link.run(
                [Step(lambda pipe: pipe.get("k"), lambda r: r[0]), Step(lambda pipe: None, len)]
            )
            return replies, readings, await link.server_time_ms(), link.up, link.errors
        finally:
            await link.close()

    replies, readings, now_ms, up, errors = asyncio.run(scenario())
    assert replies[:2] == [True, "v"]
    assert isinstance(replies[2], redis.exceptions.ResponseError)  # a refused command's reply
    assert readings == ["v", 0]
    assert abs(now_ms - time.time() * 1000) < 5000
    assert (up, errors) == (True, 0)


def test_a_refused_step_reads_none_and_the_others_still_read(redis_server: RedisServer) -> None:
    async def scenario() -> list[Any] | None:
        link = RedisLink(settings_for(redis_server.port))
        try:
            return await link.run(
                [
                    Step(lambda pipe: pipe.set("text", "abc"), lambda r: r[0]),
                    Step(lambda pipe: pipe.incr("text"), lambda r: r[0]),
                    Step(lambda pipe: pipe.get("text"), lambda r: r[0]),
                ]
            )
        finally:
            await link.close()

    assert asyncio.run(scenario()) == [True, None, "abc"]


def test_redis_killed_then_restarted_on_the_same_port(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="siplb.redis")

    async def scenario() -> dict[str, Any]:
        link = RedisLink(settings_for(redis_server.port))
        store = ClusterStore(link, link.settings)
        facts: dict[str, Any] = {}
        try:
            await until_up(link, store)
            redis_server.kill()
            start = time.monotonic()
            facts["down"] = await link.run([store.heartbeat("n1.0", {"peer": "x"})])
            facts["down_s"] = time.monotonic() - start
            facts["up_while_down"], facts["errors"] = link.up, link.errors
            await link.run([store.members()])  # still down: counted, not logged again
            redis_server.start()  # empty: no scripts loaded, no keys
            facts["back_s"] = await until_up(link, store)
            members = await link.run([store.members()])
            assert members is not None
            facts["members"] = dict(members[0].last_seen)
            facts["up"], facts["reconnects"] = link.up, link.reconnects
            facts["errors_after"] = link.errors
        finally:
            await link.close()
        return facts

    facts = asyncio.run(scenario())
    assert facts["down"] is None
    assert facts["down_s"] < 1.5
    assert (facts["up_while_down"], facts["errors"]) == (False, 1)
    assert facts["errors_after"] >= 2
    assert list(facts["members"]) == ["n1.0"]  # the heartbeat script was loaded again
    assert (facts["up"], facts["reconnects"]) == (True, 1)
    changes = [r.getMessage().split(" (")[0] for r in caplog.records if r.name == "siplb.redis"]
    assert changes == ["Redis link up", "Redis link down", "Redis link up"]  # each change once


def test_a_link_to_no_redis_answers_none_quickly() -> None:
    async def scenario() -> tuple[Any, float, bool]:
        link = RedisLink(settings_for(free_port()))
        start = time.monotonic()
        try:
            reply = await link.exchange(lambda pipe: pipe.ping())
            return reply, time.monotonic() - start, link.up
        finally:
            await link.close()

    reply, seconds, up = asyncio.run(scenario())
    assert (reply, up) == (None, False)
    assert seconds < 1.0


@pytest.mark.parametrize("how", ["primary killed", "SENTINEL FAILOVER"])
def test_sentinel_failover_is_followed_without_a_new_link(
    sentinel_group: SentinelGroup, how: str
) -> None:
    group = sentinel_group
    sentinel = group.sentinel
    settings = settings_for(
        0, redis=None, sentinels=(HostPort(HOST, sentinel.port),), service=SERVICE
    )

    async def serving_port(link: RedisLink) -> int | None:
        replies = await link.exchange(lambda pipe: pipe.info("server"))
        return None if replies is None else int(replies[0]["tcp_port"])

    async def scenario() -> tuple[int | None, int | None, float, int | None]:
        link = RedisLink(settings)
        store = ClusterStore(link, settings)
        try:
            await until_up(link, store)
            before = await serving_port(link)
            if how == "primary killed":
                group.primary.kill()
            else:  # the old primary lives on as a replica: writes to it fail (READONLY)
                assert command(sentinel.port, "SENTINEL", "FAILOVER", SERVICE).startswith("+OK")
            start = time.monotonic()
            while time.monotonic() - start < DEADLINE:
                written = await link.run([store.heartbeat("n1.0", {"peer": "x"})])
                if (
                    written is not None
                    and written[0] is not None
                    and await serving_port(link) == group.replica.port
                ):
                    break
                await asyncio.sleep(0.1)
            took = time.monotonic() - start
            return before, await serving_port(link), took, sentinel.primary()
        finally:
            await link.close()

    before, after, took, primary = asyncio.run(scenario())
    assert before == group.primary.port
    assert after == group.replica.port == primary
    assert took < DEADLINE
    wait_for(lambda: "role:master" in command(group.replica.port, "INFO", "replication"), "role")


def test_a_redis_url_is_shown_without_its_password() -> None:
    assert shown_url("redis://user:pw@10.0.0.1:6380/2?x=1") == "redis://10.0.0.1:6380/2"
    assert shown_url("rediss://:pw@[::1]") == "rediss://[::1]"
    link = RedisLink(settings_for(6379, redis="redis://:hunter2@127.0.0.1:6379"))
    assert "hunter2" not in link.where
