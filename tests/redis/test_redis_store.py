"""The cluster's Redis protocol against a real redis-server: membership, capacity leases,
counts, and the JSON hashes (health, operator actions, dialogs, bindings)."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from redis_servers import HOST, RedisServer

from siplb.io.cluster_store import ClusterStore, Lease, Members, admin_field
from siplb.io.redis_link import RedisLink, Step
from siplb.settings import ClusterSettings

URI = "sip:127.0.0.1:5070"
DEADLINE = 5.0


def settings_for(server: RedisServer, **changes: Any) -> ClusterSettings:
    base = ClusterSettings(
        "n1", (HOST, 7000), b"s" * 32, name="t", redis=f"redis://{HOST}:{server.port}"
    )
    return dataclasses.replace(base, **changes)


@asynccontextmanager
async def members(settings: ClusterSettings, count: int) -> AsyncIterator[list[ClusterStore]]:
    """``count`` stores, each on its own link (connection), as separate members would be."""
    links = [RedisLink(settings) for _ in range(count)]
    try:
        yield [ClusterStore(link, settings) for link in links]
    finally:
        for link in links:
            await link.close()


async def run(store: ClusterStore, *steps: Step[Any]) -> list[Any]:
    """The steps as one batch on ``store``'s link; Redis must be up."""
    readings = await store.link.run(steps)
    assert readings is not None, store.link.last_error
    return readings


def tags(count: int) -> list[str]:
    return [f"n{index}.0" for index in range(count)]


def test_heartbeats_and_members(redis_server: RedisServer) -> None:
    settings = settings_for(redis_server)

    async def scenario() -> tuple[Any, ...]:
        async with members(settings, 2) as (one, two):
            (stamp,) = await run(one, one.heartbeat("n1.0", {"peer": "127.0.0.1:7000", "calls": 3}))
            await run(two, two.heartbeat("n2.0", {"peer": "127.0.0.1:7001"}))
            seen, info = await run(one, one.members(), one.member_info(["n1.0", "n2.0", "n9.0"]))
            await run(two, two.leave("n2.0", [URI]))
            after, info_after = await run(one, one.members(), one.member_info(["n2.0"]))
            return stamp, seen, info, after, info_after

    stamp, seen, info, after, info_after = asyncio.run(scenario())
    assert isinstance(seen, Members)
    assert seen.live(700) == ("n1.0", "n2.0")
    assert seen.last_seen["n1.0"] == stamp <= seen.now_ms
    assert info == {
        "n1.0": {"peer": "127.0.0.1:7000", "calls": "3"},
        "n2.0": {"peer": "127.0.0.1:7001"},
    }
    assert after.live(700) == ("n1.0",)
    assert info_after == {}


def test_a_member_not_heard_is_not_live() -> None:
    seen = Members(10_000, {"a.0": 9_400, "b.0": 9_300, "c.0": 10_000})
    assert seen.live(700) == ("a.0", "c.0")


def test_member_hash_expires_with_its_ttl(redis_server: RedisServer) -> None:
    settings = settings_for(redis_server, heartbeat=0.05, dead_after=0.1, lease_ttl=0.2)

    async def scenario() -> tuple[dict[str, Any], float]:
        async with members(settings, 1) as (store,):
            await run(store, store.heartbeat("n1.0", {"peer": "x"}))
            (before,) = await run(store, store.member_info(["n1.0"]))
            start = time.monotonic()
            while (await run(store, store.member_info(["n1.0"])))[0]:
                assert time.monotonic() - start < DEADLINE
                await asyncio.sleep(0.02)
            return before, time.monotonic() - start

    before, gone_after = asyncio.run(scenario())
    assert before == {"n1.0": {"peer": "x"}}
    assert gone_after < 1.0


def test_concurrent_lease_asks_never_exceed_the_cap(redis_server: RedisServer) -> None:
    # Every member stays live for the whole run however slow the machine: this test is about
    # the atomicity of concurrent asks, not about liveness (a member not heard is not counted).
    settings = settings_for(redis_server, dead_after=60.0, lease_ttl=60.0)
    cap, count, asks = 25, 6, 240
    rng = random.Random(10)

    async def scenario() -> tuple[list[Lease], list[int]]:
        async with members(settings, count) as stores:
            names = tags(count)
            for store, tag in zip(stores, names, strict=True):
                await run(store, store.heartbeat(tag, {}))

            async def ask(index: int) -> Lease:
                store = stores[index % count]
                want = rng.randint(0, cap)
                (lease,) = await run(store, store.ask_lease(URI, names[index % count], cap, want))
                return lease

            grants = await asyncio.gather(*(ask(index) for index in range(asks)))
            held = await run(stores[0], *(_get(stores[0].lease_key(URI, tag)) for tag in names))
            return list(grants), [int(value or 0) for value in held]

    grants, held = asyncio.run(scenario())
    assert all(lease.granted >= 0 and lease.granted + lease.others <= cap for lease in grants)
    assert sum(held) <= cap
    assert any(lease.granted > 0 for lease in grants)


def test_lease_grants_what_the_others_leave(redis_server: RedisServer) -> None:
    settings = settings_for(redis_server)

    async def scenario() -> list[Lease]:
        async with members(settings, 2) as (one, two):
            await run(one, one.heartbeat("a.0", {}), two.heartbeat("b.0", {}))
            (first,) = await run(one, one.ask_lease(URI, "a.0", 10, 7))
            (second,) = await run(two, two.ask_lease(URI, "b.0", 10, 7))
            (given_back,) = await run(one, one.ask_lease(URI, "a.0", 10, 2))
            (again,) = await run(two, two.ask_lease(URI, "b.0", 10, 9))
            (other_uri,) = await run(two, two.ask_lease(URI + ";transport=tcp", "b.0", 10, 9))
            return [first, second, given_back, again, other_uri]

    assert asyncio.run(scenario()) == [
        Lease(7, 0),
        Lease(3, 7),
        Lease(2, 3),
        Lease(8, 2),
        Lease(9, 0),
    ]


def test_a_dead_members_lease_stops_counting(redis_server: RedisServer) -> None:
    settings = settings_for(redis_server, heartbeat=0.05, dead_after=0.15, lease_ttl=0.4)

    async def scenario() -> tuple[Lease, Lease, float, float]:
        async with members(settings, 2) as (dead, alive):
            await run(dead, dead.heartbeat("d.0", {}), dead.ask_lease(URI, "d.0", 10, 10))
            await run(alive, alive.heartbeat("a.0", {}))
            (refused,) = await run(alive, alive.ask_lease(URI, "a.0", 10, 4))
            start = time.monotonic()
            granted = refused
            while granted.granted == 0:  # "d.0" stops heartbeating: gone after dead_after
                assert time.monotonic() - start < DEADLINE
                await asyncio.sleep(0.02)
                _, granted = await run(
                    alive, alive.heartbeat("a.0", {}), alive.ask_lease(URI, "a.0", 10, 4)
                )
            dead_after = time.monotonic() - start
            while (await run(alive, _get(alive.lease_key(URI, "d.0"))))[0] is not None:
                assert time.monotonic() - start < DEADLINE
                await asyncio.sleep(0.02)
            return refused, granted, dead_after, time.monotonic() - start

    refused, granted, dead_after, expired_after = asyncio.run(scenario())
    assert refused == Lease(0, 10)
    assert granted == Lease(4, 0)
    assert dead_after < 0.15 + 0.2
    assert expired_after < 0.4 + 0.2


def test_calls_are_replaced_whole(redis_server: RedisServer) -> None:
    settings = settings_for(redis_server)

    async def scenario() -> list[Any]:
        async with members(settings, 1) as (store,):
            await run(store, store.publish_calls("a.0", {URI: 3, "sip:127.0.0.1:5071": 1}))
            await run(store, store.publish_calls("b.0", {URI: 2}))
            (first,) = await run(store, store.read_calls(["a.0", "b.0", "c.0"]))
            await run(store, store.publish_calls("a.0", {URI: 0, "sip:127.0.0.1:5071": 4}))
            await run(store, store.publish_calls("b.0", {}))
            (second,) = await run(store, store.read_calls(["a.0", "b.0"]))
            return [first, second]

    first, second = asyncio.run(scenario())
    assert first == {"a.0": {URI: 3, "sip:127.0.0.1:5071": 1}, "b.0": {URI: 2}}
    assert second == {"a.0": {"sip:127.0.0.1:5071": 4}}


def test_json_hashes(redis_server: RedisServer) -> None:
    settings = settings_for(redis_server)
    health = {URI: {"state": "down", "cause": "timeout", "by": "a.0", "at": 1.5}}
    admin = {admin_field("pbx", URI): {"op": "drain", "value": None, "stamp": 7, "by": "b.0"}}
    dialogs = {"call-1@x": {"uri": URI, "expires": 100.0}, "call-2@x": {"uri": URI, "expires": 9}}

    async def scenario() -> list[Any]:
        async with members(settings, 1) as (store,):
            await run(
                store,
                store.write_health(health),
                store.write_admin(admin),
                store.write_dialogs("a.0", dialogs, ttl_ms=60_000),
                store.write_bindings({"udp:1.2.3.4:5060": {"aor": "sip:alice@x"}}),
                Step(lambda pipe: pipe.hset(store.health_key, "broken", "{"), lambda r: None),
            )
            await run(
                store,
                store.write_dialogs("a.0", {}, ["call-2@x"], ttl_ms=60_000),
                store.write_bindings({}, ["udp:1.2.3.4:5060"]),
            )
            return await run(
                store,
                store.read_health(),
                store.read_admin(),
                store.read_dialogs("a.0"),
                store.read_bindings(),
                _ttl(store.dialogs_key("a.0")),
            )

    read_health, read_admin, read_dialogs, bindings, ttl = asyncio.run(scenario())
    assert read_health == health  # the value that is not JSON is left out
    assert read_admin == {"pbx|" + URI: admin["pbx|" + URI]}
    assert read_dialogs == {"call-1@x": dialogs["call-1@x"]}
    assert bindings == {}
    assert 0 < ttl <= 60_000


def test_key_names() -> None:
    settings = ClusterSettings("n1", (HOST, 7000), b"s" * 32, name="prod", redis="redis://x")
    store = ClusterStore(RedisLink(settings), settings)  # no connection is made
    assert store.members_key == "siplb:prod:members"
    assert store.member_key("n1.0") == "siplb:prod:member:n1.0"
    assert store.lease_key(URI, "n1.0") == f"siplb:prod:lease:{URI}:n1.0"
    assert store.calls_key("n1.0") == "siplb:prod:calls:n1.0"
    assert store.dialogs_key("n1.0") == "siplb:prod:dialog:n1.0"
    assert (store.health_key, store.admin_key, store.bindings_key) == (
        "siplb:prod:health",
        "siplb:prod:admin",
        "siplb:prod:bindings",
    )


def _get(key: str) -> Step[Any]:
    return Step(lambda pipe: pipe.get(key), lambda replies: replies[0])


def _ttl(key: str) -> Step[int]:
    return Step(lambda pipe: pipe.pttl(key), lambda replies: int(replies[0]))
