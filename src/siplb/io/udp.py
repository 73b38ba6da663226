"""UDP listeners: one socket per configured address, a large receive buffer (DESIGN.md 4)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any, cast

Receiver = Callable[[bytes, tuple[str, int]], None]


class UdpEndpoint(asyncio.DatagramProtocol):
    def __init__(self, receiver: Receiver, on_error: Callable[[OSError], None]) -> None:
        self._receiver = receiver
        self._on_error = on_error
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio's, hence a cast and not an isinstance check
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self._receiver(data, (addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        if isinstance(exc, OSError):
            self._on_error(exc)


def local_address_for(host: str) -> str | None:
    """The local address the kernel's routing table sends to ``host`` from (a UDP connect sends
    nothing); None when there is no route. The shell caches it per host."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.connect((host, 9))
            return str(sock.getsockname()[0])
    except OSError:
        return None


def bind_udp(host: str, port: int, recv_buffer: int, *, reuse_port: bool = False) -> socket.socket:
    """A bound, non-blocking UDP socket with SO_RCVBUF raised as far as the system allows."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        _raise_buffer(sock, socket.SO_RCVBUF, recv_buffer)
        _raise_buffer(sock, socket.SO_SNDBUF, recv_buffer)
        sock.bind((host, port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def _raise_buffer(sock: socket.socket, option: int, size: int) -> None:
    """Ask for ``size``; without privileges the kernel caps it at net.core.rmem_max."""
    force = getattr(
        socket, "SO_RCVBUFFORCE" if option == socket.SO_RCVBUF else "SO_SNDBUFFORCE", None
    )
    if force is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, size)
            return
        except OSError:
            pass
    sock.setsockopt(socket.SOL_SOCKET, option, size)
