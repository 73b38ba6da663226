"""The ng client's wire rules (``siplb.io.rtpengine``) against a scripted UDP peer: cookies,
retransmission, timeouts, stray and malformed replies, the bound on waiting commands."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from siplb.io.rtpengine import (
    BUSY,
    MALFORMED,
    RETRANSMITTED,
    TIMEOUTS,
    UNKNOWN_COOKIE,
    UNREACHABLE,
    NgClient,
)
from siplb.media import ng
from siplb.media.settings import EngineSpec

from .engine import HOST, free_udp_port
from .loops import LOOPS, run_on

Script = Callable[[int, bytes, bytes], list[bytes]]  # (n-th datagram, cookie, payload) -> replies


class ScriptedPeer(asyncio.DatagramProtocol):
    """A UDP peer on ``HOST`` that answers each datagram as ``script`` says."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.seen: list[bytes] = []
        self.sender: Any = None  # where the last datagram came from
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.seen.append(data)
        self.sender = addr
        cookie, _, payload = data.partition(b" ")
        for reply in self.script(len(self.seen), cookie, payload):
            self.transport.sendto(reply, addr)


async def peer(script: Script) -> tuple[ScriptedPeer, EngineSpec]:
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_datagram_endpoint(
        lambda: ScriptedPeer(script), local_addr=(HOST, 0)
    )
    return protocol, EngineSpec(HOST, protocol.transport.get_extra_info("sockname")[1])


PONG = b"d6:result4:ponge"


@pytest.mark.parametrize("loop", LOOPS)
def test_a_reply_is_matched_by_its_cookie_and_strays_are_counted(
    loop: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    def script(n: int, cookie: bytes, payload: bytes) -> list[bytes]:
        return [b"other_1 " + PONG, b"garbage", cookie + b" li1ee", cookie + b" " + PONG]

    async def run() -> None:
        server, spec = await peer(script)
        client = NgClient(timeout=1.0, max_pending=10, cookie_prefix="t")
        assert await client.open(spec)
        reply = await client.request(spec.address, ng.ping())
        assert reply is not None
        assert reply.result == "pong"
        assert server.seen == [b"t_1 d7:command4:pinge"]
        assert client.stats[UNKNOWN_COOKIE] == 1
        assert client.stats[MALFORMED] == 2  # not "<cookie> <dict>"; a list, not a dict
        assert client.pending == 0
        client.close()
        server.transport.close()

    run_on(loop, run())


@pytest.mark.parametrize("loop", LOOPS)
def test_a_lost_command_is_sent_again_with_the_same_cookie(
    loop: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    def script(n: int, cookie: bytes, payload: bytes) -> list[bytes]:
        return [] if n == 1 else [cookie + b" " + PONG]

    async def run() -> None:
        server, spec = await peer(script)
        client = NgClient(timeout=0.4, max_pending=10)
        await client.open(spec)
        loop = asyncio.get_running_loop()
        started = loop.time()
        reply = await client.request(spec.address, ng.ping())
        elapsed = loop.time() - started
        assert reply is not None
        assert reply.ok
        assert 0.15 <= elapsed < 0.4  # the retransmission at half the timeout was answered
        assert len(server.seen) == 2
        assert server.seen[0] == server.seen[1]
        assert client.stats[RETRANSMITTED] == 1
        client.close()
        server.transport.close()

    run_on(loop, run())


@pytest.mark.parametrize("loop", LOOPS)
def test_a_silent_peer_times_out_and_its_late_reply_is_dropped(
    loop: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    held: list[bytes] = []

    def script(n: int, cookie: bytes, payload: bytes) -> list[bytes]:
        held.append(cookie)
        return []

    async def run() -> None:
        server, spec = await peer(script)
        client = NgClient(timeout=0.2, max_pending=10)
        await client.open(spec)
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await client.request(spec.address, ng.ping()) is None
        assert 0.19 <= loop.time() - started < 0.35
        assert (client.stats[TIMEOUTS], len(server.seen)) == (1, 2)  # sent, and once again
        # the late reply: its cookie waits for nothing any more
        server.transport.sendto(held[0] + b" " + PONG, server.sender)
        await wait_until(lambda: client.stats[UNKNOWN_COOKIE] == 1)
        client.close()
        server.transport.close()

    run_on(loop, run())


@pytest.mark.parametrize("loop", LOOPS)
def test_commands_waiting_are_bounded(loop: Callable[[], asyncio.AbstractEventLoop]) -> None:
    async def run() -> None:
        server, spec = await peer(lambda n, cookie, payload: [])
        client = NgClient(timeout=0.3, max_pending=2)
        await client.open(spec)
        results = await asyncio.gather(*(client.request(spec.address, ng.ping()) for _ in range(3)))
        assert results == [None, None, None]
        assert client.stats[BUSY] == 1
        assert len({d.partition(b" ")[0] for d in server.seen}) == 2  # the third never left
        assert client.pending == 0
        client.close()
        server.transport.close()

    run_on(loop, run())


@pytest.mark.parametrize("loop", LOOPS)
def test_a_closed_port_fails_at_once(loop: Callable[[], asyncio.AbstractEventLoop]) -> None:
    async def run() -> None:
        client = NgClient(timeout=2.0, max_pending=10)
        spec = EngineSpec(HOST, free_udp_port())  # nothing listens there
        await client.open(spec)
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await client.request(spec.address, ng.ping()) is None
        assert loop.time() - started < 1.0  # ICMP port unreachable, not the 2 s timeout
        assert client.stats[UNREACHABLE] == 1
        assert await client.request("udp:127.0.0.1:1", ng.ping()) is None  # no such engine
        client.close()

    run_on(loop, run())


async def wait_until(check: Callable[[], bool], deadline: float = 2.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while not check():
        assert loop.time() < end, "condition not met in time"
        await asyncio.sleep(0.01)
