"""Real ``rtpengine`` processes on loopback ports, for tests (Debian ``rtpengine-daemon``).

    engine = start_engine()            # free ng port and RTP range; waits for its ping
    engine.address                     # "udp:127.0.0.1:PORT", as [media] engines names it
    engine.ng({"command": "query", "call-id": "c1"})   # one command, the reply as a dict
    engine.kill()                      # SIGKILL by PID (a crash)
    engine.freeze(); engine.thaw()     # SIGSTOP / SIGCONT: a hung engine, silent as a dead host
    engine.stop()                      # SIGTERM by PID, SIGKILL after 5 s

or ``with running_engine(tmp_path) as engine: ...``. Every engine runs in userspace
(``--table=-1``, no kernel module), reads no config file (``--config-file=none``, so the
package's /etc/rtpengine/rtpengine.conf does not matter, nor its systemd unit), binds only
127.0.0.1 and writes its log to ``<folder>/rtpengine.log``. ``redis=PORT`` makes it keep its
calls in that Redis database and read them back (``--redis`` and ``--redis-write``, with
``--subscribe-keyspace`` so a standby takes over a dead engine's calls).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from siplb.media.bencode import Encodable, decode, encode

HOST = "127.0.0.1"
START_DEADLINE = 10.0
RTP_PORTS_PER_ENGINE = 1000  # 500 RTP + RTCP pairs: an offer takes one pair, its answer one
RTP_LOW, RTP_HIGH = 20_000, 60_000
_cookies = itertools.count(1)
_handed_out: set[int] = set()
# Each test process starts at its own place in 20000-59999 and goes round, so two test runs on
# one machine rarely share a range (rtpengine skips a port in use anyway).
_SLOTS = (RTP_HIGH - RTP_LOW) // RTP_PORTS_PER_ENGINE
_rtp_slots = itertools.count(os.getpid() % _SLOTS)


def rtpengine_binary() -> str | None:
    """Where the Debian package puts the daemon (/usr/bin/rtpengine in 10.5)."""
    return shutil.which("rtpengine") or next(
        (p for p in ("/usr/bin/rtpengine", "/usr/sbin/rtpengine") if os.access(p, os.X_OK)), None
    )


def free_udp_port() -> int:
    """A UDP port free on ``HOST`` now, never handed out twice by this process."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((HOST, 0))
            port: int = sock.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise AssertionError("no free UDP port")


def rtp_range() -> tuple[int, int]:
    """A fresh (port_min, port_max) for one engine."""
    base = RTP_LOW + next(_rtp_slots) % _SLOTS * RTP_PORTS_PER_ENGINE
    return base, base + RTP_PORTS_PER_ENGINE - 1


def ng_request(port: int, command: Mapping[str, Any], *, timeout: float = 2.0) -> dict[str, Any]:
    """Send one ng command to ``HOST:port`` and return its reply's dictionary.

    Sent again every 0.25 s until the reply with our cookie arrives (UDP may drop); raises
    ``TimeoutError`` after ``timeout``.
    """
    cookie = f"t{os.getpid()}_{next(_cookies)}".encode()
    datagram = cookie + b" " + encode(dict(command))
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((HOST, port))
        while (left := deadline - time.monotonic()) > 0:
            sock.send(datagram)
            sock.settimeout(min(0.25, left))
            with contextlib.suppress(TimeoutError, ConnectionRefusedError):
                while True:
                    reply = sock.recv(65_536)
                    head, _, body = reply.partition(b" ")
                    if head == cookie:
                        result = decode(body)
                        assert isinstance(result, dict), result
                        return result
    raise TimeoutError(f"no ng reply from {HOST}:{port} within {timeout:g} s")


class Engine:
    """One ``rtpengine`` process; the ng port and RTP range stay the same across restarts."""

    def __init__(
        self,
        folder: Path,
        port_ng: int,
        port_min: int,
        port_max: int,
        *,
        redis: int | None = None,
        redis_db: int = 1,
        extra: tuple[str, ...] = (),
    ) -> None:
        self.folder = folder
        self.port_ng = port_ng
        self.port_min = port_min
        self.port_max = port_max
        self.redis = redis
        self.redis_db = redis_db
        self.extra = extra
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """The engine as ``[media] engines`` names it."""
        return f"udp:{HOST}:{self.port_ng}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def args(self) -> list[str]:
        binary = rtpengine_binary()
        if binary is None:
            pytest.fail("rtpengine is not installed (make system-deps: rtpengine-daemon)")
        args = [binary, "--config-file=none", "--table=-1", "--foreground", "--log-stderr"]
        args += [f"--interface={HOST}", f"--listen-ng={HOST}:{self.port_ng}"]
        args += [f"--port-min={self.port_min}", f"--port-max={self.port_max}"]
        args += ["--log-level=6", f"--pidfile={self.folder / 'rtpengine.pid'}"]
        args += ["--delete-delay=0"]  # a deleted call is gone at once (default: kept 30 s)
        if self.redis is not None:
            db = f"{HOST}:{self.redis}/{self.redis_db}"
            args += [f"--redis={db}", f"--redis-write={db}"]
            args += [f"--subscribe-keyspace={self.redis_db}", "--no-redis-required"]
        return args + list(self.extra)

    def start(self) -> None:
        """Start it and wait until it answers a ping (fails with its log when it exits)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with (self.folder / "rtpengine.log").open("ab") as log:
            self.process = subprocess.Popen(
                self.args(), stdout=log, stderr=subprocess.STDOUT, cwd=self.folder
            )
        deadline = time.monotonic() + START_DEADLINE
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"rtpengine exited ({self.process.returncode}): {self.log()}")
            if self.ping(timeout=0.2):
                return
        self.kill()
        raise AssertionError(f"rtpengine did not answer a ping in {START_DEADLINE:g} s")

    def ping(self, *, timeout: float = 1.0) -> bool:
        """Whether it answers ``ping`` with ``pong`` within ``timeout``."""
        try:
            return self.ng({"command": "ping"}, timeout=timeout).get("result") == b"pong"
        except TimeoutError:
            return False

    def ng(self, command: Mapping[str, Any], *, timeout: float = 2.0) -> dict[str, Any]:
        """One ng command, its reply (a dict with bytes values) or ``TimeoutError``."""
        return ng_request(self.port_ng, command, timeout=timeout)

    def query(self, call_id: str | bytes) -> dict[str, Any]:
        """Its ``query`` reply for ``call_id`` (``result`` is ``error`` for an unknown call)."""
        return self.ng({"command": "query", "call-id": call_id})

    def knows(self, call_id: str | bytes) -> bool:
        """Whether it has the call (``query`` answered ``ok``)."""
        return self.query(call_id).get("result") == b"ok"

    def log(self) -> str:
        path = self.folder / "rtpengine.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def kill(self) -> None:
        """SIGKILL by PID, as a crash would; waits for the process to be gone."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=5)
        self.process = None

    def freeze(self) -> None:
        """SIGSTOP by PID: a hung engine (no reply, and no ICMP error, as from a dead host).
        Returns once every thread of it is stopped (the signal alone may let one more command
        through)."""
        if self.process is None:
            return
        self.process.send_signal(signal.SIGSTOP)
        tasks = Path(f"/proc/{self.process.pid}/task")
        deadline = time.monotonic() + START_DEADLINE
        while not all(_stopped(task / "stat") for task in tasks.iterdir()):
            if time.monotonic() > deadline:
                raise AssertionError("rtpengine did not stop on SIGSTOP")
            time.sleep(0.005)

    def thaw(self) -> None:
        """SIGCONT by PID: the frozen engine runs again."""
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """SIGTERM by PID, SIGKILL after 5 s; waits for the process to be gone."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGCONT)  # a frozen engine must run to hear SIGTERM
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def _stopped(stat: Path) -> bool:
    """Whether the thread whose ``/proc/.../stat`` this is has stopped (state T)."""
    try:
        return stat.read_text().rpartition(")")[2].split()[0] in ("T", "t")
    except (OSError, IndexError):
        return True  # a thread gone is not running either


def start_engine(
    port_ng: int | None = None,
    port_min: int | None = None,
    port_max: int | None = None,
    *,
    folder: Path | None = None,
    redis: int | None = None,
    redis_db: int = 1,
    extra: tuple[str, ...] = (),
) -> Engine:
    """A started engine (waits for its ping); free ports when none are given. The caller
    stops it (``running_engine`` does so on exit)."""
    if port_min is None or port_max is None:
        port_min, port_max = rtp_range()
    if folder is None:
        folder = Path(tempfile.mkdtemp(prefix="rtpengine-"))
    engine = Engine(
        folder,
        port_ng if port_ng is not None else free_udp_port(),
        port_min,
        port_max,
        redis=redis,
        redis_db=redis_db,
        extra=extra,
    )
    engine.start()
    return engine


@contextlib.contextmanager
def running_engine(folder: Path, **kwargs: Any) -> Iterator[Engine]:
    """``start_engine(folder=folder, ...)``, stopped on exit (also on failure)."""
    engine = start_engine(folder=folder, **kwargs)  # a failed start leaves no process
    try:
        yield engine
    finally:
        engine.stop()


class SilentEngine:
    """A UDP socket on ``HOST`` that reads ng commands and never answers: an engine that hangs.

    ``received`` counts the datagrams it read (via ``drain()``)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((HOST, 0))
        self.sock.setblocking(False)
        self.port: int = self.sock.getsockname()[1]
        self.received = 0

    @property
    def address(self) -> str:
        return f"udp:{HOST}:{self.port}"

    def drain(self) -> int:
        """Read what arrived so far; returns the total count."""
        with contextlib.suppress(BlockingIOError):
            while True:
                self.sock.recv(65_536)
                self.received += 1
        return self.received

    def close(self) -> None:
        self.sock.close()


__all__ = [
    "HOST",
    "Encodable",
    "Engine",
    "SilentEngine",
    "free_udp_port",
    "ng_request",
    "rtp_range",
    "rtpengine_binary",
    "running_engine",
    "start_engine",
]
