"""``siplb run`` under a stand-in for systemd: the test binds the ``$NOTIFY_SOCKET`` datagram
socket itself and reads what a real balancer process says on it, as systemd would for a unit of
``Type=notify`` with ``NotifyAccess=main``.

The socket passes credentials (``SO_PASSCRED``), so each notification's sender pid is known:
with ``workers = 2`` every one must come from the parent, the unit's main process.
"""

from __future__ import annotations

import itertools
import os
import secrets
import signal
import socket
import struct
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from e2e.balancer import ADMIN_TOKEN, admin_request
from e2e.harness import LOOPBACK, ManagedProcess, StopStep, free_port, sip_ping

pytestmark = pytest.mark.e2e

STOP = (StopStep(signal.SIGTERM, 10.0), StopStep(signal.SIGKILL, 2.0))
UCRED = struct.Struct("=iII")
START_TIMEOUT = 15.0  # two cores shared with other runs: a start can take a few seconds


@dataclass(frozen=True, slots=True)
class Note:
    pid: int
    fields: dict[str, str]
    at: float  # time.monotonic() when read


class NotifySocket:
    """The systemd side: one datagram socket, every notification with its sender's pid."""

    def __init__(self, address: str | bytes) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(address)
        self.seen: list[Note] = []

    def next(self, timeout: float, process: ManagedProcess) -> Note:
        """The next notification within ``timeout`` seconds (fails if the process exits)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail(f"no notification in {timeout} s\n{process.output_tail()}")
            self.sock.settimeout(min(left, 0.5))
            try:
                data, ancillary, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(UCRED.size))
            except TimeoutError:
                if process.poll() is not None:
                    pytest.fail(f"siplb exited ({process.returncode})\n{process.output_tail()}")
                continue
            pid = next(
                UCRED.unpack_from(raw)[0]
                for level, kind, raw in ancillary
                if (level, kind) == (socket.SOL_SOCKET, socket.SCM_CREDENTIALS)
            )
            fields = dict(line.split("=", 1) for line in data.decode().split("\n") if "=" in line)
            note = Note(pid, fields, time.monotonic())
            self.seen.append(note)
            return note

    def until(self, name: str, timeout: float, process: ManagedProcess) -> Note:
        """Skip watchdog pings (and anything else) until a notification carrying ``name``."""
        deadline = time.monotonic() + timeout
        while True:
            note = self.next(max(0.1, deadline - time.monotonic()), process)
            if name in note.fields:
                return note

    def close(self) -> None:
        self.sock.close()


@dataclass
class Service:
    process: ManagedProcess
    notify: NotifySocket
    sip: tuple[str, int]
    admin_url: str


def _config(path: Path, sip_port: int, admin_port: int, workers: int) -> None:
    dead = free_port()  # a destination nobody answers: readiness must not wait for one
    path.write_text(
        f"""[[listen]]
transport = "udp"
address = "{LOOPBACK}:{sip_port}"

[[sets]]
name = "pbx"
destinations = [{{ uri = "sip:{LOOPBACK}:{dead}" }}]

[health]
interval = 1.0
timeout = 0.5
withdraw_delay = 0.2

[proxy]
grace_period = 0.5
workers = {workers}

[admin]
listen = "{LOOPBACK}:{admin_port}"
token = "{ADMIN_TOKEN}"

[log]
format = "json"
"""
    )


@pytest.fixture
def service(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Service]:
    """A ``siplb run`` with ``NOTIFY_SOCKET`` set; ``request.param``: (workers, abstract?,
    WATCHDOG_USEC or None)."""
    workers, abstract, watchdog = request.param
    if abstract:
        name = f"@siplb-test-{os.getpid()}-{secrets.token_hex(4)}"
        notify = NotifySocket(b"\0" + name[1:].encode())
    else:
        name = str(tmp_path / "notify")
        notify = NotifySocket(name)
    sip, admin = free_port(), free_port()
    config = tmp_path / "siplb.toml"
    _config(config, sip, admin, workers)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "WATCHDOG_"))}
    env["NOTIFY_SOCKET"] = name
    if watchdog is not None:
        env["WATCHDOG_USEC"] = str(watchdog)
    process = ManagedProcess(
        "siplb", [sys.executable, "-m", "siplb", "run", "-c", str(config)], cwd=tmp_path, env=env
    )
    try:
        yield Service(process, notify, (LOOPBACK, sip), f"http://{LOOPBACK}:{admin}")
    finally:
        process.stop(STOP)
        notify.close()


def _assert_serving(svc: Service) -> None:
    """Right after READY=1: the SIP listener answers an OPTIONS, the admin API a request."""
    reply = sip_ping(svc.sip, timeout=1.0)
    assert reply is not None, "READY=1 came before the SIP listener answered"
    assert reply.startswith(b"SIP/2.0 200 "), reply[:40]
    status, _ = admin_request(svc.admin_url + "/api/status", "GET", None, token=ADMIN_TOKEN)
    assert status == 200


def _check_reload(svc: Service, main_pid: int) -> None:
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    svc.process.signal(signal.SIGHUP)
    reloading = svc.notify.until("RELOADING", 10.0, svc.process)
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert reloading.pid == main_pid
    assert reloading.fields["RELOADING"] == "1"
    assert before <= int(reloading.fields["MONOTONIC_USEC"]) <= after
    ready = svc.notify.until("READY", 10.0, svc.process)
    assert ready.pid == main_pid
    assert ready.fields["READY"] == "1"
    _assert_serving(svc)


def _check_stop(svc: Service, main_pid: int) -> None:
    svc.process.signal(signal.SIGTERM)
    stopping = svc.notify.until("STOPPING", 10.0, svc.process)
    assert stopping.pid == main_pid
    assert stopping.fields["STOPPING"] == "1"
    assert svc.process.wait(15.0) == 0, svc.process.output_tail()


@pytest.mark.parametrize("service", [(1, False, 1_000_000)], indirect=True)
def test_single_process_ready_reload_watchdog_stop(service: Service) -> None:
    svc = service
    ready = svc.notify.until("READY", START_TIMEOUT, svc.process)
    assert ready.pid == svc.process.pid
    assert ready.fields["READY"] == "1"
    assert "listener" in ready.fields["STATUS"]
    _assert_serving(svc)
    # WATCHDOG_USEC=1 s: a ping every 0.5 s; three in a row, none more than 1 s apart
    pings = [svc.notify.until("WATCHDOG", 3.0, svc.process) for _ in range(3)]
    assert all(p.fields["WATCHDOG"] == "1" and p.pid == svc.process.pid for p in pings)
    assert max(b.at - a.at for a, b in itertools.pairwise(pings)) < 1.0
    _check_reload(svc, svc.process.pid)
    _check_stop(svc, svc.process.pid)


@pytest.mark.parametrize("service", [(2, True, None)], indirect=True)
def test_workers_only_the_parent_notifies(service: Service) -> None:
    """``workers = 2`` on an abstract ``@`` socket: READY=1 once both workers serve (worker 0
    holds the admin API), and every notification from the parent (``NotifyAccess=main``)."""
    svc = service
    ready = svc.notify.until("READY", START_TIMEOUT, svc.process)
    assert ready.fields["STATUS"] == "2 workers serving"
    _assert_serving(svc)
    _check_reload(svc, svc.process.pid)
    _check_stop(svc, svc.process.pid)
    senders = {note.pid for note in svc.notify.seen}
    assert senders == {svc.process.pid}
    assert not any("WATCHDOG" in note.fields for note in svc.notify.seen)  # none was asked


@pytest.mark.parametrize("service", [(1, False, None)], indirect=True)
def test_refused_reload_still_ends_with_ready(service: Service, tmp_path: Path) -> None:
    """A file that fails its checks is refused, the running config stays: systemd must still
    see the reload end (READY=1), with the refusal as STATUS."""
    svc = service
    svc.notify.until("READY", START_TIMEOUT, svc.process)
    (tmp_path / "siplb.toml").write_text("[[listen]]\naddress = 'not an address'\n")
    svc.process.signal(signal.SIGHUP)
    svc.notify.until("RELOADING", 10.0, svc.process)
    ready = svc.notify.until("READY", 10.0, svc.process)
    assert "refused" in ready.fields["STATUS"]
    _assert_serving(svc)
