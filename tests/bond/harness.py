"""Both ends of a bond on a fake clock and an in-memory network of links, each with its own
one-way delay, that a test can cut (everything sent on it vanishes) and bring back.

    lab = Lab({1: 0.010, 2: 0.020}, Mode.BALANCED)
    lab.run(until=1.0)                                   # hellos, welcomes, beats
    lab.stream(start=1.0, stop=5.0)                      # 50 datagrams/s, client to server
    lab.run(until=3.0); lab.cut(2); lab.run(until=6.0)
    lab.meter.lost, lab.meter.longest_gap
"""

from __future__ import annotations

import heapq
import itertools
import struct
from dataclasses import dataclass, field

from siplb.bond import (
    Bond,
    BondServer,
    Channel,
    Delivered,
    FlowPolicy,
    HealthSettings,
    LinkWentDown,
    LinkWentUp,
    Mode,
    Path,
    Role,
)
from siplb.bond.packet import Body, Kind, parse_body
from siplb.bond.seal import Direction, Sealer

CLIENT_ID = 7
KEY = bytes(range(32))
FLOW = 1
CHANNEL = Channel(FLOW)
RTP_SIZE = 172  # a G.711 20 ms packet with its RTP header
SEQ = struct.Struct("!I")


@dataclass
class Meter:
    """The receiving end of a numbered stream: what arrived, when, how often."""

    expected: int = 0
    arrivals: dict[int, float] = field(default_factory=dict)
    copies: int = 0
    order: list[int] = field(default_factory=list)  # sequence numbers as they arrived

    def arrived(self, payload: bytes, now: float) -> None:
        seq = SEQ.unpack_from(payload)[0]
        self.copies += 1
        self.order.append(seq)
        self.arrivals.setdefault(seq, now)

    @property
    def lost(self) -> int:
        return self.expected - len(self.arrivals)

    @property
    def longest_gap(self) -> float:
        times = sorted(self.arrivals.values())
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)


@dataclass
class SimLink:
    delay: float
    up: bool = True  # toward the server
    down: bool = True  # toward the client


class Lab:
    def __init__(
        self,
        delays: dict[int, float],
        mode: Mode,
        *,
        weights: dict[int, int] | None = None,
        health: HealthSettings | None = None,
        parity_group: int = 3,
        reorder: float = 0.0,
    ) -> None:
        self.now = 0.0
        self.health = health or HealthSettings()
        self.links = {link: SimLink(delay) for link, delay in delays.items()}
        flows = {FLOW: FlowPolicy(mode, parity_group=parity_group, reorder=reorder)}
        weights = weights or dict.fromkeys(delays, 1)
        self.client = Bond(
            role=Role.CLIENT,
            client=CLIENT_ID,
            key=KEY,
            links=weights,
            flows=flows,
            health=self.health,
            first_number=1_000,
        )
        self.server = BondServer(
            keys={CLIENT_ID: KEY}, flows=flows, health=self.health, first_number=9_000
        )
        self.meter = Meter()
        self.events: list[tuple[float, str, object]] = []
        self.to_server: list[tuple[float, int]] = []  # (when, link) of each datagram sent
        self.wire: list[tuple[int, Body]] = []  # (link, DATA or PARITY) as the client sent them
        self._reader = Sealer(KEY, Direction.DOWNSTREAM, 0)  # opens what the client seals
        self._queue: list[tuple[float, int, str, int, bytes]] = []
        self._order = itertools.count()
        self._stream: tuple[float, float, float] | None = None  # start, interval, stop

    def cut(self, link: int, toward: str | None = None) -> None:
        """Cut ``link`` both ways, or only ``toward`` "server" or "client"."""
        if toward in (None, "server"):
            self.links[link].up = False
        if toward in (None, "client"):
            self.links[link].down = False

    def restore(self, link: int) -> None:
        self.links[link].up = self.links[link].down = True

    def stream(self, start: float, stop: float, rate: float = 50.0) -> None:
        """Datagrams from ``start`` every ``1 / rate`` seconds, the last before ``stop``."""
        self._stream = (start, 1 / rate, stop)
        self.meter.expected = 0

    def _next_send(self) -> float | None:
        if self._stream is None:
            return None
        start, interval, stop = self._stream
        moment = start + self.meter.expected * interval
        return moment if moment < stop - interval / 2 else None

    def run(self, until: float) -> None:
        while True:
            moment = min(t for t in self._next_times() if t is not None)
            if moment > until:
                self.now = until
                return
            self.now = max(self.now, moment)
            self._step()

    def _next_times(self) -> list[float | None]:
        arrival = self._queue[0][0] if self._queue else None
        timers = [self.client.get_timer(), self.server.get_timer()]
        return [*timers, self._next_send(), arrival, float("inf")]

    def _step(self) -> None:
        now = self.now
        while self._queue and self._queue[0][0] <= now:
            _, _, side, link, data = heapq.heappop(self._queue)
            if side == "server":
                self.server.receive(data, Path(("site", link), "server"), now)
            else:
                self.client.receive(data, now)
        send = self._next_send()
        if send is not None and send <= now:
            payload = SEQ.pack(self.meter.expected).ljust(RTP_SIZE, b"\x55")
            self.meter.expected += 1
            self.client.send(CHANNEL, payload, now)
        timer = self.client.get_timer()
        if timer is not None and timer <= now:
            self.client.handle_timer(now)
        timer = self.server.get_timer()
        if timer is not None and timer <= now:
            self.server.handle_timer(now)
        self._flush()

    def _flush(self) -> None:
        for transmit in self.client.datagrams_to_send():
            if transmit.data[1] in (Kind.DATA, Kind.PARITY):
                self.to_server.append((self.now, transmit.link))
                header, clear = self._reader.open(transmit.data)
                self.wire.append((transmit.link, parse_body(header.kind, clear)))
            self._put("server", transmit.link, transmit.data)
        for outgoing in self.server.datagrams_to_send():
            self._put("client", outgoing.path.remote[1], outgoing.data)
        while (event := self.client.next_event()) is not None:
            self.events.append((self.now, "client", event))
        while (client_event := self.server.next_event()) is not None:
            event = client_event.event
            if isinstance(event, Delivered):
                self.meter.arrived(event.payload, self.now)
            else:
                self.events.append((self.now, "server", event))

    def _put(self, side: str, link: int, data: bytes) -> None:
        sim = self.links[link]
        if sim.up if side == "server" else sim.down:
            heapq.heappush(self._queue, (self.now + sim.delay, next(self._order), side, link, data))

    def went(
        self, kind: type[LinkWentUp] | type[LinkWentDown], side: str
    ) -> list[tuple[float, int]]:
        return [
            (when, event.link)
            for when, where, event in self.events
            if where == side and isinstance(event, kind)
        ]
