"""The ng control client: commands to rtpengines over UDP, replies matched by cookie.

One connected UDP socket per engine, so a reply can only come from that engine and the kernel
reports an ICMP port unreachable (the engine's process is gone) on the socket it concerns. Each
command gets a fresh cookie: a random part chosen at start (rtpengine answers a cookie it has
seen from its reply cache, so a cookie of an earlier run must never come back) and a counter.

A command is sent, sent again with the same cookie at ``RETRANSMIT_AT`` of the timeout (the
engine's cache makes that safe), and fails when the timeout passes without a reply, or at once
when the engine's port is unreachable. Commands waiting for a reply are bounded (``max_pending``);
past the bound a command fails at once. A reply whose cookie waits for nothing (a late reply to
a command that timed out, or a stray datagram) is dropped and counted, as is a malformed one.
Failures are values (``None``), never exceptions.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
from collections import Counter
from collections.abc import Callable
from typing import Any, cast

from siplb.media.bencode import BencodeError
from siplb.media.ng import Command, Reply, parse_reply, ping
from siplb.media.settings import EngineSpec

log = logging.getLogger("siplb.media")
RETRANSMIT_AT = (0.5,)  # fractions of the timeout at which a command is sent again

# counter names (``NgClient.stats``)
SENT = "sent"
RETRANSMITTED = "retransmitted"
REPLIES = "replies"
UNKNOWN_COOKIE = "unknown_cookie"  # replies dropped: no command waits for that cookie
MALFORMED = "malformed"  # replies dropped: not "<cookie> <bencoded dictionary>"
BUSY = "busy"  # commands refused: too many waiting
TIMEOUTS = "timeouts"
UNREACHABLE = "unreachable"  # commands failed at once: ICMP port unreachable
SEND_ERRORS = "send_errors"


class _Link(asyncio.DatagramProtocol):
    """One engine's socket; hands each datagram and error to the client."""

    def __init__(self, client: NgClient, address: str) -> None:
        self.client = client
        self.address = address
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio's, hence a cast and not an isinstance check
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.client.received(data)

    def error_received(self, exc: Exception) -> None:
        self.client.link_error(self.address, exc)


class _Waiting:
    """A command waiting for its reply."""

    __slots__ = ("address", "future")

    def __init__(self, address: str, future: asyncio.Future[Reply | None]) -> None:
        self.address = address
        self.future = future


class NgClient:
    """ng commands to a changing set of engines (``open``/``close_engine`` per address)."""

    def __init__(
        self, *, timeout: float, max_pending: int, cookie_prefix: str | None = None
    ) -> None:
        self.timeout = timeout  # seconds for one command's reply, retransmissions included
        self.max_pending = max_pending
        self.prefix = cookie_prefix if cookie_prefix is not None else secrets.token_hex(4)
        self._numbers = itertools.count(1)
        self._links: dict[str, _Link] = {}
        self._waiting: dict[bytes, _Waiting] = {}
        self.stats: Counter[str] = Counter()

    @property
    def pending(self) -> int:
        return len(self._waiting)

    def engines(self) -> tuple[str, ...]:
        return tuple(self._links)

    async def open(self, spec: EngineSpec) -> bool:
        """A socket for the engine; False (logged) when the address cannot be used."""
        if spec.address in self._links:
            return True
        loop = asyncio.get_running_loop()
        try:
            _, link = await loop.create_datagram_endpoint(
                lambda: _Link(self, spec.address), remote_addr=(spec.host, spec.port)
            )
        except OSError as exc:
            log.warning("media engine %s: cannot open a socket: %s", spec.address, exc)
            return False
        self._links[spec.address] = link
        return True

    def close_engine(self, address: str) -> None:
        """Close the engine's socket; its waiting commands fail."""
        link = self._links.pop(address, None)
        if link is not None and link.transport is not None:
            link.transport.close()
        self._fail_waiting(address)

    def close(self) -> None:
        for address in list(self._links):
            self.close_engine(address)

    async def request(self, address: str, command: Command) -> Reply | None:
        """The engine's reply, or None: no reply within ``self.timeout``, port unreachable, too
        many commands waiting, or no socket for ``address``."""
        link = self._links.get(address)
        if link is None or link.transport is None:
            return None
        if len(self._waiting) >= self.max_pending:
            self.stats[BUSY] += 1
            return None
        cookie = f"{self.prefix}_{next(self._numbers)}".encode()
        datagram = command.datagram(cookie)
        future: asyncio.Future[Reply | None] = asyncio.get_running_loop().create_future()
        self._waiting[cookie] = _Waiting(address, future)
        try:
            return await self._exchange(link, datagram, future)
        finally:
            self._waiting.pop(cookie, None)

    async def _exchange(
        self,
        link: _Link,
        datagram: bytes,
        future: asyncio.Future[Reply | None],
    ) -> Reply | None:
        loop = asyncio.get_running_loop()
        timeout = self.timeout
        start = loop.time()
        self._send(link, datagram, SENT)
        for fraction in (*RETRANSMIT_AT, 1.0):
            left = start + fraction * timeout - loop.time()
            # asyncio.timeout, not wait_for: 3.11's wait_for swallows a cancellation that
            # comes with the reply, and a cancelled ping loop would then run on
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(left, 0.0)):
                    return await asyncio.shield(future)
            if fraction < 1.0:
                self._send(link, datagram, RETRANSMITTED)
        self.stats[TIMEOUTS] += 1
        future.cancel()
        return None

    def _send(self, link: _Link, datagram: bytes, counter: str) -> None:
        if link.transport is None or link.transport.is_closing():
            return
        try:
            link.transport.sendto(datagram)
        except OSError as exc:  # uvloop may raise where asyncio reports error_received
            self.link_error(link.address, exc)
            return
        self.stats[counter] += 1

    def received(self, data: bytes) -> None:
        """A datagram from an engine: resolve the command waiting for its cookie."""
        try:
            cookie, reply = parse_reply(data)
        except BencodeError:
            self.stats[MALFORMED] += 1
            return
        waiting = self._waiting.get(cookie)
        if waiting is None or waiting.future.done():
            self.stats[UNKNOWN_COOKIE] += 1
            return
        self.stats[REPLIES] += 1
        waiting.future.set_result(reply)

    def link_error(self, address: str, exc: Exception) -> None:
        """ICMP port unreachable: the engine's process is gone, its commands fail now."""
        if isinstance(exc, ConnectionRefusedError):
            self._fail_waiting(address, UNREACHABLE)
        elif isinstance(exc, OSError):
            self.stats[SEND_ERRORS] += 1

    def _fail_waiting(self, address: str, counter: str | None = None) -> None:
        for waiting in self._waiting.values():
            if waiting.address == address and not waiting.future.done():
                waiting.future.set_result(None)
                if counter is not None:
                    self.stats[counter] += 1


async def ping_forever(
    client: NgClient,
    address: str,
    *,
    interval: float,
    report: Callable[[str, Reply | None], None],
) -> None:
    """Ping ``address`` every ``interval`` seconds (the first at once) and ``report`` each
    outcome (the reply, or None), until cancelled."""
    while True:
        report(address, await client.request(address, ping()))
        await asyncio.sleep(interval)
