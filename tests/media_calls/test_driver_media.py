"""The driver's side of media anchoring (``siplb.io.driver``): it drains the core's media asks,
runs each in a task, and hands the result back; a runner that raises, or too many asks in
flight, count as an engine failure, so the parked message goes on unanchored. A real Driver on
loopback UDP with a scripted caller and callee; the engine is replaced by small runners."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from siplb.dispatch import DestinationSpec, HealthSettings, SetSpec
from siplb.io import driver as driver_module
from siplb.io.driver import Driver
from siplb.io.udp import bind_udp
from siplb.media.asks import MediaAsk
from siplb.media.settings import EngineSpec, MediaSettings
from siplb.proxy.core import Proxy
from siplb.proxy.listeners import Listener
from siplb.settings import ProxySettings, TcpSettings
from siplb.sip import DEFAULT_LIMITS, Request

from .ua import LOOPBACK_HOST, Phone, media_address

ENGINE_SDP = (
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 40000 RTP/AVP 0\r\n"
)


class Runner:
    """Runs asks with ``behaviour``; remembers them."""

    def __init__(self, behaviour: Callable[[MediaAsk], Awaitable[bytes | None]]) -> None:
        self.behaviour = behaviour
        self.asks: list[MediaAsk] = []

    async def handle(self, ask: MediaAsk) -> bytes | None:
        self.asks.append(ask)
        return await self.behaviour(ask)


async def engine_answers(ask: MediaAsk) -> bytes | None:
    await asyncio.sleep(0.01)  # the engine's round trip
    return ENGINE_SDP


async def engine_breaks(ask: MediaAsk) -> bytes | None:
    raise RuntimeError("a bug in the engine client")


async def invite_through(runner: Runner) -> tuple[Request, Proxy]:
    """One INVITE with SDP through a driven core; what the callee got."""
    loop = asyncio.get_running_loop()
    caller, callee = Phone("alice"), Phone("bob")
    try:
        sock = bind_udp(LOOPBACK_HOST, 0, 1 << 20)
        port = sock.getsockname()[1]
        driver = Driver(
            loop, DEFAULT_LIMITS, tcp=TcpSettings(), client_ssl=None, on_event=lambda _: None
        )
        await driver.open_udp(0, sock)
        uri = f"sip:{LOOPBACK_HOST}:{callee.port}"
        media = MediaSettings(engines=(EngineSpec(LOOPBACK_HOST, 9),), anchor="always")
        proxy = Proxy(
            listeners=[Listener(0, "udp", LOOPBACK_HOST, port)],
            sets=[SetSpec("pbx", (DestinationSpec(uri, LOOPBACK_HOST, callee.port),))],
            default_set="pbx",
            settings=ProxySettings(),
            health=HealthSettings(),
            now=driver.now(),
            probing=False,
            media=media,
        )
        proxy.dispatcher.health.probe_result(uri, True, driver.now(), "probe answered 200")
        driver.media = runner
        driver.run(proxy)
        siplb = (LOOPBACK_HOST, port)
        _, data = caller.invite(siplb, f"sip:bob@{LOOPBACK_HOST}:{port}")
        caller.send(data, siplb)
        invite, _ = await asyncio.to_thread(callee.expect, "INVITE")
        assert isinstance(invite, Request)
        driver.close()
        return invite, proxy
    finally:
        caller.close()
        callee.close()


def test_the_engine_sdp_goes_on() -> None:
    runner = Runner(engine_answers)
    invite, proxy = asyncio.run(invite_through(runner))
    assert [ask.op for ask in runner.asks] == ["offer"]
    assert invite.body == ENGINE_SDP
    assert proxy.stats["media_offers"] == 1


def test_a_runner_that_raises_counts_as_engine_failure() -> None:
    runner = Runner(engine_breaks)
    invite, proxy = asyncio.run(invite_through(runner))
    assert media_address(invite.body)[1] != 40000  # the caller's own SDP, unanchored
    assert proxy.stats["media_failures"] == 1


def test_asks_past_the_bound_fail_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(driver_module, "MAX_MEDIA_TASKS", 0)
    runner = Runner(engine_answers)
    invite, proxy = asyncio.run(invite_through(runner))
    assert runner.asks == []
    assert media_address(invite.body)[1] != 40000
    assert proxy.stats["media_not_run"] == 2  # the offer, and the delete its failure sends
    assert proxy.stats["media_failures"] == 1
