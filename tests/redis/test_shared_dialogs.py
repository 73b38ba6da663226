"""Two members' links against a real redis-server, in one process: established dialogs and NAT
bindings published as diffs; a member that stops ticking is seen gone by the other within about
a second, its dialogs become the survivor's orphans and its bindings the survivor's to keep."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from redis_servers import HOST, RedisServer, free_port

from siplb.cluster import Ownership
from siplb.cluster.setups import CallNote, Setup
from siplb.dispatch.accounting import CallAccounting, DialogChanges
from siplb.io.cluster import ClusterLink
from siplb.io.cluster_store import ClusterStore
from siplb.io.redis_link import RedisLink
from siplb.proxy.actions import Target
from siplb.proxy.keepalive import BindingChanges, Shared, flow_key
from siplb.settings import ClusterSettings

URI = "sip:127.0.0.1:5070"
MAX_AGE = 600.0
DEADLINE = 5.0
CALLS = 20
PHONE = Target("udp", "198.51.100.7", 40000, flow=True)


class Host:
    """A balancer as its link sees it: a real call table, bindings learned and kept."""

    def __init__(self) -> None:
        self.accounting = CallAccounting()
        self.learned: list[Shared] = []
        self.kept: dict[Target, Shared] = {}
        self.released: list[Target] = []
        self.ownership: Ownership | None = None
        self.setups: list[Setup] = []  # calls in setup it owns (told to a member joining)
        self.heard: list[CallNote] = []  # what the other members told it

    def cluster_calls(self) -> dict[str, int]:
        return {URI: self.accounting.active(URI)}

    def cluster_caps(self) -> dict[str, int]:
        return {}

    def cluster_health(self) -> dict[str, tuple[str, str]]:
        return {}

    def cluster_members(self, ownership: Ownership) -> None:
        self.ownership = ownership

    def cluster_told(self, remote: dict[str, int], limits: dict[str, int]) -> None:
        pass

    def cluster_follow(self, uri: str, state: str, cause: str) -> None:
        pass

    def cluster_admin(self, set_name: str, uri: str, verb: str, value: float | None) -> None:
        pass

    def cluster_datagram(self, listener: int, source: tuple[str, int], data: bytes) -> None:
        pass

    def cluster_passive(self, uri: str, ok: bool, cause: str) -> None:
        pass

    def cluster_dialogs(self, limit: int) -> DialogChanges:
        return self.accounting.dialog_changes(limit, MAX_AGE)

    def cluster_learned(self, limit: int) -> BindingChanges:
        learned, self.learned = self.learned, []
        self.kept.update((shared.flow, shared) for shared in learned)
        return BindingChanges(tuple(learned))

    def cluster_bindings(self, adopt: Sequence[Shared], release: Sequence[Target]) -> None:
        self.kept.update((shared.flow, shared) for shared in adopt)
        for flow in release:
            self.kept.pop(flow, None)
            self.released.append(flow)

    def cluster_own_setups(self) -> list[Setup]:
        return list(self.setups)

    def cluster_setup(self, note: CallNote) -> None:
        self.heard.append(note)


async def until(check: Callable[[], Awaitable[bool] | bool], what: str) -> float:
    """Seconds until ``check()`` holds; fails after ``DEADLINE``."""
    start = time.monotonic()
    while time.monotonic() - start < DEADLINE:
        result = check()
        if result if isinstance(result, bool) else await result:
            return time.monotonic() - start
        await asyncio.sleep(0.02)
    raise AssertionError(f"no {what} within {DEADLINE:g} s")


def test_a_silent_members_dialogs_become_the_survivors_orphans(redis_server: RedisServer) -> None:
    def settings(node: str) -> ClusterSettings:
        return ClusterSettings(
            node,
            (HOST, free_port()),
            b"s" * 32,
            name="d",
            redis=f"redis://{HOST}:{redis_server.port}",
        )

    async def scenario() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        hosts = [Host(), Host()]
        links = [
            ClusterLink(settings(node), host)
            for node, host in zip(("n1", "n2"), hosts, strict=True)
        ]
        reader = RedisLink(links[0].settings)
        store = ClusterStore(reader, links[0].settings)

        async def dialogs_of(tag: str) -> dict[str, dict[str, Any]]:
            readings = await reader.run([store.read_dialogs(tag)])
            assert readings is not None
            return dict(readings[0])

        async def bindings() -> dict[str, dict[str, Any]]:
            readings = await reader.run([store.read_bindings()])
            assert readings is not None
            return dict(readings[0])

        facts: dict[str, Any] = {}
        running = list(links)
        try:
            for link in links:
                await link.start()
            await until(
                lambda: all(len(link.membership.live) == 2 for link in links), "two members"
            )
            dying, survivor = hosts
            now = loop.time()
            for n in range(CALLS + 1):
                dying.accounting.setup_started(b"call-%d@a" % n, URI, now)
                dying.accounting.confirmed(b"call-%d@a" % n, now)
            dying.accounting.ended(b"call-%d@a" % CALLS)  # its BYE came
            dying.learned.append(Shared(PHONE, 0, b"sip:alice@x", b"sip:alice@10.1.1.1", now + 300))

            async def published() -> bool:
                return len(await dialogs_of("n1.0")) == CALLS and len(await bindings()) == 1

            await until(published, "dialogs and bindings published")
            facts["pttl"] = int(await reader.client.pttl(store.dialogs_key("n1.0")))
            facts["binding"] = (await bindings())[flow_key(PHONE)]
            await running.pop(0).stop(leave=False)  # killed: it stops ticking, says nothing
            facts["gone_after"] = await until(
                lambda: len(links[1].membership.live) == 1, "the silent member gone"
            )
            await until(lambda: links[1].stats["orphans"] == CALLS, "orphans")
            facts["per_uri"] = links[1].orphans.per_uri()
            await until(lambda: PHONE in survivor.kept, "the binding adopted")
            facts["adopted"] = survivor.kept[PHONE]
            facts["closed"] = links[1].close_orphan("call-3@a")
            facts["closed_twice"] = links[1].close_orphan("call-3@a")

            async def removed() -> bool:
                return "call-3@a" not in await dialogs_of("n1.0")

            await until(removed, "the closed orphan removed from the dead member's dialogs")
            facts["left"] = len(await dialogs_of("n1.0"))
            facts["orphans"] = links[1].stats["orphans"]
        finally:
            for link in running:
                await link.stop()
            await reader.close()
        return facts

    facts = asyncio.run(scenario())
    assert facts["pttl"] > (MAX_AGE - 5) * 1000  # outlives the member for its calls' BYEs
    assert facts["binding"]["learned_by"] == "n1.0"
    assert facts["binding"]["contact"] == "sip:alice@10.1.1.1"
    assert facts["gone_after"] < 1.5
    assert facts["per_uri"] == {URI: CALLS}
    assert facts["adopted"].contact == b"sip:alice@10.1.1.1"
    assert (facts["closed"], facts["closed_twice"]) == (True, False)
    assert (facts["left"], facts["orphans"]) == (CALLS - 1, CALLS - 1)
