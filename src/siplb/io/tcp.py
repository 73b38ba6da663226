"""TCP and TLS connections: framing, reuse per peer, idle timeout (DESIGN.md 3).

Every connection, accepted or opened by us, is remembered under its peer address, so responses
and later requests to that peer reuse it. A framing error closes only that connection. A send to
a phone's flow (``Target.flow``, RFC 5626) goes over its existing connection only: when that is
gone the send fails, since a phone behind NAT cannot be connected to.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from siplb.proxy.actions import Target
from siplb.sip import KEEPALIVE, FramingError, Limits, Malformed, ParseError, StreamFramer

if TYPE_CHECKING:
    from siplb.sip import Request, Response

log = logging.getLogger("siplb.tcp")

MessageSink = Callable[["Request | Response", Target, int], None]
MalformedSink = Callable[[bytes, ParseError, Target, int], None]


class StreamConnection(asyncio.Protocol):
    def __init__(self, pool: ConnectionPool, listener: int, transport_name: str) -> None:
        self.pool = pool
        self.listener = listener
        self.transport_name = transport_name
        self.framer = StreamFramer(pool.limits)
        self.transport: asyncio.Transport | None = None
        self.peer: Target | None = None
        self.pending: list[bytes] = []
        self.last_active = 0.0
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's do not subclass asyncio's
        self.transport = transport
        host, port = transport.get_extra_info("peername")[:2]
        self.peer = Target(self.transport_name, host, port)
        self.last_active = self.pool.loop.time()
        self.pool.register(self)
        for data in self.pending:
            transport.write(data)
        self.pending.clear()

    def data_received(self, data: bytes) -> None:
        self.last_active = self.pool.loop.time()
        assert self.peer is not None
        try:
            items = self.framer.feed(data)
        except FramingError as exc:
            log.info("closing %s: %s", self.peer, exc.reason)
            self.pool.framing_errors += 1
            self.close()
            return
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

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()
        self.closed = True

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.unregister(self)


class ConnectionPool:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        limits: Limits,
        on_message: MessageSink,
        on_malformed: MalformedSink,
        on_failure: Callable[[Target], None],
        *,
        idle_timeout: float,
        connect_timeout: float,
        max_connections: int,
        client_ssl: ssl.SSLContext | None = None,
    ) -> None:
        self.loop = loop
        self.limits = limits
        self.on_message = on_message
        self.on_malformed = on_malformed
        self.on_failure = on_failure
        self.idle_timeout = idle_timeout
        self.connect_timeout = connect_timeout
        self.max_connections = max_connections
        self.client_ssl = client_ssl
        self.flow_failures = 0
        self.by_peer: dict[Target, StreamConnection] = {}
        self.connecting: dict[Target, StreamConnection] = {}
        self.framing_errors = 0
        self._servers: list[asyncio.base_events.Server] = []
        self._sweeper: asyncio.TimerHandle | None = None

    async def listen(
        self,
        host: str,
        port: int,
        listener: int,
        transport: str,
        context: ssl.SSLContext | None = None,
    ) -> int:
        server = await self.loop.create_server(
            lambda: StreamConnection(self, listener, transport),
            host,
            port,
            reuse_address=True,
            ssl=context,
        )
        self._servers.append(server)
        if self._sweeper is None:
            self._sweeper = self.loop.call_later(1.0, self._sweep)
        return int(server.sockets[0].getsockname()[1])

    def register(self, conn: StreamConnection) -> None:
        assert conn.peer is not None
        if len(self.by_peer) >= self.max_connections:
            log.warning("too many connections, refusing %s", conn.peer)
            conn.close()
            return
        self.by_peer[conn.peer] = conn

    def unregister(self, conn: StreamConnection) -> None:
        if conn.peer is not None and self.by_peer.get(conn.peer) is conn:
            del self.by_peer[conn.peer]

    def send(self, data: bytes, target: Target, listener: int) -> None:
        conn = self.by_peer.get(target) or self.connecting.get(target)
        if (conn is None or conn.closed) and target.flow:
            log.info("no connection to %s any more: the phone must register again", target)
            self.flow_failures += 1
            self.loop.call_soon(self.on_failure, target)
            return
        if conn is None or conn.closed:
            conn = StreamConnection(self, listener, target.transport)
            conn.pending.append(data)
            self.connecting[target] = conn
            self.loop.create_task(self._connect(conn, target))
            return
        conn.write(data)

    async def _connect(self, conn: StreamConnection, target: Target) -> None:
        tls = target.transport == "tls"
        if tls and self.client_ssl is None:
            self.client_ssl = ssl.create_default_context()
        try:
            await asyncio.wait_for(
                self.loop.create_connection(
                    lambda: conn,
                    target.host,
                    target.port,
                    ssl=self.client_ssl if tls else None,
                    server_hostname=target.host if tls else None,
                ),
                self.connect_timeout,
            )
        except (OSError, TimeoutError) as exc:
            log.info("cannot connect to %s: %s", target, exc)
            conn.closed = True
            self.on_failure(target)
        finally:
            if self.connecting.get(target) is conn:
                del self.connecting[target]
        if conn.peer is not None and conn.peer != target and not conn.closed:
            self.by_peer[target] = conn  # reached under another spelling of the address

    def _sweep(self) -> None:
        now = self.loop.time()
        for conn in list(self.by_peer.values()):
            if now - conn.last_active > self.idle_timeout:
                conn.close()
        self._sweeper = self.loop.call_later(1.0, self._sweep)

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for server in self._servers:
            server.close()
        for conn in list(self.by_peer.values()):
            conn.close()
