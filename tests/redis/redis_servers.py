"""Real ``redis-server`` and ``redis-sentinel`` processes on loopback ports, for tests.

    server = RedisServer(tmp_path / "r1")
    server.start()            # waits for PING, with a deadline
    ...
    server.kill()             # SIGKILL by PID (a crash); server.start() again: same port

    group = SentinelGroup(tmp_path)   # a primary, one replica, one Sentinel (quorum 1)
    group.start()             # waits until the Sentinel knows the replica
    group.primary.kill()      # the Sentinel promotes the replica within a couple of seconds

Every process runs in its own folder under the test's ``tmp_path`` (no RDB, no AOF) and is
stopped by its PID. The folder holding these tests has no ``__init__.py`` on purpose: a
package named ``redis`` in ``tests/`` would hide redis-py.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

HOST = "127.0.0.1"
START_DEADLINE = 10.0
SERVICE = "siplbtest"
DOWN_AFTER_MS = 500  # the Sentinel's down-after-milliseconds
FAILOVER_TIMEOUT_MS = 2000


_handed_out: set[int] = set()


def free_port() -> int:
    """A TCP port free on ``HOST`` now, never handed out twice by this process."""
    for _ in range(100):
        with socket.socket() as sock:
            sock.bind((HOST, 0))
            port: int = sock.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise AssertionError("no free port")


def redis_available() -> bool:
    return shutil.which("redis-server") is not None and shutil.which("redis-sentinel") is not None


def command(port: int, *args: str, timeout: float = 0.5) -> str:
    """One command on a fresh connection, its reply as text (RESP2 arrays flattened)."""
    request = f"*{len(args)}\r\n" + "".join(f"${len(a)}\r\n{a}\r\n" for a in args)
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.sendall(request.encode())
        data = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
            if _complete(data):
                break
        return data.decode(errors="replace")


def _complete(data: bytes) -> bool:
    # Good enough for the replies these helpers read: a simple line, or a reply whose last
    # line ended (arrays and bulk strings arrive in one segment on loopback).
    return data.endswith(b"\r\n")


def wait_for(check: object, what: str, deadline: float = START_DEADLINE) -> None:
    """Poll ``check()`` until it is true, or fail after ``deadline`` seconds."""
    assert callable(check)
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.02)
    raise AssertionError(f"timed out after {deadline:g} s waiting for {what}")


def _terminate(process: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM, then SIGKILL after 5 s; waits for the process to be gone."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


@contextlib.contextmanager
def running_redis(folder: Path) -> Iterator[RedisServer]:
    """A started ``redis-server`` in ``folder``, stopped on exit; fails (never skips) when the
    Debian packages are missing."""
    if not redis_available():
        pytest.fail("redis-server and redis-sentinel are needed (make system-deps)")
    server = RedisServer(folder)
    server.start()
    try:
        yield server
    finally:
        server.stop()


class RedisServer:
    """One ``redis-server`` on ``HOST``; its port stays the same across restarts."""

    def __init__(self, folder: Path, port: int | None = None, *, replica_of: int | None = None):
        self.folder = folder
        self.port = port if port is not None else free_port()
        self.replica_of = replica_of
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        args = ["redis-server", "--port", str(self.port), "--bind", HOST, "--save", ""]
        args += ["--appendonly", "no", "--dir", str(self.folder), "--daemonize", "no"]
        args += ["--logfile", str(self.folder / "redis.log")]
        args += ["--repl-diskless-sync-delay", "0"]  # a replica syncs at once, not after 5 s
        if self.replica_of is not None:
            args += ["--replicaof", HOST, str(self.replica_of)]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_for(self._answers, f"redis-server on port {self.port}")

    def _answers(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            log = (self.folder / "redis.log").read_text(errors="replace")[-2000:]
            raise AssertionError(f"redis-server exited ({self.process.returncode}): {log}")
        return command(self.port, "PING").startswith("+PONG")

    def kill(self) -> None:
        """SIGKILL, as a crash would; waits for the process to be gone."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=5)
        self.process = None

    def stop(self) -> None:
        _terminate(self.process)
        self.process = None


class Sentinel:
    """One ``redis-sentinel`` watching ``SERVICE`` on ``primary_port``."""

    def __init__(self, folder: Path, primary_port: int, *, quorum: int = 1) -> None:
        self.folder = folder
        self.port = free_port()
        self.primary_port = primary_port
        self.quorum = quorum
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        conf = self.folder / "sentinel.conf"  # the Sentinel rewrites it: a file of its own
        conf.write_text(
            f"port {self.port}\nbind {HOST}\ndir {self.folder}\n"
            f"logfile {self.folder / 'sentinel.log'}\n"
            f"sentinel monitor {SERVICE} {HOST} {self.primary_port} {self.quorum}\n"
            f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}\n"
            f"sentinel parallel-syncs {SERVICE} 1\n"
        )
        self.process = subprocess.Popen(
            ["redis-sentinel", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        wait_for(lambda: command(self.port, "PING").startswith("+PONG"), "redis-sentinel")

    def primary(self) -> int | None:
        """The primary's port as this Sentinel sees it."""
        reply = command(self.port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
        lines = reply.split("\r\n")
        return int(lines[4]) if len(lines) > 4 and lines[4].isdigit() else None

    def knows_replicas(self) -> bool:
        """Whether the Sentinel sees a replica it could promote (connected, link to the
        primary up): before that, a failover finds no good replica."""
        lines = command(self.port, "SENTINEL", "REPLICAS", SERVICE).split("\r\n")
        values = [line for line in lines if line and line[0] not in "*$"]
        fields = dict(zip(values[::2], values[1::2], strict=False))
        return fields.get("flags") == "slave" and fields.get("master-link-status") == "ok"

    def stop(self) -> None:
        _terminate(self.process)
        self.process = None


class SentinelGroup:
    """A primary, one replica of it and one Sentinel (quorum 1) watching them."""

    def __init__(self, folder: Path) -> None:
        self.primary = RedisServer(folder / "primary")
        self.replica = RedisServer(folder / "replica", replica_of=self.primary.port)
        self.sentinel = Sentinel(folder / "sentinel", self.primary.port)

    def start(self) -> None:
        self.primary.start()
        self.replica.start()
        wait_for(
            lambda: "master_link_status:up" in command(self.replica.port, "INFO", "replication"),
            "the replica's sync",
        )
        self.sentinel.start()
        wait_for(self.sentinel.knows_replicas, "the Sentinel to see a replica it can promote")

    def stop(self) -> None:
        self.sentinel.stop()
        self.replica.stop()
        self.primary.stop()
