"""TCP and TLS connections: framing, reuse per peer, and a bound on all a peer can hold
(docs/design.md 3, and 4 "protection before work").

Every connection, accepted or opened by us, is remembered under its peer address, so responses
and later requests to that peer reuse it. A framing error closes only that connection. A send to
a phone's flow (``Target.flow``, RFC 5626) goes over its existing connection only: when that is
gone the send fails, since a phone behind NAT cannot be connected to.

The bounds (``[tcp]``, ``TcpSettings``). Each refusal or close is counted in ``pool.refused``
under its ``Refusal`` and logged at most once per reason every 10 s:
- accepted connections (``max_connections``) and the ones we open (``max_outbound``) are counted
  apart, so a flood of inbound connections never keeps us from reaching a destination;
- at most ``max_per_source`` accepted connections from one IP address;
- a message that has begun must have its header block within ``header_timeout`` and be whole
  within ``message_timeout``, however its bytes trickle in (slowloris); the idle timeout is for
  connections with nothing pending;
- one connection holds at most one partial message (the framer's ``max_message_size``), all of
  them together ``max_buffered`` bytes: past that the connection holding the most is closed;
- a TLS handshake must end within ``tls_handshake_timeout``. TLS listeners accept in a loop of
  their own and hand each admitted socket to ``loop.connect_accepted_socket``, so a connection
  in its handshake already counts against the inbound bounds, and a timeout is seen and counted.
One timer per pool sweeps the deadlines (every second at most), none per connection.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections import Counter
from collections.abc import Callable, Coroutine
from enum import StrEnum
from typing import TYPE_CHECKING, Any, cast

from siplb.logs import RefusalLog, log_fields
from siplb.proxy.actions import Target
from siplb.settings import TcpSettings
from siplb.sip import (
    KEEPALIVE,
    FramingError,
    KeepAlive,
    Limits,
    Malformed,
    ParseError,
    StreamFramer,
)

from .capture import NOWHERE

if TYPE_CHECKING:
    from siplb.sip import Framed, Request, Response

    from .capture import Capture

log = logging.getLogger("siplb.tcp")

MessageSink = Callable[["Request | Response", Target, int], None]
MalformedSink = Callable[[bytes, ParseError, Target, int], None]

SWEEP_INTERVAL = 1.0  # seconds between two sweeps of the deadlines, at most
BACKLOG = 1024  # pending accepts per listener (asyncio's default, 100, is short for a flood)
ACCEPT_RETRY = 0.1  # seconds to wait when an accept fails (out of file descriptors)


class Refusal(StrEnum):
    """Why a bound refused or closed a connection: the keys of ``ConnectionPool.refused``."""

    MAX_CONNECTIONS = "max_connections"  # accepted connections in total
    MAX_OUTBOUND = "max_outbound"  # a connection we would open: that send fails
    PER_SOURCE = "per_source"  # accepted connections from one IP address
    HEADER_TIMEOUT = "header_timeout"
    MESSAGE_TIMEOUT = "message_timeout"
    BUFFERED = "buffered"  # unframed bytes over all connections
    TLS_HANDSHAKE = "tls_handshake"  # an accepted connection's handshake took too long
    TLS_FAILED = "tls_failed"  # an accepted connection's handshake failed (version, certificate)


_WHY: dict[Refusal, str] = {
    Refusal.MAX_CONNECTIONS: "refused, max_connections inbound connections are open",
    Refusal.MAX_OUTBOUND: "not connected to, max_outbound connections are open",
    Refusal.PER_SOURCE: "refused, max_per_source connections from its address are open",
    Refusal.HEADER_TIMEOUT: "closed, no complete header block within header_timeout",
    Refusal.MESSAGE_TIMEOUT: "closed, no complete message within message_timeout",
    Refusal.BUFFERED: "closed, it held the most of the max_buffered bytes",
    Refusal.TLS_HANDSHAKE: "closed, no TLS handshake within tls_handshake_timeout",
    Refusal.TLS_FAILED: "closed, its TLS handshake failed",
}


def log_refusal(limiter: RefusalLog, reason: str, line: str, now: float) -> None:
    """A log line about a refusal, at most one per reason every ``LOG_EVERY`` seconds; the
    next one tells how many were held back."""
    left_out = limiter.admit(reason, "", now)
    if left_out is not None:
        more = f" ({left_out} more since the last such line)" if left_out else ""
        log.warning("%s%s", line, more)


class StreamConnection(asyncio.Protocol):
    """One TCP or TLS connection, ``inbound`` when accepted."""

    def __init__(
        self,
        pool: ConnectionPool,
        listener: int,
        transport_name: str,
        *,
        inbound: bool = False,
        peer: Target | None = None,
    ) -> None:
        self.pool = pool
        self.listener = listener
        self.transport_name = transport_name
        self.inbound = inbound
        self.framer = StreamFramer(pool.limits)
        self.transport: asyncio.Transport | None = None
        self.peer = peer  # known from the accept already for TLS, else from connection_made
        self.alias: Target | None = None  # the address a send named, when not ``peer``
        self.pending: list[bytes] = []
        self.last_active = 0.0
        self.started: float | None = None  # when the partial message now buffered began
        self.buffered = 0  # the framer's bytes, as counted in ``pool.buffered``
        self.closed = False
        self._local: tuple[str, int] | None = None  # our address, for the capture

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's do not subclass asyncio's
        self.last_active = self.pool.loop.time()
        if self.peer is None:
            host, port = transport.get_extra_info("peername")[:2]
            self.peer = Target(self.transport_name, host, port)
            if self.inbound and not self.pool.admit(self):
                transport.close()
                return
        if self.closed:  # the pool closed meanwhile
            transport.close()
            return
        self.transport = transport
        self.pool.register(self)
        for data in self.pending:
            transport.write(data)
            if self.pool.capture is not None:
                self.capture_sent(data)
        self.pending.clear()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        now = self.pool.loop.time()
        self.last_active = now
        assert self.peer is not None
        try:
            items = self.framer.feed(data)
        except FramingError as exc:
            log.info("closing %s: %s", self.peer, exc.reason)
            self.pool.framing_errors += 1
            self.close()
            return
        if items or self.started is None:
            self.started = now if self.framer.in_message else None
        self.pool.account(self)
        if self.pool.capture is not None:
            self.capture_received(items)
        for item in items:
            if item is KEEPALIVE:
                self.write(b"\r\n")  # RFC 5626 3.5.1 pong
            elif isinstance(item, Malformed):
                self.pool.on_malformed(item.data, item.error, self.peer, self.listener)
            else:
                self.pool.on_message(item, self.peer, self.listener)  # type: ignore[arg-type]

    def write(self, data: bytes) -> None:
        if self.transport is None:
            self.pending.append(data)
        elif not self.closed:
            self.last_active = self.pool.loop.time()
            self.transport.write(data)
            if self.pool.capture is not None:
                self.capture_sent(data)

    # ---- [capture] (siplb.io.capture) ------------------------------------------------------
    def capture_received(self, items: list[Framed]) -> None:
        """The messages (parsed or not) of one read, to the capture; keep-alives are not SIP."""
        capture, peer = self.pool.capture, self.peer
        assert capture is not None
        assert peer is not None
        for item in items:
            if isinstance(item, KeepAlive):
                continue
            data = item.data if isinstance(item, Malformed) else item.to_bytes()
            capture.received(data, self.transport_name, (peer.host, peer.port), self.local)

    def capture_sent(self, data: bytes) -> None:
        capture, peer = self.pool.capture, self.peer
        assert capture is not None
        if peer is not None:
            capture.sent(data, self.transport_name, self.local, (peer.host, peer.port))

    @property
    def local(self) -> tuple[str, int]:
        """Our end of the connection (asked once)."""
        if self._local is None:
            sockname = self.transport.get_extra_info("sockname") if self.transport else None
            if not sockname:
                return NOWHERE  # not connected yet: asked again next time
            self._local = (str(sockname[0]), int(sockname[1]))
        return self._local

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()
        self.closed = True
        self.pool.release(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)


class ConnectionPool:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        limits: Limits,
        on_message: MessageSink,
        on_malformed: MalformedSink,
        on_failure: Callable[[Target], None],
        *,
        tcp: TcpSettings,
        client_ssl: ssl.SSLContext | None = None,
    ) -> None:
        self.loop = loop
        self.limits = limits
        self.on_message = on_message
        self.on_malformed = on_malformed
        self.on_failure = on_failure
        self.tcp = tcp
        self.client_ssl = client_ssl
        self.capture: Capture | None = None  # [capture]: Driver.set_capture
        self.by_peer: dict[Target, StreamConnection] = {}
        self.connecting: dict[Target, StreamConnection] = {}
        self.refused: Counter[str] = Counter()  # by ``Refusal``
        self.framing_errors = 0
        self.flow_failures = 0
        self.idle_closed = 0
        self.buffered = 0  # gauge: bytes the framers of all connections hold
        self.sweep_interval = min(
            SWEEP_INTERVAL, tcp.header_timeout / 2, tcp.message_timeout / 2, tcp.idle_timeout / 2
        )
        self._inbound: set[StreamConnection] = set()
        self._outbound: set[StreamConnection] = set()  # connecting ones too
        self._sources: Counter[str] = Counter()  # accepted connections by source address
        self._log = RefusalLog()
        self._servers: list[asyncio.base_events.Server] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.TimerHandle | None = None

    @property
    def inbound(self) -> int:
        """Gauge: accepted connections, those in their TLS handshake included."""
        return len(self._inbound)

    @property
    def outbound(self) -> int:
        """Gauge: connections we opened or are opening."""
        return len(self._outbound)

    async def listen(
        self,
        host: str,
        port: int,
        listener: int,
        transport: str,
        context: ssl.SSLContext | None = None,
    ) -> int:
        """Accept connections on ``host:port`` (an IP literal); returns the port bound."""
        self._start_sweeping()
        if context is not None:
            return self._listen_tls(host, port, listener, transport, context)
        server = await self.loop.create_server(
            lambda: StreamConnection(self, listener, transport, inbound=True),
            host,
            port,
            reuse_address=True,
            backlog=BACKLOG,
        )
        self._servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    def _listen_tls(
        self, host: str, port: int, listener: int, transport: str, context: ssl.SSLContext
    ) -> int:
        """TLS connections are accepted here, not by ``create_server``, so that one is counted
        and refused by the inbound bounds before its handshake, whose end we also see."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.create_server((host, port), family=family, backlog=BACKLOG)
        sock.setblocking(False)
        self._spawn(self._accept_tls(sock, listener, transport, context))
        return int(sock.getsockname()[1])

    async def _accept_tls(
        self, sock: socket.socket, listener: int, transport: str, context: ssl.SSLContext
    ) -> None:
        with sock:
            while True:
                try:
                    client, address = await self.loop.sock_accept(sock)
                except ConnectionError:  # reset before we accepted it
                    continue
                except OSError as exc:  # out of file descriptors, mostly: wait for some
                    line = f"cannot accept on {transport} port {sock.getsockname()[1]}: {exc}"
                    self._note("accept", line)
                    await asyncio.sleep(ACCEPT_RETRY)
                    continue
                peer = Target(transport, address[0], address[1])
                conn = StreamConnection(self, listener, transport, inbound=True, peer=peer)
                if self.admit(conn):
                    self._spawn(self._handshake(conn, client, context))
                else:
                    client.close()

    async def _handshake(
        self, conn: StreamConnection, client: socket.socket, context: ssl.SSLContext
    ) -> None:
        """An admitted TLS connection's handshake (RFC 3261 26.2), bounded in time."""
        try:
            await self.loop.connect_accepted_socket(
                lambda: conn,
                client,
                ssl=context,
                ssl_handshake_timeout=self.tcp.tls_handshake_timeout,
            )
        except ConnectionAbortedError:  # how asyncio and uvloop end a handshake past its timeout
            self.count(Refusal.TLS_HANDSHAKE, conn.peer)
        except ssl.SSLError:
            self.count(Refusal.TLS_FAILED, conn.peer)
        except OSError:  # the peer went away
            pass
        finally:
            if conn.transport is None:  # failed, or cancelled by close()
                client.close()
                self.forget(conn)

    # ---- accounting --------------------------------------------------------------------------
    def admit(self, conn: StreamConnection) -> bool:
        """An accepted connection is kept, or refused (and counted) past the inbound bounds."""
        assert conn.peer is not None
        source = conn.peer.host
        if len(self._inbound) >= self.tcp.max_connections:
            self.count(Refusal.MAX_CONNECTIONS, conn.peer)
        elif self._sources[source] >= self.tcp.max_per_source:
            self.count(Refusal.PER_SOURCE, conn.peer)
        else:
            self._inbound.add(conn)
            self._sources[source] += 1
            return True
        conn.closed = True
        return False

    def register(self, conn: StreamConnection) -> None:
        assert conn.peer is not None
        self.by_peer[conn.peer] = conn

    def account(self, conn: StreamConnection) -> None:
        """``conn``'s framer took bytes: past ``max_buffered`` in total, the connection holding
        the most is closed (``conn`` itself, or one that holds more)."""
        held = conn.framer.buffered
        self.buffered += held - conn.buffered
        conn.buffered = held
        while self.buffered > self.tcp.max_buffered:
            biggest = max(self._inbound | self._outbound, key=lambda c: c.buffered)
            if not biggest.buffered:
                break  # cannot happen while the counts agree
            self.refuse(biggest, Refusal.BUFFERED)

    def release(self, conn: StreamConnection) -> None:
        """``conn`` is closed: its buffered bytes no longer count."""
        self.buffered -= conn.buffered
        conn.buffered = 0

    def forget(self, conn: StreamConnection) -> None:
        """``conn`` is gone (or never got past its handshake); safe to call more than once."""
        conn.closed = True
        self.release(conn)
        if conn in self._inbound:
            self._inbound.discard(conn)
            assert conn.peer is not None
            self._sources[conn.peer.host] -= 1
            if not self._sources[conn.peer.host]:
                del self._sources[conn.peer.host]
        self._outbound.discard(conn)
        for name in (conn.peer, conn.alias):
            if name is not None and self.by_peer.get(name) is conn:
                del self.by_peer[name]

    def refuse(self, conn: StreamConnection, reason: Refusal) -> None:
        self.count(reason, conn.peer)
        conn.close()

    def count(self, reason: Refusal, peer: Target | None) -> None:
        self.refused[reason] += 1
        self._note(reason, f"connection {peer} {_WHY[reason]}")

    def _note(self, reason: str, line: str) -> None:
        log_refusal(self._log, reason, line, self.loop.time())

    # ---- sending -----------------------------------------------------------------------------
    def send(self, data: bytes, target: Target, listener: int) -> None:
        conn = self.by_peer.get(target) or self.connecting.get(target)
        if (conn is None or conn.closed) and target.flow:
            log.info("no connection to %s any more: the phone must register again", target)
            self.flow_failures += 1
            self.loop.call_soon(self.on_failure, target)
            return
        if conn is None or conn.closed:
            if len(self._outbound) >= self.tcp.max_outbound:
                self.count(Refusal.MAX_OUTBOUND, target)
                self.loop.call_soon(self.on_failure, target)
                return
            conn = StreamConnection(self, listener, target.transport)
            conn.pending.append(data)
            self.connecting[target] = conn
            self._outbound.add(conn)
            self._start_sweeping()
            self._spawn(self._connect(conn, target))
            return
        conn.write(data)

    async def _connect(self, conn: StreamConnection, target: Target) -> None:
        tls: dict[str, Any] = {}
        if target.transport == "tls":
            if self.client_ssl is None:
                self.client_ssl = ssl.create_default_context()
            tls = {
                "ssl": self.client_ssl,
                "server_hostname": target.host,
                "ssl_handshake_timeout": self.tcp.tls_handshake_timeout,
            }
        try:
            await asyncio.wait_for(
                self.loop.create_connection(lambda: conn, target.host, target.port, **tls),
                self.tcp.connect_timeout,
            )
        except (OSError, TimeoutError) as exc:
            log_fields(log, logging.INFO, "cannot connect to %s: %s", target, exc, to=str(target))
            self.on_failure(target)
        finally:
            if self.connecting.get(target) is conn:
                del self.connecting[target]
            if conn.transport is None:  # failed, or cancelled by close()
                self.forget(conn)
        if conn.peer is not None and conn.peer != target and not conn.closed:
            conn.alias = target
            self.by_peer[target] = conn  # reached under another spelling of the address

    # ---- time --------------------------------------------------------------------------------
    def _start_sweeping(self) -> None:
        if self._sweeper is None:
            self._sweeper = self.loop.call_later(self.sweep_interval, self._sweep)

    def _sweep(self) -> None:
        """Close what passed a deadline: a partial message's header or message timeout, else the
        idle timeout. Connections still connecting or in a TLS handshake have their own."""
        now = self.loop.time()
        tcp = self.tcp
        for conn in [*self._inbound, *self._outbound]:
            if conn.closed or conn.transport is None:
                continue
            if conn.started is None:
                if now - conn.last_active > tcp.idle_timeout:
                    self.idle_closed += 1
                    conn.close()
            elif now - conn.started > tcp.message_timeout:
                self.refuse(conn, Refusal.MESSAGE_TIMEOUT)
            elif not conn.framer.in_body and now - conn.started > tcp.header_timeout:
                self.refuse(conn, Refusal.HEADER_TIMEOUT)
        self._sweeper = self.loop.call_later(self.sweep_interval, self._sweep)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for server in self._servers:
            server.close()
        for task in list(self._tasks):  # TLS accepts and handshakes, connects
            task.cancel()
        for conn in [*self._inbound, *self._outbound]:
            conn.close()
