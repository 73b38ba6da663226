"""``siplb.io.systemd``: the notify address, the watchdog interval, the message format, and the
sender and the workers' relay against a real datagram socket in this process."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from siplb.io.systemd import (
    Notifier,
    NotifyRelay,
    message,
    monotonic_usec,
    notify_address,
    parse_message,
    watchdog_interval,
)

ADDRESSES = [
    (None, None),
    ("", None),
    ("@", None),
    ("relative/notify", None),
    ("vsock:2:1234", None),  # systemd's other transports are not ours to speak
    ("/run/systemd/notify", "/run/systemd/notify"),
    ("@/org/freedesktop/systemd1/notify/42", b"\0/org/freedesktop/systemd1/notify/42"),
]


@pytest.mark.parametrize(("value", "address"), ADDRESSES)
def test_notify_address(value: str | None, address: str | bytes | None) -> None:
    assert notify_address(value) == address


PID = 4242
WATCHDOGS = [
    ({}, None),
    ({"WATCHDOG_USEC": ""}, None),
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "-5"}, None),
    ({"WATCHDOG_USEC": "1e6"}, None),
    ({"WATCHDOG_USEC": "30000000"}, 15.0),
    ({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(PID)}, 0.5),
    ({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}, None),  # another process's watchdog
    ({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "x"}, None),
]


@pytest.mark.parametrize(("environ", "interval"), WATCHDOGS)
def test_watchdog_interval(environ: dict[str, str], interval: float | None) -> None:
    assert watchdog_interval(environ, PID) == interval


def test_message_lines_and_no_injected_field() -> None:
    data = message([("READY", "1"), ("STATUS", "line one\nSTOPPING=1")])
    assert data == b"READY=1\nSTATUS=line one STOPPING=1"
    assert parse_message(data) == {"READY": "1", "STATUS": "line one STOPPING=1"}


def test_parse_message_ignores_lines_without_value() -> None:
    assert parse_message(b"READY=1\ngarbage\n\nSTATUS=a=b\n\xff") == {"READY": "1", "STATUS": "a=b"}


def test_monotonic_usec_is_clock_monotonic() -> None:
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    value = monotonic_usec()
    assert before <= value <= time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


# ---- against a socket ----------------------------------------------------------------------------
@dataclass
class Receiver:
    sock: socket.socket
    name: str

    def read(self, timeout: float = 2.0) -> dict[str, str]:
        self.sock.settimeout(timeout)
        return parse_message(self.sock.recv(4096))

    def empty(self) -> bool:
        self.sock.setblocking(False)
        try:
            self.sock.recv(4096)
        except BlockingIOError:
            return True
        return False


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        yield Receiver(sock, str(path))


def test_disabled_without_notify_socket() -> None:
    notifier = Notifier.from_environment({"WATCHDOG_USEC": "1000000"})
    assert not notifier.enabled
    assert notifier.watchdog is None
    assert notifier.send(("READY", "1")) is False
    assert notifier.sent == notifier.failed == 0


def test_ready_reloading_stopping(receiver: Receiver) -> None:
    notifier = Notifier.from_environment({"NOTIFY_SOCKET": receiver.name})
    notifier.ready("serving")
    assert receiver.read() == {"READY": "1", "STATUS": "serving"}
    notifier.reloading()
    fields = receiver.read()
    assert fields["RELOADING"] == "1"
    assert abs(int(fields["MONOTONIC_USEC"]) - monotonic_usec()) < 5_000_000
    notifier.stopping()
    assert receiver.read() == {"STOPPING": "1", "STATUS": "stopping"}
    assert notifier.sent == 3


@dataclass(frozen=True)
class Outcome:
    text: str

    def summary(self) -> str:
        return self.text


def test_reload_frames_the_action(receiver: Receiver) -> None:
    notifier = Notifier(receiver.name)
    seen: list[str] = []

    def action(trigger: str) -> Outcome:
        seen.append(trigger)
        assert receiver.read()["RELOADING"] == "1"  # said before the work starts
        return Outcome("reload of x refused: 1 problem(s)")

    notifier.reload(action, "SIGHUP")
    assert seen == ["SIGHUP"]
    assert receiver.read() == {"READY": "1", "STATUS": "reload of x refused: 1 problem(s)"}


def test_gone_socket_is_counted_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = Notifier(str(tmp_path / "nobody"))
    notifier.ready("a")
    notifier.ping()
    assert notifier.failed == 2
    assert notifier.sent == 0
    assert len([r for r in caplog.records if "not delivered" in r.message]) == 1


def test_watchdog_pings_from_the_loop(receiver: Receiver) -> None:
    notifier = Notifier(receiver.name, watchdog=0.05)

    async def pings() -> list[dict[str, str]]:
        loop = asyncio.get_running_loop()
        receiver.sock.setblocking(False)
        notifier.start_watchdog(loop)
        try:
            return [
                parse_message(await asyncio.wait_for(loop.sock_recv(receiver.sock, 4096), 5.0))
                for _ in range(3)
            ]
        finally:
            notifier.close()

    assert asyncio.run(pings()) == [{"WATCHDOG": "1"}] * 3


# ---- the workers' relay ----------------------------------------------------------------------------
def test_relay_ready_once_every_worker_is(receiver: Receiver) -> None:
    env = {"NOTIFY_SOCKET": receiver.name, "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}
    relay = NotifyRelay(Notifier(receiver.name), env)
    try:
        assert env["NOTIFY_SOCKET"].startswith("@siplb-")
        assert "WATCHDOG_USEC" not in env  # the parent pings, the workers do not
        worker = Notifier.from_environment(env)  # what a forked worker finds
        worker.ready("worker 0 serving")
        relay.poll([os.getpid(), 999_999])  # a second worker not ready yet
        assert receiver.empty()
        relay.poll([os.getpid()])  # the other one died: every live worker is ready
        assert receiver.read() == {"READY": "1", "STATUS": "1 worker serving"}
        worker.ready("worker 0 serving")  # a restarted worker changes nothing
        relay.poll([os.getpid()])
        assert receiver.empty()
        relay.reloading()
        assert receiver.read()["RELOADING"] == "1"
        relay.poll([os.getpid()])
        assert receiver.empty()  # no READY before the worker reloaded
        worker.reload(lambda trigger: Outcome(f"reloaded ({trigger})"), "SIGHUP")
        relay.poll([os.getpid()])
        assert receiver.read() == {"READY": "1", "STATUS": "1 worker serving"}
    finally:
        relay.close()


def test_relay_without_systemd_leaves_workers_silent() -> None:
    env = {"WATCHDOG_USEC": "1000000"}
    relay = NotifyRelay(Notifier(None), env)
    assert relay.waitables() == []
    assert env == {}
    relay.poll([1])
    relay.tick(time.monotonic())
    relay.close()


def test_relay_watchdog_ticks_at_its_interval(receiver: Receiver) -> None:
    relay = NotifyRelay(Notifier(receiver.name, watchdog=10.0), {})
    try:
        relay.tick(100.0)
        assert receiver.read() == {"WATCHDOG": "1"}
        relay.tick(105.0)
        assert receiver.empty()
        relay.tick(110.0)
        assert receiver.read() == {"WATCHDOG": "1"}
    finally:
        relay.close()
