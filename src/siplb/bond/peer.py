"""One end of a bond with one peer: the client's end, or the server's end for one client.

Three verbs, as the other cores: ``send(channel, payload, now)`` takes a local datagram,
``receive(datagram, now)`` takes what arrived on a link, ``handle_timer(now)`` runs beats, death
checks and parity flushes at ``get_timer()``. What to put on which link is drained with
``datagrams_to_send()``; what to hand to local applications, and links going up or down, with
``next_event()``. Sockets, addresses and the clock belong to the shell.

Rules (the link rules are in ``link.py``):

- A client knows its links from its config. It sends HELLO (its link set with weights) in place
  of a beat on every link that is down; the server answers WELCOME on the same link. The server
  learns a link when an authentic packet arrives on it (the shell then records the address it
  came from, see ``server.py``): a client proves itself with its key before any of its links is
  used, and a link that moves (NAT rebinding) follows.
- A link that works one way only: everything sent on a link that is down at the sender's end
  carries the ``NOT_HEARD`` flag; the other end, which does hear it, sends nothing but beats
  and answers on it until a packet without the flag arrives there.
- Datagrams go on the links that are ``UP`` (and not refused by the peer as above); when none
  is, on every link (one may work).
- Every datagram of a channel gets the next sequence number; the receiver delivers the first
  copy and counts the rest as duplicates (``SeenWindow``). Nothing is held back for reordering,
  unless the flow has a ``reorder`` window (``reorder.py``): then first copies and rebuilt
  datagrams pass through it.
- Parity mode: a group of ``min(parity_group, live links - 1)`` datagrams, each on the next link
  in turn, then their XOR on the next; the rotation moves on by one each group so the parity
  load is spread. A group that has not filled after ``parity_wait`` gets its parity then.
  Every datagram of a group and its parity go on links of their own, so that whichever link
  fails the group loses one at most: a group remembers the links it used, and when the live
  links change before it is full (a link died or came back, the peer stopped or started hearing
  one) it is closed at once, its parity on a live link it has not used, and the next datagram
  starts a new group on the new live links.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

from .link import Link, LinkState
from .packet import (
    IN_GROUP,
    NOT_HEARD,
    Beat,
    Body,
    Channel,
    Data,
    Header,
    Hello,
    Kind,
    PacketError,
    Parity,
    parse_body,
)
from .parity import ParityDecoder, ParityGroup, make_parity
from .reorder import Released, ReorderWindow
from .schedule import Balancer
from .seal import Direction, Sealer
from .settings import FlowPolicy, HealthSettings, Mode
from .window import SeenWindow

MAX_LINKS = 16  # links a server accepts from one client


class Role(Enum):
    CLIENT = Direction.UPSTREAM
    SERVER = Direction.DOWNSTREAM


@dataclass(frozen=True, slots=True)
class Transmit:
    """Send ``data`` on link ``link``."""

    link: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Delivered:
    """A datagram of ``channel`` arrived (first copy, or rebuilt from parity)."""

    channel: Channel
    payload: bytes


@dataclass(frozen=True, slots=True)
class LinkWentUp:
    link: int


@dataclass(frozen=True, slots=True)
class LinkWentDown:
    link: int
    silent: float  # seconds nothing had arrived on it


Event = Delivered | LinkWentUp | LinkWentDown


@dataclass(frozen=True, slots=True)
class LinkStatus:
    link: int
    state: LinkState
    weight: int
    rtt_ms: float | None
    loss: float
    bytes_sent: int
    bytes_received: int
    packets_sent: int
    packets_received: int


@dataclass(slots=True)
class Counters:
    delivered: int = 0
    duplicates: int = 0
    recovered: int = 0  # rebuilt from parity, its own copy never seen
    rebuilt_early: int = 0  # rebuilt from parity before its own copy arrived anyway
    dropped: int = 0  # not authentic, replayed, malformed, or for a flow we do not carry
    reorder_skipped: int = 0  # gaps a reorder window stopped waiting for
    reorder_late: int = 0  # datagrams that came after their gap was skipped (delivered then)


@dataclass(slots=True)
class _Sending:
    """A channel's sending state."""

    next_seq: int
    group: ParityGroup | None = None
    rotation: int = 0


class Bond:
    def __init__(
        self,
        *,
        role: Role,
        client: int,
        key: bytes,
        links: Mapping[int, int],
        flows: Mapping[int, FlowPolicy],
        health: HealthSettings,
        first_number: int,
    ) -> None:
        self.role = role
        self.client = client
        self.flows = dict(flows)
        self.health = health
        self.links = {link: Link(link, weight, health) for link, weight in sorted(links.items())}
        self.counters = Counters()
        self._sealer = Sealer(key, role.value, first_number)
        self._first_seq = first_number
        self._sending: dict[Channel, _Sending] = {}
        self._seen: dict[Channel, SeenWindow] = {}
        self._decoders: dict[Channel, ParityDecoder] = {}
        self._reorders: dict[Channel, ReorderWindow] = {}
        self._balancers: dict[int, Balancer] = {}
        self._out: list[Transmit] = []
        self._events: deque[Event] = deque()

    # -- sending --------------------------------------------------------------------------

    def send(self, channel: Channel, payload: bytes, now: float) -> None:
        policy = self.flows.get(channel.flow)
        if policy is None:
            raise ValueError(f"flow {channel.flow} is not configured")
        state = self._sending.get(channel)
        if state is None:
            state = self._sending[channel] = _Sending(self._first_seq)
        seq = state.next_seq
        state.next_seq += 1
        live = self.live_links()
        if not live:
            return
        body = Data(channel, seq, payload).pack()
        if policy.mode is Mode.REDUNDANT:
            for link in live:
                self._emit(link, Kind.DATA, body, now)
        elif policy.mode is Mode.PARITY and len(live) > 1:
            self._send_in_group(channel, state, policy, live, (seq, payload, body), now)
        else:
            balancer = self._balancers.setdefault(channel.flow, Balancer())
            self._emit(balancer.pick(live, now), Kind.DATA, body, now)

    def _send_in_group(
        self,
        channel: Channel,
        state: _Sending,
        policy: FlowPolicy,
        live: list[Link],
        datagram: tuple[int, bytes, bytes],
        now: float,
    ) -> None:
        seq, payload, body = datagram
        ids = tuple(link.id for link in live)
        if state.group is not None and state.group.live != ids:
            self._close_group(channel, state, now)
        if state.group is None:
            state.group = ParityGroup(seq, now, ids)
        group = state.group
        link = self._unused(live, group, state.rotation)
        self._emit(link, Kind.DATA, body, now, flags=IN_GROUP)
        group.payloads.append(payload)
        group.used.add(link.id)
        if len(group.payloads) >= min(policy.parity_group, len(live) - 1):
            self._close_group(channel, state, now)

    def _close_group(self, channel: Channel, state: _Sending, now: float) -> None:
        group, state.group = state.group, None
        if group is None:
            return
        parity = make_parity(channel, group.first, group.payloads)
        link = self._unused(self.live_links(), group, state.rotation)
        self._emit(link, Kind.PARITY, parity.pack(), now)
        state.rotation += 1

    @staticmethod
    def _unused(live: list[Link], group: ParityGroup, rotation: int) -> Link:
        """The next live link in turn that the group has not used yet (when the live links
        shrank under it and it used them all, the next in turn)."""
        start = rotation + len(group.payloads)
        turn = [live[(start + i) % len(live)] for i in range(len(live))]
        return next((link for link in turn if link.id not in group.used), turn[0])

    def live_links(self) -> list[Link]:
        """The links to send on: those up, or all of them when none is."""
        up = [link for link in self.links.values() if link.up and not link.peer_down]
        return up or list(self.links.values())

    def _emit(self, link: Link, kind: Kind, body: bytes, now: float, flags: int = 0) -> None:
        if not link.up:
            flags |= NOT_HEARD
        header = Header(kind, link.id, self.client, self._sealer.next_number(), flags)
        data = self._sealer.seal(header, body)
        self._out.append(Transmit(link.id, data))
        link.sent(len(data), now)

    # -- receiving ------------------------------------------------------------------------

    def receive(self, datagram: bytes, now: float) -> bool:
        """Take a datagram that arrived on a link; True when it was authentic and fresh (the
        server's shell then records where that link is)."""
        try:
            header, clear = self._sealer.open(datagram)
            body = parse_body(header.kind, clear)
        except PacketError:
            self.counters.dropped += 1
            return False
        link = self._link_for(header.link)
        if link is None:
            self.counters.dropped += 1
            return False
        if link.heard(len(datagram), now):
            self._events.append(LinkWentUp(link.id))
        self._handle(header, body, link, now)
        return True

    def _link_for(self, link_id: int) -> Link | None:
        link = self.links.get(link_id)
        if link is None and self.role is Role.SERVER and len(self.links) < MAX_LINKS:
            link = self.links[link_id] = Link(link_id, 1, self.health)
        return link

    def _handle(self, header: Header, body: Body, link: Link, now: float) -> None:
        link.peer_down = bool(header.flags & NOT_HEARD)
        if isinstance(body, Data):
            self._data(body, bool(header.flags & IN_GROUP), now)
        elif isinstance(body, Parity):
            self._parity(body, now)
        elif isinstance(body, Hello):
            self._hello(body, link, now)
        elif header.kind is Kind.BEAT:
            self._emit(link, Kind.ECHO, body.pack(), now)
        else:  # ECHO, WELCOME: the answer to our beat or hello
            link.answered(body.sent, now)

    def _hello(self, hello: Hello, link: Link, now: float) -> None:
        if self.role is Role.SERVER:
            for link_id, weight in hello.weights.items():
                known = self._link_for(link_id)
                if known is not None:
                    known.weight = max(1, weight)
        self._emit(link, Kind.WELCOME, Beat(hello.sent).pack(), now)

    def _data(self, data: Data, in_group: bool, now: float) -> None:
        if data.channel.flow not in self.flows:
            self.counters.dropped += 1
            return
        seen = self._seen.setdefault(data.channel, SeenWindow())
        if not seen.accept(data.seq):
            self.counters.duplicates += 1
            decoder = self._decoders.get(data.channel)
            if in_group and decoder is not None and decoder.arrived_late(data.seq):
                self.counters.recovered -= 1
                self.counters.rebuilt_early += 1
            return
        self._deliver(data.channel, data.seq, data.payload, now)
        if in_group:
            decoder = self._decoders.setdefault(data.channel, ParityDecoder())
            self._rebuilt(data.channel, decoder.add_data(data.seq, data.payload), now)

    def _parity(self, parity: Parity, now: float) -> None:
        if parity.channel.flow not in self.flows:
            self.counters.dropped += 1
            return
        decoder = self._decoders.setdefault(parity.channel, ParityDecoder())
        self._rebuilt(parity.channel, decoder.add_parity(parity), now)

    def _rebuilt(self, channel: Channel, found: tuple[int, bytes] | None, now: float) -> None:
        if found is None:
            return
        seq, payload = found
        if self._seen.setdefault(channel, SeenWindow()).accept(seq):
            self.counters.recovered += 1
            self._deliver(channel, seq, payload, now)

    def _deliver(self, channel: Channel, seq: int, payload: bytes, now: float) -> None:
        window = self.flows[channel.flow].reorder
        if not window:
            self.counters.delivered += 1
            self._events.append(Delivered(channel, payload))
            return
        reorder = self._reorders.get(channel)
        if reorder is None:
            reorder = self._reorders[channel] = ReorderWindow(window)
        self._release(channel, reorder.push(seq, payload, now))

    def _release(self, channel: Channel, released: Released) -> None:
        self.counters.delivered += len(released.payloads)
        self.counters.reorder_skipped += released.skipped
        self.counters.reorder_late += released.late
        self._events.extend(Delivered(channel, payload) for payload in released.payloads)

    # -- time -----------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        deadline = float("inf")
        for link in self.links.values():
            due = link.death_due()
            deadline = min(deadline, link.beat_due(), deadline if due is None else due)
        for channel, state in self._sending.items():
            if state.group is not None:
                deadline = min(deadline, state.group.started + self.flows[channel.flow].parity_wait)
        for reorder in self._reorders.values():
            due = reorder.deadline()
            deadline = deadline if due is None else min(deadline, due)
        return None if deadline == float("inf") else deadline

    def handle_timer(self, now: float) -> None:
        for link in self.links.values():
            if link.check(now):
                self._events.append(LinkWentDown(link.id, now - link.last_heard))
        for link in self.links.values():
            if now >= link.beat_due():
                self._beat(link, now)
        for channel, state in self._sending.items():
            if state.group and now >= state.group.started + self.flows[channel.flow].parity_wait:
                self._close_group(channel, state, now)
        for channel, reorder in self._reorders.items():
            due = reorder.deadline()
            if due is not None and now >= due:
                self._release(channel, reorder.expire(now))

    def _beat(self, link: Link, now: float) -> None:
        if self.role is Role.CLIENT and not link.up:
            hello = Hello(now, {known.id: known.weight for known in self.links.values()})
            self._emit(link, Kind.HELLO, hello.pack(), now)
        else:
            self._emit(link, Kind.BEAT, Beat(now).pack(), now)
        link.beat_sent(now)

    # -- output ---------------------------------------------------------------------------

    def datagrams_to_send(self) -> list[Transmit]:
        out, self._out = self._out, []
        return out

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def status(self, now: float) -> list[LinkStatus]:
        return [
            LinkStatus(
                link.id,
                link.state,
                link.weight,
                None if link.srtt is None else round(link.srtt * 1000, 2),
                round(link.loss(now), 3),
                link.stats.bytes_sent,
                link.stats.bytes_received,
                link.stats.packets_sent,
                link.stats.packets_received,
            )
            for link in self.links.values()
        ]
