"""Processes, loopback ports and raw datagrams for the end-to-end tests.

The SIPp and Kamailio runners (``sipp.py``, ``kamailio.py``) are built on this
module; the API of all three is described at the top of ``sipp.py``.

Everything here stays on loopback, and every process started here is stopped
by its own PID (its process group only as a last resort for children it left
behind).
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

LOOPBACK = "127.0.0.1"

# Ports handed out are taken below the kernel's ephemeral range, so that an
# outgoing connection never lands on a port a test is about to bind.
_PORT_FLOOR = 10000
_PORT_CEILING_DEFAULT = 32768

Address = tuple[str, int]


class HarnessError(RuntimeError):
    """A process of the harness could not be started or did not come up."""


# --- loopback ports ---------------------------------------------------------------------------

_handed_out: set[int] = set()
_rng = random.Random(os.getpid() ^ time.monotonic_ns())


def _ephemeral_floor() -> int:
    try:
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
        return int(text.split()[0])
    except (OSError, ValueError, IndexError):
        return _PORT_CEILING_DEFAULT


def _bindable(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(family, kind) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                return False
    return True


def free_port(host: str = LOOPBACK, *, span: int = 1) -> int:
    """A port P such that P .. P+span-1 are free for both UDP and TCP on `host`.

    Ports are never handed out twice by one test process, so processes started
    one after the other cannot collide even before they bind.
    """
    ceiling = _ephemeral_floor() - span
    for _ in range(2000):
        port = _rng.randrange(_PORT_FLOOR, ceiling)
        block = range(port, port + span)
        if any(p in _handed_out for p in block):
            continue
        if all(_bindable(host, p) for p in block):
            _handed_out.update(block)
            return port
    raise HarnessError(f"no free block of {span} port(s) on {host}")


# --- readiness ---------------------------------------------------------------------------------

_TCP_LISTEN = "0A"


def _proc_net_entries(transport: str) -> Iterable[tuple[str, int, str]]:
    """(address hex, port, state) of every local socket in /proc/net."""
    base = "udp" if transport == "udp" else "tcp"
    for name in (base, base + "6"):
        try:
            lines = Path("/proc/net", name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 4:
                continue
            addr_hex, _, port_hex = fields[1].partition(":")
            yield addr_hex, int(port_hex, 16), fields[3]


def _addr_hex_matches(addr_hex: str, host: str) -> bool:
    if set(addr_hex) == {"0"}:
        return True  # wildcard bind
    if len(addr_hex) == 8:
        packed = bytes.fromhex(addr_hex)[::-1]
        return socket.inet_ntop(socket.AF_INET, packed) == host
    words = [bytes.fromhex(addr_hex[i : i + 8])[::-1] for i in range(0, 32, 8)]
    text = socket.inet_ntop(socket.AF_INET6, b"".join(words))
    return text == host or text == f"::ffff:{host}"


def is_bound(host: str, port: int, transport: str = "udp") -> bool:
    """Whether some process has a UDP socket bound, or a TCP socket listening, on host:port."""
    for addr_hex, bound_port, state in _proc_net_entries(transport):
        if bound_port != port or not _addr_hex_matches(addr_hex, host):
            continue
        if transport == "udp" or state == _TCP_LISTEN:
            return True
    return False


def wait_bound(
    host: str,
    port: int,
    transport: str = "udp",
    *,
    timeout: float = 5.0,
    process: ManagedProcess | None = None,
) -> None:
    """Wait until host:port is bound; fail early if `process` exits meanwhile."""
    deadline = time.monotonic() + timeout
    while not is_bound(host, port, transport):
        if process is not None and process.poll() is not None:
            raise HarnessError(
                f"{process.name} exited with {process.returncode} before binding "
                f"{transport} {host}:{port}\n{process.output_tail()}"
            )
        if time.monotonic() > deadline:
            where = f"\n{process.output_tail()}" if process is not None else ""
            raise HarnessError(f"nothing bound {transport} {host}:{port} in {timeout} s{where}")
        time.sleep(0.02)


# --- processes ---------------------------------------------------------------------------------

STOP_GRACE = 3.0


@dataclass(frozen=True, slots=True)
class StopStep:
    """Send `signum`, then wait up to `wait` seconds for the process to exit."""

    signum: int
    wait: float


DEFAULT_STOP: tuple[StopStep, ...] = (
    StopStep(signal.SIGTERM, STOP_GRACE),
    StopStep(signal.SIGKILL, STOP_GRACE),
)


class ManagedProcess:
    """A child process with its output in files, stopped by PID.

    It runs in a session of its own, so terminal signals do not reach it and
    children it forks (Kamailio's workers) share its process group.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        cwd: Path,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.cwd = cwd
        self.stdout_path = cwd / f"{name}.stdout"
        self.stderr_path = cwd / f"{name}.stderr"
        cwd.mkdir(parents=True, exist_ok=True)
        (cwd / f"{name}.cmd").write_text(" ".join(self.argv) + "\n")
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self._popen = subprocess.Popen(
                self.argv,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=dict(env) if env is not None else None,
                start_new_session=True,
            )
        self.pid = self._popen.pid

    @property
    def returncode(self) -> int | None:
        return self._popen.returncode

    def poll(self) -> int | None:
        return self._popen.poll()

    def wait(self, timeout: float) -> int | None:
        """Wait up to `timeout` seconds; the exit code, or None if still running."""
        try:
            return self._popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def signal(self, signum: int) -> None:
        if self._popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    def stop(self, steps: Sequence[StopStep] = DEFAULT_STOP) -> int | None:
        """Signal the process step by step until it exits; its exit code."""
        for step in steps:
            if self._popen.poll() is not None:
                break
            self.signal(step.signum)
            self.wait(step.wait)
        self._reap_group()
        return self._popen.returncode

    def _reap_group(self) -> None:
        """Kill what is left of the process group this process led (forked workers)."""
        if self._popen.poll() is None:
            return
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except OSError as exc:
            if exc.errno not in (errno.ESRCH, errno.EPERM):
                raise

    def output_tail(self, limit: int = 3000) -> str:
        parts = []
        for path in (self.stderr_path, self.stdout_path):
            text = read_tail(path, limit)
            if text.strip():
                parts.append(f"--- {path.name} ---\n{text}")
        return "\n".join(parts)


def read_tail(path: Path, limit: int = 3000) -> str:
    """The last `limit` characters of a text file ('' if it does not exist)."""
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    return data[-limit:].decode("utf-8", "replace")


# --- raw datagrams -----------------------------------------------------------------------------


def send_udp(
    data: bytes | Sequence[bytes],
    address: Address,
    *,
    wait: float = 0.0,
    source: Address | None = None,
    max_replies: int = 100,
) -> list[bytes]:
    """Send one or more raw datagrams to `address` from one socket.

    Returns the datagrams received on that socket within `wait` seconds after
    the last send (stops early after `max_replies`). Nothing is parsed or
    checked, so malformed bytes go out exactly as given.
    """
    host = address[0]
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    payloads = [data] if isinstance(data, bytes) else list(data)
    replies: list[bytes] = []
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.bind(source or (LOOPBACK if family == socket.AF_INET else "::1", 0))
        for payload in payloads:
            sock.sendto(payload, address)
        deadline = time.monotonic() + wait
        while len(replies) < max_replies:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            sock.settimeout(left)
            try:
                reply, _ = sock.recvfrom(65535)
            except (TimeoutError, ConnectionRefusedError):
                # ICMP port unreachable surfaces as ECONNREFUSED on Linux.
                break
            replies.append(reply)
    return replies


def options_request(target: Address, local: Address, *, call_id: str, branch: str) -> bytes:
    """A minimal OPTIONS request from `local` to `target` (for pings and probes)."""
    host, port = target
    lhost, lport = local
    return (
        f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {lhost}:{lport};branch=z9hG4bK{branch};rport\r\n"
        f"Max-Forwards: 70\r\n"
        f"From: <sip:harness@{lhost}>;tag={branch}\r\n"
        f"To: <sip:{host}:{port}>\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: 1 OPTIONS\r\n"
        f"Content-Length: 0\r\n\r\n"
    ).encode()


def sip_ping(address: Address, *, timeout: float = 1.0) -> bytes | None:
    """Send an OPTIONS over UDP; the first response received, or None."""
    host = address[0]
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.bind((LOOPBACK if family == socket.AF_INET else "::1", 0))
        local = sock.getsockname()[:2]
        tag = f"{os.getpid()}x{time.monotonic_ns()}"
        sock.sendto(options_request(address, local, call_id=tag, branch=tag), address)
        sock.settimeout(timeout)
        try:
            reply, _ = sock.recvfrom(65535)
        except (TimeoutError, ConnectionRefusedError):
            return None
    return reply if reply.startswith(b"SIP/2.0 ") else None


def wait_sip_ready(
    address: Address,
    *,
    timeout: float = 5.0,
    process: ManagedProcess | None = None,
) -> bytes:
    """Ping `address` with OPTIONS until something answers; the answer."""
    deadline = time.monotonic() + timeout
    while True:
        reply = sip_ping(address, timeout=0.2)
        if reply is not None:
            return reply
        if process is not None and process.poll() is not None:
            raise HarnessError(
                f"{process.name} exited with {process.returncode}\n{process.output_tail()}"
            )
        if time.monotonic() > deadline:
            raise HarnessError(f"no SIP answer from {address[0]}:{address[1]} in {timeout} s")
