"""The engine client and ``MediaControl`` against real rtpengine processes on loopback (Debian
``rtpengine-daemon`` 10.5, userspace, see ``engine.py``)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from siplb.io.media import NO_ENGINE, MediaControl
from siplb.io.rtpengine import NgClient
from siplb.media import ng
from siplb.media.asks import MediaAsk
from siplb.media.engines import EngineState
from siplb.media.settings import EngineSpec, MediaSettings

from .engine import HOST, Engine, SilentEngine, running_engine, start_engine
from .loops import LOOPS, run_on

OFFER_SDP = (
    b"v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"
    b"m=audio 4000 RTP/AVP 0 8\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
)
ANSWER_SDP = (
    b"v=0\r\no=- 2 2 IN IP4 192.0.2.20\r\ns=-\r\nc=IN IP4 192.0.2.20\r\nt=0 0\r\n"
    b"m=audio 5000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)
FLAGS = ("replace-origin", "replace-session-connection", "ICE=remove")


def spec_of(engine: Engine | SilentEngine, weight: int = 1) -> EngineSpec:
    port = engine.port_ng if isinstance(engine, Engine) else engine.port
    return EngineSpec(HOST, port, weight)


def settings(
    *engines: Engine | SilentEngine,
    timeout: float = 0.5,
    ping_interval: float = 5.0,
    retry_after: float = 30.0,
    shared: bool = False,
) -> MediaSettings:
    return MediaSettings(
        engines=tuple(spec_of(e) for e in engines),
        timeout=timeout,
        ping_interval=ping_interval,
        retry_after=retry_after,
        shared=shared,
    )


def offer(call_id: str) -> MediaAsk:
    return MediaAsk(1, "offer", call_id, "ft", "", OFFER_SDP, "z9hG4bK1", FLAGS, ("", ""))


def answer(call_id: str) -> MediaAsk:
    return MediaAsk(2, "answer", call_id, "ft", "tt", ANSWER_SDP, "z9hG4bK1", FLAGS, ("", ""))


def delete(call_id: str) -> MediaAsk:
    return MediaAsk(0, "delete", call_id, "ft", "tt", b"", "", (), ("", ""))


def media_port(sdp: bytes) -> int:
    match = re.search(rb"^m=audio (\d+) ", sdp, re.M)
    assert match is not None, sdp
    return int(match[1])


def anchored_on(sdp: bytes | None, engine: Engine) -> bool:
    """The SDP names the engine's address and one of its ports, nothing of the phone's."""
    assert sdp is not None
    return (
        b"c=IN IP4 127.0.0.1\r\n" in sdp
        and b"o=- 1 1 IN IP4 127.0.0.1\r\n" in sdp
        and b"192.0.2." not in sdp
        and engine.port_min <= media_port(sdp) <= engine.port_max
    )


async def wait_until(check: Callable[[], bool], what: str, deadline: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while not check():
        assert loop.time() < end, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_whole_call_with_the_ng_client(
    engine: Engine, loop: Callable[[], asyncio.AbstractEventLoop]
) -> None:
    async def run() -> None:
        client = NgClient(timeout=1.0, max_pending=10)
        spec = spec_of(engine)
        assert await client.open(spec)
        pong = await client.request(spec.address, ng.ping())
        assert pong is not None
        assert pong.result == "pong"
        offered = await client.request(
            spec.address, ng.offer("call-1", "ft", OFFER_SDP, via_branch="z9", options=FLAGS)
        )
        assert offered is not None
        assert offered.ok, offered
        assert anchored_on(offered.sdp, engine), offered.sdp
        answered = await client.request(
            spec.address, ng.answer("call-1", "ft", "tt", ANSWER_SDP, options=FLAGS)
        )
        assert answered is not None
        assert answered.ok, answered
        assert answered.sdp is not None
        assert b"192.0.2.20" not in answered.sdp
        assert media_port(answered.sdp) != media_port(offered.sdp or b"")
        known = await client.request(spec.address, ng.query("call-1"))
        assert known is not None
        assert known.result == "ok"
        tags = known.body.get("tags")
        assert isinstance(tags, dict)
        assert {"ft", "tt"} <= tags.keys()
        deleted = await client.request(spec.address, ng.delete("call-1", "ft"))
        assert deleted is not None
        assert deleted.ok
        gone = await client.request(spec.address, ng.query("call-1"))
        assert gone is not None
        assert (gone.result, gone.error_reason) == (
            "error",
            "Unknown call-id",
        )
        client.close()

    run_on(loop, run())


def test_media_control_runs_a_call(engine: Engine) -> None:
    async def run() -> None:
        control = MediaControl(settings(engine))
        await control.start()
        try:
            assert anchored_on(await control.handle(offer("c1")), engine)
            answered = await control.handle(answer("c1"))
            assert answered is not None
            assert b"192.0.2.20" not in answered
            assert engine.knows("c1")
            view = control.view()
            (reading,) = view.engines
            assert (reading.state, reading.calls, reading.offers) == (EngineState.UP, 1, 1)
            assert reading.offer_p50_ms is not None
            assert reading.offer_p50_ms < 500
            assert await control.handle(delete("c1")) == b""
            assert not engine.knows("c1")
            assert control.view().calls == 0
            # the engine refuses what it cannot parse: a failure, counted, never an exception
            bad = MediaAsk(1, "offer", "c2", "ft", "", b"garbage", "", (), ("", ""))
            assert await control.handle(bad) is None
            assert dict(control.view().engines[0].failures) == {"offer": 1}
            # an ask that makes no command (no Call-ID) is refused and counted, never raised
            assert await control.handle(offer("")) is None
            assert dict(control.view().counters)["bad_ask"] == 1
            # a Call-ID that is not UTF-8 (decoded with surrogateescape) goes as its bytes
            odd = b"c3\xff@host".decode("utf-8", "surrogateescape")
            assert anchored_on(await control.handle(offer(odd)), engine)
            assert engine.knows(b"c3\xff@host")
        finally:
            await control.close()

    asyncio.run(run())


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("how", ["killed", "hung"])
def test_offers_fail_over_when_an_engine_dies(
    tmp_path: Path, how: str, loop: Callable[[], asyncio.AbstractEventLoop]
) -> None:
    """Killed: its port answers ICMP unreachable, the offer moves on at once. Hung (stopped):
    silence, as from a dead host; the offer moves on after the timeout, later ones at once."""
    with (
        running_engine(tmp_path / "a") as first,
        running_engine(tmp_path / "b") as second,
    ):

        async def run() -> None:
            control = MediaControl(settings(first, second, timeout=0.5))
            await control.start()
            try:
                on: dict[str, str] = {}
                for n in range(12):
                    assert await control.handle(offer(f"c{n}")) is not None
                    on[f"c{n}"] = control.table.engine_of(f"c{n}") or ""  # type: ignore[union-attr]
                assert set(on.values()) == {spec_of(first).address, spec_of(second).address}
                first.kill() if how == "killed" else first.freeze()
                loop = asyncio.get_running_loop()
                waited = []
                for n in range(12, 24):
                    started = loop.time()
                    sdp = await control.handle(offer(f"c{n}"))
                    waited.append(loop.time() - started)
                    assert anchored_on(sdp, second), sdp
                slow = [w for w in waited if w > 0.1]
                assert len(slow) <= 1, waited  # only the first offer sent to it waits
                assert all(w < 0.5 + 0.2 for w in slow), waited  # and one timeout at most
                if how == "hung":
                    assert len(slow) == 1, waited
                states = {r.address: r.state for r in control.view().engines}
                assert states[spec_of(first).address] is EngineState.DOWN
                # an answer for a call of the dead engine has nowhere to go (no shared state)
                lost = next(call for call, where in on.items() if where == spec_of(first).address)
                assert await control.handle(answer(lost)) is None
                kept = next(call for call, where in on.items() if where == spec_of(second).address)
                assert await control.handle(answer(kept)) is not None
            finally:
                await control.close()

        run_on(loop, run())


def test_an_answer_for_a_call_offered_elsewhere_finds_its_engine(tmp_path: Path) -> None:
    """Another node (or siplb before a restart) offered the call: the engines say who has it."""
    with (
        running_engine(tmp_path / "a") as first,
        running_engine(tmp_path / "b") as second,
    ):
        by_address = {first.address: first, second.address: second}

        async def run() -> None:
            control = MediaControl(settings(first, second))
            await control.start()
            try:
                assert control.table is not None
                order = control.table.order("elsewhere", asyncio.get_running_loop().time())
                holder = by_address[order[1]]  # not the engine an offer would go to first
                reply = holder.ng(
                    {"command": "offer", "call-id": "elsewhere", "from-tag": "ft", "sdp": OFFER_SDP}
                )
                assert reply["result"] == b"ok"
                answered = await control.handle(answer("elsewhere"))
                assert answered is not None
                assert b"192.0.2.20" not in answered
                assert control.table.engine_of("elsewhere") == order[1]
                states = {r.address: r.state for r in control.view().engines}
                assert states[order[0]] is EngineState.UP  # "Unknown call-id": alive, no fault
                assert all(r.failures == () for r in control.view().engines)
            finally:
                await control.close()

        asyncio.run(run())


def test_a_silent_engine_is_marked_down_by_pings_and_used_again_when_it_answers(
    tmp_path: Path,
) -> None:
    silent = SilentEngine()
    with running_engine(tmp_path / "good") as good:

        async def run() -> None:
            control = MediaControl(
                settings(silent, good, timeout=0.3, ping_interval=0.2, retry_after=60.0)
            )
            await control.start()
            try:
                hung = spec_of(silent).address

                def state() -> EngineState:
                    return {r.address: r.state for r in control.view().engines}[hung]

                await wait_until(lambda: state() is EngineState.DOWN, "the silent engine down")
                assert dict(control.view().engines[0].failures)["ping"] >= 1
                assert silent.drain() >= 2  # the ping and its retransmission reached it
                loop = asyncio.get_running_loop()
                for n in range(10):  # no offer waits for the hung engine any more
                    started = loop.time()
                    assert anchored_on(await control.handle(offer(f"s{n}")), good)
                    assert loop.time() - started < 0.2
                # the hung process is replaced by a working engine on the same port:
                # the next ping finds it, and calls reach it again
                silent.close()
                revived = start_engine(silent.port, folder=tmp_path / "revived")
                try:
                    await wait_until(lambda: state() is EngineState.UP, "the engine back up")
                    placed = set()
                    for n in range(10, 30):
                        assert await control.handle(offer(f"s{n}")) is not None
                        placed.add(control.table.engine_of(f"s{n}"))  # type: ignore[union-attr]
                    assert hung in placed
                finally:
                    revived.stop()
            finally:
                await control.close()

        asyncio.run(run())


def test_with_every_engine_down_an_offer_fails_at_once() -> None:
    silent = SilentEngine()

    async def run() -> None:
        control = MediaControl(settings(silent, timeout=0.2, ping_interval=0.1, retry_after=60.0))
        await control.start()
        try:
            hung = spec_of(silent).address
            await wait_until(
                lambda: control.view().engines[0].state is EngineState.DOWN, "engine down"
            )
            loop = asyncio.get_running_loop()
            started = loop.time()
            assert await control.handle(offer("x")) is None
            assert loop.time() - started < 0.05
            assert dict(control.view().counters)[NO_ENGINE] == 1
            assert control.view().engines[0].address == hung
        finally:
            await control.close()
            silent.close()

    asyncio.run(run())


def test_reload_changes_the_engines(tmp_path: Path) -> None:
    with (
        running_engine(tmp_path / "a") as first,
        running_engine(tmp_path / "b") as second,
    ):

        async def run() -> None:
            control = MediaControl(settings(first))
            await control.start()
            try:
                assert anchored_on(await control.handle(offer("r1")), first)
                await control.reload(settings(second))
                assert [r.address for r in control.view().engines] == [spec_of(second).address]
                assert control.view().calls == 0  # calls of a removed engine are forgotten
                assert anchored_on(await control.handle(offer("r2")), second)
            finally:
                await control.close()

        asyncio.run(run())
