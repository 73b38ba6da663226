"""UDP listeners: one socket per configured address, a large receive buffer (DESIGN.md 4)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct
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


IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)  # Linux: bind an address not (yet) local


def holds_address(host: str) -> bool:
    """``host`` is one of this host's addresses now (a VRRP address moves between hosts).
    Asked of the kernel's address list: a bind would not tell (``ip_nonlocal_bind``, and
    ``IP_FREEBIND`` on our own sockets), nor would the route's source (a secondary address)."""
    try:
        wanted = ipaddress.ip_address(host)
        return wanted in local_addresses()
    except (OSError, ValueError):
        return False


_NLMSG = struct.Struct("=LHHLL")  # netlink message header: length, type, flags, seq, pid
_IFADDRMSG = struct.Struct("=BBBBI")  # family, prefix length, flags, scope, interface index
_RTA = struct.Struct("=HH")  # attribute: length, type
RTM_NEWADDR, RTM_GETADDR, NLMSG_ERROR, NLMSG_DONE = 20, 22, 2, 3
IFA_ADDRESS, IFA_LOCAL = 1, 2
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300


def local_addresses() -> set[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """Every address on this host's interfaces (an ``RTM_GETADDR`` dump over rtnetlink)."""
    found: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = set()
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as sock:
        sock.settimeout(1.0)
        sock.bind((0, 0))
        request = _IFADDRMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
        header = _NLMSG.pack(
            _NLMSG.size + len(request), RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, 1, 0
        )
        sock.send(header + request)
        while True:
            data = sock.recv(65536)
            at = 0
            while at + _NLMSG.size <= len(data):
                length, kind, _, _, _ = _NLMSG.unpack_from(data, at)
                if length < _NLMSG.size or kind == NLMSG_DONE:
                    return found
                if kind == NLMSG_ERROR:
                    raise OSError("rtnetlink refused the address dump")
                if kind == RTM_NEWADDR:
                    found.update(_addresses(data, at + _NLMSG.size, at + length))
                at += (length + 3) & ~3


def _addresses(
    data: bytes, start: int, end: int
) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    family = _IFADDRMSG.unpack_from(data, start)[0]
    # IPv4: IFA_LOCAL is the address (IFA_ADDRESS is the peer's on point-to-point links)
    wanted = IFA_LOCAL if family == socket.AF_INET else IFA_ADDRESS
    out: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    at = start + _IFADDRMSG.size
    while at + _RTA.size <= end:
        length, kind = _RTA.unpack_from(data, at)
        if length < _RTA.size:
            break
        if kind == wanted and family in (socket.AF_INET, socket.AF_INET6):
            out.append(ipaddress.ip_address(data[at + _RTA.size : at + length]))
        at += (length + 3) & ~3
    return out


def bind_udp(
    host: str, port: int, recv_buffer: int, *, reuse_port: bool = False, freebind: bool = False
) -> socket.socket:
    """A bound, non-blocking UDP socket with SO_RCVBUF raised as far as the system allows.
    ``freebind``: the address may not be on this host yet (a VRRP address on the backup)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if freebind:  # honoured for IPv6 sockets too (Linux ipv6_can_nonlocal_bind)
            sock.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
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
