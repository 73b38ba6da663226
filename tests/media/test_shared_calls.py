"""Engines that share their calls through Redis (rtpengine ``--redis``, ``--redis-write``,
``--subscribe-keyspace``): when the engine of a call dies, another one carries it on.

rtpengine 10.5 writes each call to Redis and learns the calls the others write from keyspace
notifications, which Redis sends only when ``notify-keyspace-events`` asks for them (``K$g``:
keyspace events for string commands and generic ones such as DEL). Without it the standby knows
nothing of the others' calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from siplb.io.media import MediaControl
from siplb.media.engines import EngineState

from .engine import HOST, free_udp_port, running_engine
from .test_rtpengine import answer, delete, offer, settings

NOTIFY = "K$g"


def redis_ping(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@contextlib.contextmanager
def running_redis(folder: Path, notify: str) -> Iterator[int]:
    """A ``redis-server`` on a free loopback port (no RDB, no AOF), stopped by PID on exit."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed (make system-deps)")
    folder.mkdir(parents=True, exist_ok=True)
    port = free_udp_port()  # TCP and UDP ports are separate; a free UDP port is likely free
    args = [binary, "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no"]
    args += ["--dir", str(folder), "--notify-keyspace-events", notify]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not redis_ping(port):
            assert process.poll() is None, "redis-server exited"
            assert time.monotonic() < deadline, "redis-server did not answer PING"
            time.sleep(0.02)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=5)


def wait_for(check: object, what: str, deadline: float = 5.0) -> None:
    assert callable(check)
    end = time.monotonic() + deadline
    while not check():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_another_engine_carries_on_the_calls_of_a_dead_one(tmp_path: Path) -> None:
    with (
        running_redis(tmp_path / "redis", NOTIFY) as redis,
        running_engine(tmp_path / "a", redis=redis) as first,
        running_engine(tmp_path / "b", redis=redis) as second,
    ):
        engines = {f"udp:{HOST}:{first.port_ng}": first, f"udp:{HOST}:{second.port_ng}": second}

        async def run() -> None:
            control = MediaControl(settings(first, second, timeout=0.5, shared=True))
            await control.start()
            try:
                assert await control.handle(offer("shared-1")) is not None
                owner = control.table.engine_of("shared-1")  # type: ignore[union-attr]
                assert owner is not None
                dead = engines.pop(owner)
                (standby,) = engines.values()
                wait_for(lambda: standby.knows("shared-1"), "the standby to learn the call")
                dead.kill()
                answered = await control.handle(answer("shared-1"))
                assert answered is not None
                assert b"192.0.2.20" not in answered
                states = {r.address: r.state for r in control.view().engines}
                assert states[owner] is EngineState.DOWN
                tags = standby.query("shared-1").get("tags")
                assert isinstance(tags, dict)
                assert {"ft", "tt"} <= tags.keys()
                assert await control.handle(delete("shared-1")) == b""
                assert not standby.knows("shared-1")
            finally:
                await control.close()

        asyncio.run(run())
