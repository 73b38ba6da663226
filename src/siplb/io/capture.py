"""``[capture]``: every SIP message siplb receives and sends, as HEP version 3 to a collector
(``siplb.capture`` encodes).

Off the per-packet path: where a transport receives or sends a message, its hook appends the
bytes, the transport, the two addresses and the wall-clock time to a bounded queue and, when the
queue was empty, asks the loop to send once the current packet is handled. The send then takes
up to ``BATCH`` messages, filters, encodes and sends them, and asks again while some are left,
so that a burst of capture never holds the loop for long. When ``queue`` messages are waiting, a
new one is dropped and counted: the queue never grows with a slow or dead collector.

Nothing the collector does reaches the SIP traffic. Over UDP a collector that is down answers
with ICMP port unreachables; the connected socket reports each on a later send, which is
counted as a drop. Over TCP a message is dropped while there is no connection (one attempt a
second at most) or while more than ``MAX_BUFFERED`` bytes wait in its send buffer.

The counters are the proxy core's ``stats`` (so the workers' are summed like the rest):
``capture_sent`` and ``capture_dropped:<reason>``, ``siplb_capture_*`` in ``/metrics``.

Each process captures what its own sockets carry (``workers = N``: each worker its own share,
with its own socket to the collector): a datagram is captured by the process that read it off
the wire, not again by the worker or node it is handed to. ``[capture]`` is read again on
reload.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections import Counter, deque
from enum import StrEnum
from typing import cast

from siplb.capture import Agent, Captured, cseq_method, encode
from siplb.settings import CaptureSettings

log = logging.getLogger("siplb.capture")

Address = tuple[str, int]
NOWHERE: Address = ("0.0.0.0", 0)  # a local address not known (cannot happen for a listener)

BATCH = 256  # messages encoded and sent per turn of the loop
MAX_BUFFERED = 1 << 20  # bytes waiting in a TCP connection to the collector, at most
CONNECT_TIMEOUT = 2.0
RETRY = 1.0  # seconds between two connection attempts, at least
KEEPALIVE_SIZE = 4  # CRLF CRLF and shorter (keep-alives, RFC 5626 4.4.1) are not captured
SENT = "capture_sent"
DROPPED = "capture_dropped:"  # + the reason


class Reason(StrEnum):
    """Why a captured message was not sent: the label of ``siplb_capture_dropped_total``."""

    QUEUE_FULL = "queue_full"  # ``queue`` messages were already waiting
    TOO_LARGE = "too_large"  # larger than one HEP packet (65535 bytes)
    UNREACHABLE = "unreachable"  # the collector refused (ICMP port unreachable, RST)
    SEND_BUFFER = "send_buffer"  # the socket's send buffer was full
    NOT_CONNECTED = "not_connected"  # TCP: no connection to the collector (yet)
    SEND_ERROR = "send_error"  # any other error of the socket


class Capture:
    """The capture of one process: the hooks its transports call, the queue, the sender."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, settings: CaptureSettings, stats: Counter[str]
    ) -> None:
        self.loop = loop
        self.stats = stats
        self.settings = settings
        self._queue: deque[tuple[bytes, str, Address, Address, float]] = deque()
        self._scheduled = False
        self._apply(settings)

    def _apply(self, settings: CaptureSettings) -> None:
        self.settings = settings
        self.incoming = "received" in settings.what
        self.outgoing = "sent" in settings.what
        self.agent = Agent(settings.node_id, settings.node_name, settings.password)
        self.sender: DatagramSender | StreamSender = (
            StreamSender(self.loop, settings.host, settings.port)
            if settings.transport == "tcp"
            else DatagramSender(settings.host, settings.port)
        )
        log.info(
            "capturing SIP to %s:%s:%d (HEP3, capture agent %d)",
            settings.transport,
            settings.host,
            settings.port,
            settings.node_id,
        )

    def reconfigure(self, settings: CaptureSettings) -> None:
        """A reload's ``[capture]``: a new collector or agent from the next message on; what
        is queued stays queued (up to the new ``queue``)."""
        if settings == self.settings:
            return
        self.sender.close()
        self._apply(settings)
        while len(self._queue) > settings.queue:
            self._queue.pop()
            self.stats[DROPPED + Reason.QUEUE_FULL] += 1

    def close(self) -> None:
        """Send what is waiting (at most ``queue`` messages: the last BYE of a stop is not
        lost), then close the connection to the collector."""
        while self._queue:
            self.flush()
        self.sender.close()

    # ---- the hooks (per message: append and return) ----------------------------------------
    def received(self, data: bytes, transport: str, source: Address, local: Address) -> None:
        """``data`` arrived from ``source`` on our ``local`` address."""
        if self.incoming and len(data) > KEEPALIVE_SIZE:
            self._add((data, transport, source, local, time.time()))

    def sent(self, data: bytes, transport: str, local: Address, destination: Address) -> None:
        """``data`` left our ``local`` address for ``destination``."""
        if self.outgoing and len(data) > KEEPALIVE_SIZE:
            self._add((data, transport, local, destination, time.time()))

    def _add(self, item: tuple[bytes, str, Address, Address, float]) -> None:
        queue = self._queue
        if len(queue) >= self.settings.queue:
            self.stats[DROPPED + Reason.QUEUE_FULL] += 1
            return
        queue.append(item)
        if not self._scheduled:
            self._scheduled = True
            self.loop.call_soon(self.flush)

    @property
    def waiting(self) -> int:
        """Messages in the queue now."""
        return len(self._queue)

    # ---- the sender --------------------------------------------------------------------------
    def flush(self) -> None:
        """Send up to ``BATCH`` queued messages; ask the loop for another turn while some are
        left."""
        self._scheduled = False
        queue = self._queue
        methods = self.settings.methods
        stats = self.stats
        for _ in range(min(BATCH, len(queue))):
            data, transport, source, destination, when = queue.popleft()
            if methods is not None and cseq_method(data) not in methods:
                continue
            packet = encode(Captured(data, transport, source, destination, when), self.agent)
            reason = Reason.TOO_LARGE if packet is None else self.sender.send(packet)
            if reason is None:
                stats[SENT] += 1
            else:
                stats[DROPPED + reason] += 1
        if queue and not self._scheduled:
            self._scheduled = True
            self.loop.call_soon(self.flush)


class DatagramSender:
    """HEP over UDP: one connected, non-blocking socket (connected, so that the collector's
    ICMP errors come back to it and to nothing else)."""

    def __init__(self, host: str, port: int) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.address = (host, port)
        self.connected = False

    def send(self, packet: bytes) -> Reason | None:
        """None when sent, else why not (a ``Reason``)."""
        try:
            if not self.connected:
                self.sock.connect(self.address)  # no packet: it fixes the peer and the route
                self.connected = True
            self.sock.send(packet)
        except BlockingIOError:
            return Reason.SEND_BUFFER
        except ConnectionRefusedError:
            return Reason.UNREACHABLE
        except OSError as exc:
            log.debug("capture to %s:%d: %s", *self.address, exc)
            return Reason.SEND_ERROR
        return None

    def close(self) -> None:
        self.sock.close()


class StreamSender(asyncio.Protocol):
    """HEP over TCP: one connection, opened again (at most every ``RETRY`` seconds) when
    lost. HEP3 packets carry their length, so they go back to back."""

    def __init__(self, loop: asyncio.AbstractEventLoop, host: str, port: int) -> None:
        self.loop = loop
        self.address = (host, port)
        self.transport: asyncio.Transport | None = None
        self._task: asyncio.Task[None] | None = None
        self._next_try = 0.0
        self._closed = False
        self._connect()

    def send(self, packet: bytes) -> Reason | None:
        transport = self.transport
        if transport is None or transport.is_closing():
            self._connect()
            return Reason.NOT_CONNECTED
        if transport.get_write_buffer_size() > MAX_BUFFERED:
            return Reason.SEND_BUFFER
        transport.write(packet)
        return None

    def _connect(self) -> None:
        now = self.loop.time()
        if self._closed or self._task is not None or now < self._next_try:
            return
        self._next_try = now + RETRY
        self._task = self.loop.create_task(self._open())

    async def _open(self) -> None:
        host, port = self.address
        try:
            await asyncio.wait_for(
                self.loop.create_connection(lambda: self, host, port), CONNECT_TIMEOUT
            )
        except (OSError, TimeoutError) as exc:
            log.debug("capture: cannot connect to %s:%d: %s", host, port, exc)
        finally:
            self._task = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._closed:
            transport.close()
            return
        self.transport = cast(asyncio.Transport, transport)  # uvloop's do not subclass asyncio's

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        """A collector says nothing back; what it might say is ignored."""

    def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
        if self.transport is not None:
            self.transport.close()
            self.transport = None
