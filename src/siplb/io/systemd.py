"""systemd's service notifications (sd_notify(3)), spoken directly: one datagram of
``NAME=value`` lines to the unix socket named by ``$NOTIFY_SOCKET``.

A unit of ``Type=notify`` is started when ``READY=1`` arrives, not when the process forks, so
``systemctl start siplb`` returns once every listener is bound and the admin API answers, and a
unit ordered ``After=siplb.service`` starts only then. ``RELOADING=1`` (with ``MONOTONIC_USEC``)
and the ``READY=1`` after it frame a SIGHUP reload; ``STOPPING=1`` says the drain has begun;
``WATCHDOG=1`` every half ``$WATCHDOG_USEC`` proves the event loop still turns (``WatchdogSec=``).

Without ``$NOTIFY_SOCKET`` (not under systemd) every call does nothing. A send that fails is
logged once and otherwise ignored: the balancer never stops serving because its supervisor
cannot be told something.

``workers = N``: systemd accepts notifications from the main process only
(``NotifyAccess=main``), the parent, which runs no event loop and binds only the UDP sockets. It
binds a private socket (``NotifyRelay``) and names it to its workers as their
``$NOTIFY_SOCKET``; each worker notifies it exactly as a single process notifies systemd, and
the parent says ``READY=1`` once every live worker has.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import struct
import time
from collections.abc import Callable, Collection, Iterable, MutableMapping
from typing import Protocol

from siplb.words import plural

log = logging.getLogger("siplb")

ENVIRONMENT = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
MAX_MESSAGE = 4096  # a notification is a few short lines; longer ones are not ours
_UCRED = struct.Struct("=iII")  # struct ucred: pid, uid, gid (SCM_CREDENTIALS)


# ---- the pure parts: addresses, intervals, messages -------------------------------------------
def notify_address(value: str | None) -> str | bytes | None:
    """The socket address ``$NOTIFY_SOCKET`` names: a path (``/run/systemd/notify``), or an
    abstract name when it starts with ``@`` (its leading byte is then NUL). Anything else,
    empty or unset: None, no notifications."""
    if not value:
        return None
    if value.startswith("@") and len(value) > 1:
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None


def watchdog_interval(environ: MutableMapping[str, str], pid: int) -> float | None:
    """Seconds between ``WATCHDOG=1`` pings: half of ``$WATCHDOG_USEC``, as sd_watchdog_enabled(3)
    advises. None when it is unset, not a positive integer, or ``$WATCHDOG_PID`` names another
    process (the watchdog is then that process's)."""
    usec = environ.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    owner = environ.get("WATCHDOG_PID", "")
    if owner and (not owner.isdigit() or int(owner) != pid):
        return None
    return int(usec) / 2_000_000


def message(fields: Iterable[tuple[str, str]]) -> bytes:
    """One notification: ``NAME=value`` lines. A value is one line (a newline would start a
    field of the text's choosing), so newlines in a status become spaces."""
    lines = (f"{name}={' '.join(value.splitlines())}" for name, value in fields)
    return "\n".join(lines).encode()


def parse_message(data: bytes) -> dict[str, str]:
    """The fields of a notification (what ``NotifyRelay`` reads from workers); lines without
    ``=`` are ignored, like systemd does."""
    fields: dict[str, str] = {}
    for line in data.decode(errors="replace").split("\n"):
        name, sep, value = line.partition("=")
        if sep:
            fields[name] = value
    return fields


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds: ``MONOTONIC_USEC`` of ``RELOADING=1`` (systemd uses it
    to tell this reload from one it already saw finish)."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


class Summarized(Protocol):
    """What a reload returns (``ReloadOutcome``): its one-line summary becomes ``STATUS``."""

    def summary(self) -> str: ...


# ---- the sender --------------------------------------------------------------------------------
class Notifier:
    """Notifications of one process to ``address`` (None: not under systemd, all no-ops)."""

    def __init__(self, address: str | bytes | None, *, watchdog: float | None = None) -> None:
        self.address = address
        self.watchdog = watchdog if address is not None else None
        self.sent = 0  # notifications delivered
        self.failed = 0  # ... and refused (logged once)
        self._timer: asyncio.TimerHandle | None = None

    @classmethod
    def from_environment(cls, environ: MutableMapping[str, str] | None = None) -> Notifier:
        env = os.environ if environ is None else environ
        address = notify_address(env.get("NOTIFY_SOCKET"))
        return cls(address, watchdog=watchdog_interval(env, os.getpid()))

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *fields: tuple[str, str]) -> bool:
        """Deliver one notification; False when there is nowhere to send it or it failed."""
        if self.address is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto(message(fields), self.address)
        except OSError as exc:
            self.failed += 1
            if self.failed == 1:
                log.warning("systemd notification not delivered: %s", exc)
            return False
        self.sent += 1
        return True

    def ready(self, status: str) -> None:
        self.send(("READY", "1"), ("STATUS", status))

    def reloading(self) -> None:
        self.send(("RELOADING", "1"), ("MONOTONIC_USEC", str(monotonic_usec())))

    def stopping(self, status: str = "stopping") -> None:
        self.send(("STOPPING", "1"), ("STATUS", status))

    def ping(self) -> None:
        self.send(("WATCHDOG", "1"))

    def reload(self, action: Callable[[str], Summarized], trigger: str) -> None:
        """Run a reload between ``RELOADING=1`` and ``READY=1`` (a signal handler's callback:
        ``loop.add_signal_handler(SIGHUP, notifier.reload, balancer.reload_file, "SIGHUP")``).
        A refused file is still a finished reload: the running config stays and serves."""
        self.reloading()
        outcome = action(trigger)
        self.ready(outcome.summary())

    # ---- the watchdog on an event loop ------------------------------------------------------
    def start_watchdog(self, loop: asyncio.AbstractEventLoop) -> None:
        """Ping every ``watchdog`` seconds from ``loop``'s own callbacks: a loop that is stuck
        stops the pings, and systemd restarts the service after ``WatchdogSec``."""
        interval = self.watchdog
        if interval is None:
            return

        def tick() -> None:
            self.ping()
            self._timer = loop.call_later(interval, tick)

        tick()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


# ---- the parent of workers = N -------------------------------------------------------------------
class NotifyRelay:
    """The parent's side of ``workers = N``: a private notification socket for the workers,
    and the parent's own notifications to systemd.

    It reads who sent each datagram from the kernel (``SO_PASSCRED``), so a worker is counted
    by its pid. ``READY=1`` goes to systemd once every live worker has said ``READY=1`` since the
    start or since the last SIGHUP (``reloading``); a restarted worker's later ``READY=1`` changes
    nothing. The watchdog is the parent's own: its loop turns every ``supervisor.POLL``, and a
    worker that dies is the parent's to restart."""

    def __init__(self, notifier: Notifier, environ: MutableMapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.notifier = notifier
        self.sock: socket.socket | None = None
        self._ready: set[int] = set()
        self._waiting = True  # READY=1 not yet sent for the start or the last reload
        self._next_ping = 0.0  # the first tick pings
        for name in ENVIRONMENT:  # the workers see the relay, or nothing, never systemd itself
            env.pop(name, None)
        if notifier.enabled:
            name = f"@siplb-{os.getpid()}-{secrets.token_hex(8)}"
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
            sock.bind(b"\0" + name[1:].encode())
            sock.setblocking(False)
            self.sock = sock
            env["NOTIFY_SOCKET"] = name

    def waitables(self) -> list[int]:
        """What the parent's ``multiprocessing.connection.wait`` should wake up for too."""
        return [self.sock.fileno()] if self.sock is not None else []

    def poll(self, workers: Collection[int | None]) -> None:
        """Read what the workers said; ``workers``: the pids of the live workers."""
        sock = self.sock
        if sock is None:
            return
        for _ in range(1000):  # bounded: a flood of datagrams waits for the next poll
            try:
                data, ancillary, _flags, _address = sock.recvmsg(
                    MAX_MESSAGE, socket.CMSG_SPACE(_UCRED.size)
                )
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                log.warning("worker notification unreadable: %s", exc)
                break
            pid = _sender(ancillary)
            if pid is not None and parse_message(data).get("READY") == "1":
                self._ready.add(pid)
        live = {pid for pid in workers if pid is not None}
        if self._waiting and live and live <= self._ready:
            self._waiting = False
            self.notifier.ready(f"{plural(len(live), 'worker')} serving")

    def reloading(self) -> None:
        """SIGHUP: every worker is to reload and say ``READY=1`` again."""
        self._ready.clear()
        self._waiting = True
        self.notifier.reloading()

    def stopping(self) -> None:
        self.notifier.stopping()

    def tick(self, now: float) -> None:
        """The watchdog: ping when due (``now``: ``time.monotonic()``)."""
        interval = self.notifier.watchdog
        if interval is not None and now >= self._next_ping:
            self.notifier.ping()
            self._next_ping = now + interval

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def _sender(ancillary: list[tuple[int, int, bytes]]) -> int | None:
    """The sender's pid from ``SCM_CREDENTIALS``, or None."""
    for level, kind, data in ancillary:
        if (level, kind) == (socket.SOL_SOCKET, socket.SCM_CREDENTIALS) and len(
            data
        ) >= _UCRED.size:
            return int(_UCRED.unpack_from(data)[0])
    return None
