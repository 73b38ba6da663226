"""UDP listeners: one socket per configured address, a large receive buffer (docs/design.md 4).

Two Linux facilities on top of plain datagrams:

- **ICMP errors** (``IP_RECVERR``/``IPV6_RECVERR``, ``enable_errors``): an unconnected UDP socket
  hears nothing of the ICMP its datagrams cause unless asked; asked, each error is queued on the
  socket (``MSG_ERRQUEUE``) and reported once as ``sk_err`` by the next receive *or send*.
  ``read_errors`` drains the queue, ``unreachable`` keeps the one error that means
  something: a port unreachable from the host we sent to (its SIP process is gone, the host is
  up). A queue left full makes the socket report an error for ever (an event loop spinning on
  it), so every error seen is followed by a drain.
- **Wildcard listeners** (``0.0.0.0``/``::``): the address a datagram arrived on comes with it
  (``IP_PKTINFO``/``IPV6_RECVPKTINFO``, read with ``recvmsg``: ``arrival``), and a datagram leaves
  from a chosen address (``sendmsg`` with ``IP_PKTINFO``/``IPV6_PKTINFO``: ``source_pktinfo``).

``UdpReader`` reads a listener's socket on the event loop through an epoll descriptor of its own,
not through the loop's datagram transport: uvloop 0.23's transport crashes on a socket with
``IP_RECVERR`` (its libuv reads the error queue itself and hands uvloop a negative length, which
it copies as a huge one), and its readers (libuv ``uv_poll``) stop for good on the first
``POLLERR``; an epoll descriptor only ever reads as readable. ``UdpEndpoint`` (no error queue)
serves the workers' channel sockets.
"""

from __future__ import annotations

import asyncio
import ipaddress
import select
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
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
# Linux values (Python 3.11's socket module lacks some of them)
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
IP_RECVERR = getattr(socket, "IP_RECVERR", 11)
IPV6_RECVERR = getattr(socket, "IPV6_RECVERR", 25)
IPV6_RECVPKTINFO = getattr(socket, "IPV6_RECVPKTINFO", 49)
IPV6_PKTINFO = getattr(socket, "IPV6_PKTINFO", 50)
MSG_ERRQUEUE = getattr(socket, "MSG_ERRQUEUE", 0x2000)
WILDCARDS = frozenset({"0.0.0.0", "::"})


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
    return {address for _, address in interface_addresses()}


def interface_addresses() -> list[tuple[int, ipaddress.IPv4Address | ipaddress.IPv6Address]]:
    """(interface index, address) of every address on this host, in the kernel's order."""
    found: list[tuple[int, ipaddress.IPv4Address | ipaddress.IPv6Address]] = []
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
                    found.extend(_addresses(data, at + _NLMSG.size, at + length))
                at += (length + 3) & ~3


def _addresses(
    data: bytes, start: int, end: int
) -> list[tuple[int, ipaddress.IPv4Address | ipaddress.IPv6Address]]:
    family, _, _, _, interface = _IFADDRMSG.unpack_from(data, start)
    # IPv4: IFA_LOCAL is the address (IFA_ADDRESS is the peer's on point-to-point links)
    wanted = IFA_LOCAL if family == socket.AF_INET else IFA_ADDRESS
    out: list[tuple[int, ipaddress.IPv4Address | ipaddress.IPv6Address]] = []
    at = start + _IFADDRMSG.size
    while at + _RTA.size <= end:
        length, kind = _RTA.unpack_from(data, at)
        if length < _RTA.size:
            break
        if kind == wanted and family in (socket.AF_INET, socket.AF_INET6):
            out.append((interface, ipaddress.ip_address(data[at + _RTA.size : at + length])))
        at += (length + 3) & ~3
    return out


def bind_udp(
    host: str, port: int, recv_buffer: int, *, reuse_port: bool = False, freebind: bool = False
) -> socket.socket:
    """A bound, non-blocking UDP socket with SO_RCVBUF raised as far as the system allows.
    ``freebind``: the address may not be on this host yet (a VRRP address on the backup).
    A wildcard (``0.0.0.0``, ``::``) reports each datagram's local address (``arrival``)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if freebind:  # honoured for IPv6 sockets too (Linux ipv6_can_nonlocal_bind)
            sock.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if host in WILDCARDS:
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
            else:
                sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
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


# ---- ICMP errors -------------------------------------------------------------------------------
# Error-queue messages read at once, at most. The queue must be read to its end: uvloop (libuv
# 1.x) crashes on a socket that stays in error with nothing to receive. The kernel bounds it by
# the receive buffer (a few thousand messages of 4 MiB); this only bounds a bug.
ERRORS_PER_READ = 100_000
_EXTENDED_ERR = struct.Struct("=IBBBBII")  # sock_extended_err: errno, origin, type, code, ...
SO_EE_ORIGIN_ICMP, SO_EE_ORIGIN_ICMP6 = 2, 3
# (ICMP type, code) of "port unreachable": RFC 792 (3, 3), RFC 4443 (1, 4)
PORT_UNREACHABLE = {SO_EE_ORIGIN_ICMP: (3, 3), SO_EE_ORIGIN_ICMP6: (1, 4)}
_FAMILY = struct.Struct("=H")  # sa_family, in the host's byte order
_ERROR_LEVELS = {(socket.IPPROTO_IP, IP_RECVERR), (socket.IPPROTO_IPV6, IPV6_RECVERR)}


@dataclass(frozen=True, slots=True)
class Unreachable:
    """A datagram sent to ``host``:``port`` met an ICMP port unreachable from that host."""

    host: str
    port: int


def enable_errors(sock: socket.socket) -> None:
    """Queue the ICMP errors ``sock``'s datagrams cause (``read_errors`` drains them)."""
    if sock.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVERR, 1)
    else:
        sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)


def unreachable(ancdata: list[tuple[int, int, bytes]], name: Any) -> Unreachable | None:
    """The port unreachable one error-queue message reports (``recvmsg(.., MSG_ERRQUEUE)``'s
    ancillary data and address: the original destination), or None for any other error. The
    offender must be that destination: only the host itself knows its ports are closed."""
    for level, kind, data in ancdata:
        if (level, kind) not in _ERROR_LEVELS or len(data) < _EXTENDED_ERR.size:
            continue
        _, origin, icmp_type, code, _, _, _ = _EXTENDED_ERR.unpack_from(data)
        if PORT_UNREACHABLE.get(origin) != (icmp_type, code):
            return None
        try:
            destination = ipaddress.ip_address(str(name[0]).partition("%")[0])
        except (ValueError, IndexError, TypeError):
            return None
        offender = _sockaddr_address(data[_EXTENDED_ERR.size :])
        if offender is not None and offender != destination:
            return None
        return Unreachable(str(destination), int(name[1]))
    return None


def _sockaddr_address(raw: bytes) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address in a ``sockaddr_in``/``sockaddr_in6`` (the ICMP's offender), if any."""
    family = _FAMILY.unpack_from(raw)[0] if len(raw) >= _FAMILY.size else None
    if family == socket.AF_INET and len(raw) >= 8:
        return ipaddress.IPv4Address(raw[4:8])
    if family == socket.AF_INET6 and len(raw) >= 24:
        return ipaddress.IPv6Address(raw[8:24])
    return None


@dataclass(frozen=True, slots=True)
class QueuedErrors:
    """What ``read_errors`` took off a socket's error queue."""

    read: int  # messages, of any kind
    unreachable: list[Unreachable]  # the port unreachables among them, each destination once


def read_errors(sock: socket.socket, limit: int = ERRORS_PER_READ) -> QueuedErrors:
    """Drain ``sock``'s error queue (up to ``limit`` messages)."""
    found: dict[Unreachable, None] = {}
    read = 0
    while read < limit:
        try:
            _, ancdata, _, name = sock.recvmsg(1, 512, MSG_ERRQUEUE)
        except OSError:  # BlockingIOError: drained
            break
        read += 1
        hit = unreachable(ancdata, name)
        if hit is not None:
            found[hit] = None
    return QueuedErrors(read, list(found))


# ---- reading a listener; wildcard listeners ----------------------------------------------------
READ_BATCH = 256  # datagrams read per wakeup: the loop's other work is not starved
_ANCILLARY = 512


def arrival(ancdata: list[tuple[int, int, bytes]]) -> str | None:
    """The local address a datagram was sent to (its header's destination), from its
    ``IP_PKTINFO`` (``in_pktinfo.ipi_addr``) or ``IPV6_PKTINFO`` (``in6_pktinfo.ipi6_addr``)."""
    for level, kind, data in ancdata:
        if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(data) >= 12:
            return socket.inet_ntop(socket.AF_INET, data[8:12])
        if level == socket.IPPROTO_IPV6 and kind == IPV6_PKTINFO and len(data) >= 16:
            return socket.inet_ntop(socket.AF_INET6, data[:16])
    return None


def source_pktinfo(host: str) -> list[tuple[int, int, bytes]]:
    """``sendmsg`` ancillary data that makes a datagram leave from local address ``host``."""
    if ":" in host:
        packed = socket.inet_pton(socket.AF_INET6, host) + struct.pack("=I", 0)
        return [(socket.IPPROTO_IPV6, IPV6_PKTINFO, packed)]
    packed = struct.pack("=I", 0) + socket.inet_pton(socket.AF_INET, host) + bytes(4)
    return [(socket.IPPROTO_IP, IP_PKTINFO, packed)]


ArrivalReceiver = Callable[[bytes, tuple[str, int], str | None], None]


class UdpReader:
    """Reads a listener's socket on ``loop``: each datagram goes to ``on_datagram`` with its
    source and, on a wildcard socket, the local address it arrived on (else None); the port
    unreachables its error queue holds go to ``on_errors``. Watched through an epoll
    descriptor of its own (see the top)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        on_datagram: ArrivalReceiver,
        on_errors: Callable[[list[Unreachable]], None],
        *,
        arrivals: bool = False,
    ) -> None:
        self.sock = sock
        self._loop = loop
        self._on_datagram = on_datagram
        self._on_errors = on_errors
        self._arrivals = arrivals  # a wildcard socket: read each datagram's local address
        self._epoll = select.epoll()
        self._epoll.register(sock.fileno(), select.EPOLLIN)
        loop.add_reader(self._epoll.fileno(), self._ready)

    def _ready(self) -> None:
        sock = self.sock
        receive = self._on_datagram
        arrivals = self._arrivals
        for count in range(READ_BATCH):
            try:
                if arrivals:
                    data, ancdata, _, addr = sock.recvmsg(65535, _ANCILLARY)
                    local = arrival(ancdata)
                else:
                    data, addr = sock.recvfrom(65535)
                    local = None
            except (BlockingIOError, InterruptedError):
                # Woken with nothing to read: the error queue alone may hold something (its
                # error already reported to a send). Looked at only then, not per datagram.
                if count == 0 and any(mask & select.EPOLLERR for _, mask in self._epoll.poll(0)):
                    self._errors()
                return
            except OSError:  # a queued ICMP error, reported once as the socket's error
                self._errors()
                continue
            receive(data, (addr[0], addr[1]), local)

    def _errors(self) -> None:
        found = read_errors(self.sock).unreachable
        if found:
            self._on_errors(found)

    def close(self) -> None:
        if not self._epoll.closed:
            self._loop.remove_reader(self._epoll.fileno())
            self._epoll.close()
        self.sock.close()
