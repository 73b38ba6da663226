"""The bond's sockets (``siplb bond client`` and ``siplb bond server``): feed the pure core
(``siplb.bond``) what the sockets read, send what it wants sent, re-arm one timer at its next
deadline, log links going up and down, and serve the status (JSON at ``/``, Prometheus text at
``/metrics``) on a loopback HTTP port.

Client: one UDP socket per link, bound to the link's source address and, with ``interface``,
to its device (``SO_BINDTODEVICE``: the datagram leaves by that device whatever the routing
table prefers); one socket per local port of each flow, answering the last address that sent
to it.

Server: one socket per listen address. A datagram's local address (``IP_PKTINFO``) goes into its
``Path``, and everything sent back on that link leaves from that address (``sendmsg`` with
``IP_PKTINFO``), never from the host's default one. Each (client, flow, port) gets a socket of
its own towards the target, opened on first use and kept: the target sees a stable source and
its answers come back to it.

Socket errors (a link's device gone, no route) are counted, never raised: a link that cannot
send is a link that falls silent, and the core notices that by itself.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from siplb.bond import (
    Bond,
    BondServer,
    Channel,
    Counters,
    Delivered,
    LinkStatus,
    LinkWentDown,
    LinkWentUp,
    Path,
    Role,
)
from siplb.config.bond import BondClientConfig, BondServerConfig
from siplb.io.udp import IP_PKTINFO, IPV6_RECVPKTINFO, arrival, source_pktinfo

log = logging.getLogger("siplb.bond")

READ_BATCH = 256  # datagrams read per wakeup
STALL = 0.01  # a timer this late means the process stalled (read the links before the timer)
BUFFER = 4 << 20
SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)
WILDCARDS = frozenset({"0.0.0.0", "::"})


def first_number() -> int:
    """Where an end's packet numbers start: microseconds of wall clock, so that a restarted end
    starts above anything it sent before (see ``siplb.bond.seal``)."""
    return time.time_ns() // 1000


def udp_socket(host: str, port: int, *, device: str | None = None) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            sock.setsockopt(socket.SOL_SOCKET, option, BUFFER)
        if device is not None:
            sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, device.encode())
        if host in WILDCARDS:
            level, option = (
                (socket.IPPROTO_IPV6, IPV6_RECVPKTINFO)
                if family == socket.AF_INET6
                else (socket.IPPROTO_IP, IP_PKTINFO)
            )
            sock.setsockopt(level, option, 1)
        sock.bind((host, port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def read_batch(sock: socket.socket) -> list[tuple[bytes, Any]]:
    out: list[tuple[bytes, Any]] = []
    for _ in range(READ_BATCH):
        try:
            out.append(sock.recvfrom(65535))
        except (BlockingIOError, InterruptedError):
            break
        except OSError:  # an ICMP error queued on the socket: nothing to read this time
            continue
    return out


class Timer:
    """One timer, re-armed to the core's next deadline after every input."""

    def __init__(self, loop: asyncio.AbstractEventLoop, fire: Callable[[], None]) -> None:
        self._loop = loop
        self._fire = fire
        self._handle: asyncio.TimerHandle | None = None
        self._when: float | None = None
        self.late = 0.0  # how late the last firing ran: a stall of the process when large

    def arm(self, when: float | None) -> None:
        """Fire at ``when``. A later deadline than the one armed keeps the earlier one (the core
        takes an early call in its stride, and re-arming after every datagram costs more)."""
        armed = self._when if self._handle is not None else None
        if armed is not None and when is not None and when >= armed:
            return
        if self._handle is not None:
            self._handle.cancel()
        self._when = when
        self._handle = None if when is None else self._loop.call_at(when, self._run)

    def _run(self) -> None:
        self.late = self._loop.time() - (self._when or 0.0)
        self._handle = None
        self._when = None
        self._fire()

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()


def _log_link(who: str, event: LinkWentUp | LinkWentDown, name: str) -> None:
    if isinstance(event, LinkWentUp):
        log.info("%s link %s is up", who, name)
    else:
        log.warning("%s link %s is down (silent for %.0f ms)", who, name, event.silent * 1000)


class ClientRelay:
    """``siplb bond client``: local ports in, links out, and back."""

    def __init__(self, loop: asyncio.AbstractEventLoop, config: BondClientConfig) -> None:
        self.loop = loop
        self.config = config
        self.bond = Bond(
            role=Role.CLIENT,
            client=config.client,
            key=config.key,
            links={link.id: link.weight for link in config.links},
            flows={flow.id: flow.policy for flow in config.flows},
            health=config.health,
            first_number=first_number(),
        )
        self.names = {link.id: link.name for link in config.links}
        self.servers = {link.id: link.server for link in config.links}
        self.send_errors = 0
        self.undeliverable = 0
        self._links: dict[int, socket.socket] = {}
        self._locals: dict[Channel, socket.socket] = {}
        self._apps: dict[Channel, Any] = {}
        self._timer = Timer(loop, self._on_timer)

    def open(self) -> None:
        for link in self.config.links:
            host = link.source or ("::" if ":" in link.server[0] else "0.0.0.0")
            sock = udp_socket(host, 0, device=link.interface)
            self._links[link.id] = sock
            self.loop.add_reader(sock.fileno(), self._on_link, sock)
        for flow in self.config.flows:
            for index, port in enumerate(flow.ports):
                channel = Channel(flow.id, index)
                sock = udp_socket(flow.host, port)
                self._locals[channel] = sock
                self.loop.add_reader(sock.fileno(), self._on_local, channel, sock)
        self._on_timer()

    def close(self) -> None:
        self._timer.cancel()
        for sock in [*self._links.values(), *self._locals.values()]:
            self.loop.remove_reader(sock.fileno())
            sock.close()

    def _on_link(self, sock: socket.socket) -> None:
        now = self.loop.time()
        for data, _source in read_batch(sock):
            self.bond.receive(data, now)
        self._flush()

    def _on_local(self, channel: Channel, sock: socket.socket) -> None:
        now = self.loop.time()
        for data, source in read_batch(sock):
            self._apps[channel] = source
            self.bond.send(channel, data, now)
        self._flush()

    def _on_timer(self) -> None:
        # After a stall of the process a timer may run before the readers (uvloop runs timers
        # first): what waits in the link sockets goes in first, so that no link is declared
        # dead with its packets sitting unread.
        now = self.loop.time()
        if self._timer.late > STALL:
            for sock in self._links.values():
                for data, _source in read_batch(sock):
                    self.bond.receive(data, now)
        self.bond.handle_timer(now)
        self._flush()

    def _flush(self) -> None:
        for transmit in self.bond.datagrams_to_send():
            try:
                self._links[transmit.link].sendto(transmit.data, self.servers[transmit.link])
            except OSError:
                self.send_errors += 1
        while (event := self.bond.next_event()) is not None:
            if isinstance(event, Delivered):
                self._deliver(event)
            else:
                _log_link("client", event, self.names.get(event.link, str(event.link)))
        self._timer.arm(self.bond.get_timer())

    def _deliver(self, event: Delivered) -> None:
        app = self._apps.get(event.channel)
        sock = self._locals.get(event.channel)
        if app is None or sock is None:
            self.undeliverable += 1
            return
        try:
            sock.sendto(event.payload, app)
        except OSError:
            self.send_errors += 1

    def status(self) -> dict[str, Any]:
        now = self.loop.time()
        links = [{"name": self.names[s.link], **_link(s)} for s in self.bond.status(now)]
        counters = {
            **asdict(self.bond.counters),
            "send_errors": self.send_errors,
            "undeliverable": self.undeliverable,
        }
        return {"role": "client", "client": self.config.client, "links": links, **counters}


class ServerRelay:
    """``siplb bond server``: links in, targets out, and back."""

    def __init__(self, loop: asyncio.AbstractEventLoop, config: BondServerConfig) -> None:
        self.loop = loop
        self.config = config
        self.core = BondServer(
            keys=config.keys,
            flows={flow.id: flow.policy for flow in config.flows},
            health=config.health,
            first_number=first_number(),
        )
        self.flows = {flow.id: flow for flow in config.flows}
        self.send_errors = 0
        self._listeners: list[tuple[socket.socket, str]] = []
        self._by_local: dict[str, socket.socket] = {}
        self._wildcard: dict[int, socket.socket] = {}  # by address family
        self._targets: dict[tuple[int, Channel], socket.socket] = {}
        self._timer = Timer(loop, self._on_timer)

    def open(self) -> None:
        for host, port in self.config.listen:
            sock = udp_socket(host, port)
            self._listeners.append((sock, host))
            if host in WILDCARDS:
                self._wildcard[sock.family] = sock
            else:
                self._by_local[host] = sock
            self.loop.add_reader(sock.fileno(), self._on_link, sock, host)
        self._on_timer()

    def close(self) -> None:
        self._timer.cancel()
        for sock in [sock for sock, _ in self._listeners] + list(self._targets.values()):
            self.loop.remove_reader(sock.fileno())
            sock.close()

    def addresses(self) -> list[tuple[str, int]]:
        """The addresses the listen sockets are bound to (a port 0 made real)."""
        return [sock.getsockname()[:2] for sock, _ in self._listeners]

    def _on_link(self, sock: socket.socket, host: str) -> None:
        self._read_link(sock, host)
        self._flush()

    def _read_link(self, sock: socket.socket, host: str) -> None:
        now = self.loop.time()
        for _ in range(READ_BATCH):
            try:
                data, ancdata, _flags, source = sock.recvmsg(65535, 256)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                continue
            local = arrival(ancdata) if host in WILDCARDS else host
            self.core.receive(data, Path((source[0], source[1]), local or host), now)

    def _on_target(self, client: int, channel: Channel, sock: socket.socket) -> None:
        now = self.loop.time()
        for data, _source in read_batch(sock):
            self.core.send(client, channel, data, now)
        self._flush()

    def _on_timer(self) -> None:
        if self._timer.late > STALL:  # unread packets first (see ClientRelay._on_timer)
            for sock, host in self._listeners:
                self._read_link(sock, host)
        self.core.handle_timer(self.loop.time())
        self._flush()

    def _flush(self) -> None:
        for outgoing in self.core.datagrams_to_send():
            self._send(outgoing.data, outgoing.path)
        while (found := self.core.next_event()) is not None:
            event = found.event
            if isinstance(event, Delivered):
                self._deliver(found.client, event)
            else:
                name = self.config.names.get(found.client, str(found.client))
                _log_link(f"client {name}", event, str(event.link))
        self._timer.arm(self.core.get_timer())

    def _send(self, data: bytes, path: Path) -> None:
        try:
            sock = self._by_local.get(path.local)
            if sock is not None:
                sock.sendto(data, path.remote)
                return
            family = socket.AF_INET6 if ":" in path.local else socket.AF_INET
            wildcard = self._wildcard[family]
            wildcard.sendmsg([data], source_pktinfo(path.local), 0, path.remote)
        except (OSError, KeyError):
            self.send_errors += 1

    def _deliver(self, client: int, event: Delivered) -> None:
        flow = self.flows.get(event.channel.flow)
        if flow is None or event.channel.index >= len(flow.ports):
            self.core.bonds[client].counters.dropped += 1
            return
        key = (client, event.channel)
        sock = self._targets.get(key)
        try:
            if sock is None:
                sock = udp_socket("::" if ":" in flow.host else "0.0.0.0", 0)
                self._targets[key] = sock
                self.loop.add_reader(sock.fileno(), self._on_target, client, event.channel, sock)
            sock.sendto(event.payload, (flow.host, flow.ports[event.channel.index]))
        except OSError:
            self.send_errors += 1

    def status(self) -> dict[str, Any]:
        now = self.loop.time()
        clients = []
        for client, links in self.core.status(now).items():
            paths = self.core.paths
            clients.append(
                {
                    "client": client,
                    "name": self.config.names.get(client, str(client)),
                    "links": [
                        {
                            "name": str(s.link),
                            **_link(s),
                            "remote": _path(paths.get((client, s.link))),
                        }
                        for s in links
                    ],
                    **asdict(self.core.bonds[client].counters),
                }
            )
        return {
            "role": "server",
            "clients": clients,
            "unknown": self.core.unknown,
            "send_errors": self.send_errors,
        }


def _link(status: LinkStatus) -> dict[str, Any]:
    fields = asdict(status)
    fields["state"] = str(status.state)
    return fields


def _path(path: Path | None) -> str | None:
    return None if path is None else f"{path.remote[0]}:{path.remote[1]} via {path.local}"


# ---- status over HTTP on loopback ------------------------------------------------------------

COUNTERS = tuple(field for field in Counters.__dataclass_fields__)
LINK_METRICS = (
    ("up", "gauge", "1 when the link is up", lambda s: 1 if s["state"] == "up" else 0),
    ("rtt_seconds", "gauge", "smoothed RTT", lambda s: (s["rtt_ms"] or 0) / 1000),
    ("loss_ratio", "gauge", "share of recent beats unanswered", lambda s: s["loss"]),
    ("sent_bytes_total", "counter", "bytes sent on the link", lambda s: s["bytes_sent"]),
    ("received_bytes_total", "counter", "bytes received", lambda s: s["bytes_received"]),
    ("sent_packets_total", "counter", "packets sent", lambda s: s["packets_sent"]),
    ("received_packets_total", "counter", "packets received", lambda s: s["packets_received"]),
)


def metrics_text(status: dict[str, Any]) -> str:
    """Prometheus text exposition of a status document (metric names start with ``siplb_bond_``)."""
    peers = status["clients"] if status["role"] == "server" else [status]
    lines: list[str] = []
    for name, kind, help_text, value in LINK_METRICS:
        lines += [
            f"# HELP siplb_bond_link_{name} {help_text}",
            f"# TYPE siplb_bond_link_{name} {kind}",
        ]
        for peer in peers:
            for link in peer["links"]:
                labels = f'client="{peer["client"]}",link="{link["name"]}"'
                lines.append(f"siplb_bond_link_{name}{{{labels}}} {value(link)}")
    for counter in COUNTERS:
        lines += [f"# TYPE siplb_bond_{counter}_total counter"]
        lines += [
            f'siplb_bond_{counter}_total{{client="{peer["client"]}"}} {peer[counter]}'
            for peer in peers
        ]
    return "\n".join(lines) + "\n"


async def serve_status(
    host: str, port: int, status: Callable[[], dict[str, Any]]
) -> asyncio.Server:
    """A tiny HTTP/1.0 server: ``GET /`` gives the status as JSON, ``GET /metrics`` as text."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), 5.0)
            parts = request.split()
            path = parts[1] if len(parts) > 1 else b"/"
            if path == b"/metrics":
                body, kind = metrics_text(status()).encode(), b"text/plain; version=0.0.4"
            else:
                body, kind = json.dumps(status()).encode(), b"application/json"
            writer.write(
                b"HTTP/1.0 200 OK\r\nContent-Type: "
                + kind
                + b"\r\nContent-Length: "
                + str(len(body)).encode()
                + b"\r\n\r\n"
                + body
            )
            await writer.drain()
        except (OSError, TimeoutError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(answer, host, port)


Relay = ClientRelay | ServerRelay


async def run_relay(
    make: Callable[[asyncio.AbstractEventLoop], Relay], status: tuple[str, int]
) -> None:
    """Make the relay on the running loop, open it, serve its status, and run until SIGTERM or
    SIGINT."""
    loop = asyncio.get_running_loop()
    relay = make(loop)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    relay.open()
    server = await serve_status(*status, relay.status)
    log.info("bond %s running; status on http://%s:%d/", type(relay).__name__, *status)
    try:
        await stop.wait()
    finally:
        server.close()
        relay.close()


def run(make: Callable[[asyncio.AbstractEventLoop], Relay], status: tuple[str, int]) -> None:
    """``run_relay`` on uvloop when it is installed, else on asyncio's own loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(run_relay(make, status))
        return
    uvloop.run(run_relay(make, status))


def fetch_status(host: str, port: int, path: str = "/", timeout: float = 3.0) -> bytes:
    """The body of ``GET path`` from a relay's status port (for ``siplb bond status``)."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(f"GET {path} HTTP/1.0\r\n\r\n".encode())
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    _head, _sep, body = b"".join(chunks).partition(b"\r\n\r\n")
    return body
