"""``siplb announce``: the program ExaBGP runs through its process API (the rules are in
``siplb.announce``).

Three things run at once: the checks (``GET /api/health`` every ``interval``, each bounded by
``timeout``, on a fresh connection so that a dead node shows as a refused connection at once),
the commands written to stdout (flushed line by line: ExaBGP reads a pipe), and a thread that
reads stdin, where ExaBGP writes its acks and messages. When stdin closes ExaBGP is gone, and
so is the program; an ``error`` ack is logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import threading
from typing import IO

import aiohttp

from siplb.announce import Announcer, Check, Verdict
from siplb.settings import AnnounceSettings

log = logging.getLogger("siplb.announce")
HEALTH_PATH = "/api/health"


async def check_health(
    session: aiohttp.ClientSession, url: str, token: str | None, within: float
) -> Check:
    """One check of the node's health; every failure is a verdict, never an exception."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        async with session.get(
            url.rstrip("/") + HEALTH_PATH,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=within),
        ) as response:
            body = await response.json(content_type=None)
            status = response.status
    except TimeoutError:
        return Check(Verdict.TIMEOUT, f"no answer within {within:g} s")
    except aiohttp.ClientConnectorError as exc:
        refused = exc.os_error.errno == errno.ECONNREFUSED
        return Check(Verdict.REFUSED if refused else Verdict.FAILED, str(exc.os_error))
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        return Check(Verdict.FAILED, f"{type(exc).__name__}: {exc}")
    return _verdict(status, body)


def _verdict(status: int, body: object) -> Check:
    healthy = body.get("healthy") if isinstance(body, dict) else None
    if status == 200 and healthy is True:
        return Check(Verdict.HEALTHY)
    if status == 503 and healthy is False:
        reasons = body.get("reasons") if isinstance(body, dict) else None
        return Check(Verdict.UNHEALTHY, "; ".join(map(str, reasons or ())))
    return Check(Verdict.FAILED, f"HTTP {status} from {HEALTH_PATH}")


def _read_acks(stream: IO[bytes], loop: asyncio.AbstractEventLoop, closed: asyncio.Event) -> None:
    """In a thread: read ExaBGP's acks and messages until stdin closes."""
    try:
        for line in stream:
            if line.strip() == b"error":
                loop.call_soon_threadsafe(log.error, "ExaBGP refused a command")
    except (OSError, ValueError):  # pragma: no cover - stdin closed under the reader
        pass
    with contextlib.suppress(RuntimeError):  # the loop may be gone already
        loop.call_soon_threadsafe(closed.set)


async def run_announcer(
    settings: AnnounceSettings,
    url: str,
    token: str | None,
    stdin: IO[bytes],
    stdout: IO[str],
) -> int:
    """Check, announce and withdraw until ExaBGP closes our stdin (or stdout breaks)."""
    loop = asyncio.get_running_loop()
    closed = asyncio.Event()
    reader = threading.Thread(
        target=_read_acks, args=(stdin, loop, closed), name="exabgp-acks", daemon=True
    )
    reader.start()
    announcer = Announcer(settings)
    connector = aiohttp.TCPConnector(force_close=True)
    log.info("checking %s every %g s for %s", url, settings.interval, ", ".join(settings.prefixes))
    async with aiohttp.ClientSession(connector=connector) as session:
        while not closed.is_set():
            started = loop.time()
            check = await check_health(session, url, token, settings.timeout)
            commands = announcer.checked(check)
            if commands and not _send(stdout, commands, check):
                return 1
            with contextlib.suppress(TimeoutError):
                wait = max(0.0, started + settings.interval - loop.time())
                await asyncio.wait_for(closed.wait(), wait)
    log.info("ExaBGP closed the pipe: stopping")
    return 0


def _send(stdout: IO[str], commands: list[str], check: Check) -> bool:
    """Write the commands; False when ExaBGP is gone (a broken pipe)."""
    why = check.verdict.value + (f" ({check.detail})" if check.detail else "")
    try:
        for command in commands:
            stdout.write(command + "\n")
        stdout.flush()
    except (BrokenPipeError, ValueError):
        log.warning("ExaBGP's pipe is closed: stopping")
        return False
    if check.verdict is Verdict.HEALTHY:
        log.info("announced %d prefix(es): %s", len(commands), why)
    else:
        log.warning("withdrawn %d prefix(es): %s", len(commands), why)
    return True
