"""``--log-target syslog`` (a unix datagram socket, or UDP) and ``--log-target journald`` (the
journal's native protocol), each read by a socket the test binds in place of the daemon."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e.cluster import wait_for
from e2e.harness import LOOPBACK, free_port
from test_logs import parse_journal

from .run import Run, start

pytestmark = pytest.mark.e2e


class Sink:
    """A datagram socket standing in for syslog or journald: every datagram it received."""

    def __init__(self, family: int, address: str | tuple[str, int]) -> None:
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.setblocking(False)
        self.received: list[bytes] = []

    def read(self) -> list[bytes]:
        while True:
            try:
                self.received.append(self.sock.recv(65536))
            except BlockingIOError:
                return self.received

    def wait(self, what: str, match: bytes) -> bytes:
        wait_for(what, lambda: any(match in d for d in self.read()), timeout=10.0)
        return next(d for d in self.received if match in d)


@pytest.fixture
def runs() -> Iterator[list[Run]]:
    started: list[Run] = []
    yield started
    for run in started:
        run.stop()


def test_syslog_over_a_unix_socket(tmp_path: Path, runs: list[Run]) -> None:
    path = str(tmp_path / "log.sock")
    sink = Sink(socket.AF_UNIX, path)
    dest = f"sip:{LOOPBACK}:{free_port()}"
    run = start(tmp_path, "--log-target", "syslog", "--syslog-address", path, destinations=[dest])
    runs.append(run)
    line = sink.wait("listening", b"listening on udp").decode()
    # <30>: facility daemon (3), severity info (6); the tag syslog daemons read the name from
    assert line.startswith(f"<30>siplb[{run.process.pid}]: INFO    siplb: listening on udp ")
    assert line.rstrip("\0").endswith("listener=edge")
    down = sink.wait("down", b" -> down").decode()
    assert down.startswith(f"<28>siplb[{run.process.pid}]: WARNING siplb: destination {dest}:")
    assert "set=pbx" in down
    assert run.text() == ""  # nothing on stderr meanwhile
    assert run.stop() == 0


def test_json_to_syslog_over_udp(tmp_path: Path, runs: list[Run]) -> None:
    port = free_port()
    sink = Sink(socket.AF_INET, (LOOPBACK, port))
    address = f"{LOOPBACK}:{port}"
    dest = f"sip:{LOOPBACK}:{free_port()}"
    args = ("--log-target", "syslog", "--syslog-address", address, "--log-format", "json")
    run = start(tmp_path, *args, destinations=[dest])
    runs.append(run)
    datagram = sink.wait("down", b'"new": "down"').decode().rstrip("\0")
    prefix = f"<28>siplb[{run.process.pid}]: "
    assert datagram.startswith(prefix)
    entry = json.loads(datagram[len(prefix) :])
    assert (entry["destination"], entry["set"], entry["new"]) == (dest, "pbx", "down")


def test_journald_native_protocol(tmp_path: Path, runs: list[Run]) -> None:
    path = str(tmp_path / "journal.sock")
    sink = Sink(socket.AF_UNIX, path)
    dest = f"sip:{LOOPBACK}:{free_port()}"
    args = ("--log-target", "journald", "--journal-socket", path)
    run = start(tmp_path, *args, destinations=[dest])
    runs.append(run)
    listening = parse_journal(sink.wait("listening", b"MESSAGE=listening on udp"))
    assert listening["SYSLOG_IDENTIFIER"] == "siplb"
    assert listening["PRIORITY"] == "6"
    assert listening["LISTENER"] == "edge"
    assert listening["TRANSPORT"] == "udp"
    assert listening["ADDRESS"] == f"{LOOPBACK}:{run.address[1]}"
    down = parse_journal(sink.wait("down", b"\nNEW=down\n"))
    assert down["PRIORITY"] == "4"
    assert (down["DESTINATION"], down["SET"], down["EVENT"]) == (dest, "pbx", "StateChanged")
    assert down["MESSAGE"].startswith(f"destination {dest}: ")
    assert run.text() == ""
    assert run.stop() == 0


def test_a_missing_log_target_is_a_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "siplb.toml"
    config.write_text(
        f'[[listen]]\ntransport = "udp"\naddress = "{LOOPBACK}:{free_port()}"\n\n'
        f'[[sets]]\nname = "pbx"\ndestinations = [{{ uri = "sip:{LOOPBACK}:9" }}]\n'
    )
    absent = str(tmp_path / "absent.sock")
    for args in (
        ["--log-target", "journald", "--journal-socket", absent],
        ["--log-target", "syslog", "--syslog-address", absent],
    ):
        done = subprocess.run(
            [sys.executable, "-m", "siplb", "run", "-c", str(config), *args],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
        assert done.returncode == 1
        assert done.stderr.startswith(f"siplb: cannot log to {args[1]}: "), done.stderr
        assert absent in done.stderr
        assert "Traceback" not in done.stderr
