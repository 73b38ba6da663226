"""The asyncio adapter of one proxy core (docs/design.md section 2): feed it what the sockets receive,
flush what it wants sent to the transports, re-arm one timer at its next deadline, and tell it
every ``BACKLOG_INTERVAL`` how full the UDP receive buffers are.

UDP sockets report the ICMP errors their datagrams meet (``siplb.io.udp``): a port unreachable
from a destination is a transport error for the core at once. A wildcard listener's socket is
read with the local address of each datagram, which names the listener it goes to; what such a
listener sends leaves from its address.

With ``[media]``, the core parks the messages whose SDP an engine must rewrite and lists what
to ask in ``media_asks``: each runs in a task on ``media`` (``siplb.io.media.MediaControl``),
its result goes back through ``Proxy.media_done``, and the core is flushed again.

Nothing is decided here. The composition root (``siplb.app``) opens the listeners through the
driver, builds the core, hands it over with ``run``, and receives every event the core reports
through ``on_event`` (logging, the journal, the kernel's ban sets are its business).

    driver = Driver(loop, limits, tcp=config.tcp, client_ssl=None, on_event=record)
    port = await driver.open_udp(0, bind_udp("127.0.0.1", 0, 1 << 20))
    port = driver.open_wildcard(1, bind_udp("0.0.0.0", 5060, 1 << 20))
    driver.add_address(1, 1, "10.0.0.1"); driver.add_address(1, 2, "10.0.0.2")
    driver.run(proxy)        # flushes once, then watches the backlog
    ...
    driver.close()
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import socket
import ssl
import struct
import time
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from siplb.cluster.setups import CallNote
from siplb.logs import TRACE, RefusalLog, trace_message
from siplb.media.asks import MediaAsk
from siplb.proxy.actions import HandOver, Send, Target
from siplb.proxy.core import Proxy
from siplb.settings import TcpSettings
from siplb.sip import Limits, ParseError, Request, Response

from .capture import NOWHERE, Capture
from .tcp import ConnectionPool
from .udp import (
    Receiver,
    UdpReader,
    Unreachable,
    enable_errors,
    read_errors,
    source_pktinfo,
)

log = logging.getLogger("siplb")

BACKLOG_INTERVAL = 0.05
# ICMP port unreachables acted on per BACKLOG_INTERVAL (400 a second): each costs a look at
# every client transaction, and anyone can forge one; the rest are counted and ignored.
ICMP_BUDGET = 20
# media asks run at once (each waits for an engine's reply): past it an ask fails at once
MAX_MEDIA_TASKS = 1000
SO_MEMINFO = getattr(socket, "SO_MEMINFO", 55)  # Linux 4.12+: struct sk_meminfo
_MEMINFO = struct.Struct("=II")  # SK_MEMINFO_RMEM_ALLOC, SK_MEMINFO_RCVBUF come first


class MediaRunner(Protocol):
    """What runs a media ask against the engines (``siplb.io.media.MediaControl``)."""

    async def handle(self, ask: MediaAsk) -> bytes | None: ...


class Driver:
    """Runs one ``Proxy`` on the event loop: its UDP transports, its stream pool, its timer."""

    @staticmethod
    def now() -> float:
        """The core's ``now``: the monotonic clock at sub-microsecond resolution. uvloop's
        ``loop.time()`` is libuv's millisecond clock, cached once per loop turn, which made
        every measured probe round trip a whole number of milliseconds. Both read the system's
        monotonic clock and libuv's lags it, so a deadline the core computes from ``now`` never
        fires early through ``loop.call_at``."""
        return time.monotonic()

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        limits: Limits,
        *,
        tcp: TcpSettings,
        client_ssl: ssl.SSLContext | None,
        on_event: Callable[[object], None],
        on_handover: Callable[[HandOver], None] | None = None,
        after_flush: Callable[[], None] | None = None,
    ) -> None:
        self.loop = loop
        self.core: Proxy | None = None  # None until ``run``: what arrives before is dropped
        self.on_event = on_event
        # where datagrams owned by another member go (None: nowhere; the sender retransmits)
        self.on_handover = on_handover
        self.after_flush = after_flush  # the shell's look at the core after each flush
        # workers = N: (this process's receive-buffer fill, now) -> the node's, which the core
        # acts on (``siplb.workers``); None: its own
        self.node_backlog: Callable[[float, float], float] | None = None
        # where calls in setup made and ended here go (anycast: the other nodes)
        self.on_setups: Callable[[list[CallNote]], None] | None = None
        self.pool = ConnectionPool(
            loop,
            limits,
            self.stream_message,
            self.stream_malformed,
            self.transport_failure,
            tcp=tcp,
            client_ssl=client_ssl,
        )
        self._readers: dict[int, UdpReader] = {}  # by listener index, each bound socket's
        self._udp_by_family: dict[int, int] = {}
        self._udp_sockets: list[socket.socket] = []
        # every UDP listener's socket (a wildcard's addresses share one), and for those of a
        # wildcard the ancillary data that makes a datagram leave from the listener's address
        self._udp_socket: dict[int, socket.socket] = {}
        self._udp_source: dict[int, list[tuple[int, int, bytes]]] = {}
        self._udp_local: dict[int, tuple[str, int]] = {}  # each UDP listener's own address
        self.capture: Capture | None = None  # [capture]: ``set_capture``
        # [media]: what runs the core's media asks (``MediaControl``), and its tasks in flight
        self.media: MediaRunner | None = None
        self._media_tasks: set[asyncio.Task[None]] = set()
        # wildcard listener index -> local address -> listener index
        self._arrivals: dict[int, dict[str, int]] = {}
        # a datagram to an address of a wildcard with no listener yet: the shell's listener for
        # it (``(wildcard index, address) -> index``), or None to drop it
        self.on_new_address: Callable[[int, str], int | None] | None = None
        self._icmp_budget = ICMP_BUDGET
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._backlog_timer: asyncio.TimerHandle | None = None
        self._fault_log = RefusalLog()  # a bug a peer can trigger is logged once in a while

    # ---- transports ------------------------------------------------------------------------
    async def open_udp(
        self, index: int, sock: socket.socket, receiver: Receiver | None = None
    ) -> int:
        """Serve UDP listener ``index`` on the bound ``sock``; returns its port. A datagram goes
        to ``receiver`` when one is given (which may hand it to ``datagram``), else to the core."""
        target = receiver or functools.partial(self.datagram, index)

        def read(data: bytes, addr: tuple[str, int], _: str | None) -> None:
            if self.capture is not None:  # what this process read, captured by it alone
                self.capture.received(data, "udp", addr, self._udp_local.get(index, NOWHERE))
            target(data, addr)

        enable_errors(sock)
        self._readers[index] = UdpReader(self.loop, sock, read, self._unreachable)
        self._add_udp_socket(index, sock)
        return int(sock.getsockname()[1])

    def open_wildcard(self, index: int, sock: socket.socket) -> int:
        """Serve wildcard listener ``index`` (``sock`` bound to ``0.0.0.0`` or ``::``); returns
        its port. Which listener each of its addresses is: ``add_address``."""
        enable_errors(sock)
        self._readers[index] = UdpReader(
            self.loop,
            sock,
            functools.partial(self._arrived, index),
            self._unreachable,
            arrivals=True,
        )
        self._arrivals[index] = {}
        self._add_udp_socket(index, sock)
        return int(sock.getsockname()[1])

    def add_address(self, wildcard: int, index: int, address: str) -> None:
        """Listener ``index`` is wildcard ``wildcard``'s ``address``: what arrives there goes to
        it, what it sends leaves from there."""
        self._arrivals[wildcard][address] = index
        self._udp_socket[index] = self._readers[wildcard].sock
        self._udp_source[index] = source_pktinfo(address)
        self._udp_local[index] = (address, self._readers[wildcard].sock.getsockname()[1])

    def _add_udp_socket(self, index: int, sock: socket.socket) -> None:
        self._udp_socket[index] = sock
        self._udp_local[index] = sock.getsockname()[:2]
        self._udp_sockets.append(sock)
        family = 6 if sock.family == socket.AF_INET6 else 4
        self._udp_by_family.setdefault(family, index)

    def run(self, core: Proxy) -> None:
        """Start feeding ``core``: flush what it has to say, then watch the receive backlog."""
        self.core = core
        self.flush()
        self._watch_backlog()

    def set_capture(self, capture: Capture | None) -> None:
        """Capture what every transport receives and sends from now on (None: stop)."""
        self.capture = capture
        self.pool.capture = capture

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._backlog_timer is not None:
            self._backlog_timer.cancel()
        for reader in self._readers.values():
            reader.close()
        self.pool.close()
        for task in list(self._media_tasks):
            task.cancel()

    # ---- inputs ----------------------------------------------------------------------------
    def datagram(
        self, index: int, data: bytes, addr: tuple[str, int], *, handed: bool = False
    ) -> None:
        """A datagram on listener ``index``; ``handed``: another member passed it on as ours."""
        core = self.core
        if core is None:
            return  # still starting: the sender retransmits
        marks = _marks(core) if TRACE.isEnabledFor(logging.DEBUG) else None
        source = Target("udp", addr[0], addr[1])
        try:
            core.receive(data, source, index, self.now(), handed=handed)
        except Exception:  # a bug, never the peer's fault: counted and logged, never fatal
            self._internal_error(addr)
        if marks is not None:
            self._trace(data, source, index, marks)
        self.flush()

    def _arrived(
        self, wildcard: int, data: bytes, addr: tuple[str, int], local: str | None
    ) -> None:
        """A datagram on wildcard listener ``wildcard``, sent to local address ``local``."""
        index = self._arrivals[wildcard].get(local) if local is not None else None
        if index is None and local is not None and self.on_new_address is not None:
            index = self.on_new_address(wildcard, local)
        if index is None:  # a broadcast, or an address not served: nothing may answer from it
            if self.core is not None:
                self.core.stats["udp_unserved_address"] += 1
            return
        if self.capture is not None:
            self.capture.received(data, "udp", addr, self._udp_local.get(index, NOWHERE))
        self.datagram(index, data, addr)

    def _unreachable(self, found: list[Unreachable]) -> None:
        """ICMP port unreachables: each such destination failed at once (a transport error:
        its transactions fail over, it counts as a passive failure), not at its timeout."""
        if self.core is None:
            return
        self.core.stats["icmp_port_unreachable"] += len(found)
        if len(found) > self._icmp_budget:
            self.core.stats["icmp_ignored"] += len(found) - self._icmp_budget
            found = found[: self._icmp_budget]
        self._icmp_budget -= len(found)
        now = self.now()
        for item in found:
            log.debug("ICMP port unreachable from %s:%d", item.host, item.port)
            self.core.transport_error(Target("udp", item.host, item.port), now)
        self.flush()

    def stream_message(self, message: Request | Response, peer: Target, index: int) -> None:
        core = self.core
        if core is None:
            return
        marks = _marks(core) if TRACE.isEnabledFor(logging.DEBUG) else None
        try:
            core.receive_message(message, peer, index, self.now())
        except Exception:  # a bug, never the peer's fault: counted and logged, never fatal
            self._internal_error((peer.host, peer.port))
        if marks is not None:
            self._trace(message.to_bytes(), peer, index, marks)
        self.flush()

    def _trace(self, data: bytes, source: Target, index: int, marks: tuple[int, int, int]) -> None:
        """``--log-level debug``: the line of one message, with what the core queued for it."""
        core = self.core
        assert core is not None
        sent, events, handed = marks
        out, happened, handovers = core.out[sent:], core.events[events:], core.handovers[handed:]
        trace_message(data, str(source), index, out, happened, handovers)

    def stream_malformed(self, data: bytes, error: ParseError, peer: Target, index: int) -> None:
        if self.core is not None:
            self.core.receive_malformed(data, error, peer, index)
            self.flush()

    def transport_failure(self, target: Target) -> None:
        if self.core is not None:
            self.core.transport_error(target, self.now())
            self.flush()

    def _internal_error(self, addr: tuple[str, int]) -> None:
        assert self.core is not None
        self.core.stats["internal_errors"] += 1
        left_out = self._fault_log.admit("internal error", "", self.now())
        if left_out is not None:
            more = f" ({left_out} more since the last one)" if left_out else ""
            log.exception("internal error on a message from %s%s", addr[0], more)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        assert self.core is not None
        self.core.handle_timer(self.now())
        self.flush()

    def _watch_backlog(self) -> None:
        """Tell the core how full the UDP receive buffers are, every BACKLOG_INTERVAL: the
        core refuses new calls while it is behind (``siplb.proxy.overload``)."""
        core = self.core
        assert core is not None
        fill = max((receive_backlog(sock) for sock in self._udp_sockets), default=0.0)
        now = self.now()
        if self.node_backlog is not None:
            fill = self.node_backlog(fill, now)
        core.report_backlog(fill, now)
        self._icmp_budget = ICMP_BUDGET
        found = [item for sock in self._udp_sockets for item in read_errors(sock).unreachable]
        if found:  # an error a receive never reported (the loop only asks on an event)
            self._unreachable(found)
        if core.events:
            self.flush()
        self._backlog_timer = self.loop.call_later(BACKLOG_INTERVAL, self._watch_backlog)

    # ---- outputs ---------------------------------------------------------------------------
    def flush(self) -> None:
        """Send what the core queued, pass on its hand-overs and events, re-arm the timer."""
        core = self.core
        assert core is not None
        if core.out:
            sends = core.out[:]
            core.out.clear()
            for send in sends:
                self.send(send)
        if core.handovers:
            handovers = core.handovers[:]
            core.handovers.clear()
            if self.on_handover is not None:
                for handover in handovers:
                    self.on_handover(handover)
        if core.setup_notes:
            notes = core.setup_notes[:]
            core.setup_notes.clear()
            if self.on_setups is not None:
                self.on_setups(notes)
        if core.media_asks:
            asks = core.media_asks[:]
            core.media_asks.clear()
            for ask in asks:
                self._run_media(ask)
        if core.events:
            events = core.events[:]
            core.events.clear()
            for event in events:
                self.on_event(event)
        deadline = core.get_timer()
        if deadline is not None and (self._timer_at is None or deadline < self._timer_at):
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = deadline
            self._timer = self.loop.call_at(deadline, self._on_timer)
        if self.after_flush is not None:
            self.after_flush()

    # ---- the media engine ------------------------------------------------------------------
    def _run_media(self, ask: MediaAsk) -> None:
        """Run one of the core's media asks in a task (at most ``MAX_MEDIA_TASKS`` at once:
        past that the ask fails at once, and the core applies its ``on_failure``)."""
        if self.media is None or len(self._media_tasks) >= MAX_MEDIA_TASKS:
            if self.core is not None:
                self.core.stats["media_not_run"] += 1
            if ask.token:
                self.loop.call_soon(self._media_result, ask.token, None)
            return
        task = self.loop.create_task(self._media(self.media, ask))
        self._media_tasks.add(task)
        task.add_done_callback(self._media_tasks.discard)

    async def _media(self, media: MediaRunner, ask: MediaAsk) -> None:
        try:
            result = await media.handle(ask)
        except Exception:  # a bug: the parked message goes on by the core's on_failure
            log.exception("media %s of %s failed", ask.op, ask.call_id)
            result = None
        if ask.token:
            self._media_result(ask.token, result)

    def _media_result(self, token: int, result: bytes | None) -> None:
        core = self.core
        if core is None:
            return
        try:
            core.media_done(token, result, self.now())
        except Exception:  # a bug, never the peer's fault: counted and logged, never fatal
            self._internal_error(("media", 0))
        self.flush()

    def send(self, send: Send) -> None:
        target = send.target
        if not _is_ip(target.host):
            self.loop.create_task(self._resolve_and_send(send))
            return
        if target.transport != "udp":
            self.pool.send(send.data, target, send.listener)
            return
        index = send.listener
        sock = self._udp_socket.get(index)
        if sock is None:
            fallback = self._udp_by_family.get(6 if ":" in target.host else 4)
            if fallback is None:
                log.warning("no UDP listener to reach %s", target)
                return
            index, sock = fallback, self._udp_socket[fallback]
        source = self._udp_source.get(index)
        address = (target.host, target.port)
        for attempt in (1, 2):
            try:
                if source is None:
                    sock.sendto(send.data, address)
                else:
                    sock.sendmsg([send.data], source, 0, address)
                if self.capture is not None:
                    local = self._udp_local.get(index, NOWHERE)
                    self.capture.sent(send.data, "udp", local, address)
                return
            except BlockingIOError:  # the send buffer (raised like the receive one) is full
                if self.core is not None:
                    self.core.stats["udp_send_buffer_full"] += 1
                return
            except OSError as exc:
                # A send reports an ICMP error queued before it, and sends nothing: drain the
                # queue (later, the core is being flushed) and try once more.
                queued = read_errors(sock)
                if queued.unreachable:
                    self.loop.call_soon(self._unreachable, queued.unreachable)
                if not queued.read or attempt == 2:
                    log.debug("send to %s failed: %s", target, exc)
                    self.transport_failure(target)
                    return

    async def _resolve_and_send(self, send: Send) -> None:
        target = send.target
        try:
            infos = await self.loop.getaddrinfo(target.host, target.port, proto=0)
        except OSError as exc:
            log.info("cannot resolve %s: %s", target.host, exc)
            self.transport_failure(target)
            return
        host = str(infos[0][4][0])
        self.send(Send(send.data, Target(target.transport, host, target.port), send.listener))


def _marks(core: Proxy) -> tuple[int, int, int]:
    """Where the core's queues end before a message: what it adds after is the message's."""
    return len(core.out), len(core.events), len(core.handovers)


def run_loop(coro: Coroutine[Any, Any, int]) -> int:
    """Run on uvloop when it is installed (docs/design.md section 4), else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.run(coro)
    return int(uvloop.run(coro))


def receive_backlog(sock: socket.socket) -> float:
    """How full ``sock``'s receive buffer is (0-1); 0.0 where the system cannot tell."""
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, 9 * 4)
    except OSError:
        return 0.0
    if len(raw) < _MEMINFO.size:
        return 0.0
    queued, size = _MEMINFO.unpack_from(raw)
    return min(1.0, queued / size) if size else 0.0


@functools.lru_cache(maxsize=4096)
def _is_ip(host: str) -> bool:
    """An IP address, not a name to resolve (decided once per host: every datagram asks)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
