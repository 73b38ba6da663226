"""The server's side: one ``Bond`` per configured client, and where each client's links are.

A datagram names its client in the clear header; the client's ``Bond`` opens it with that
client's key. Only when it is authentic and fresh does the server record the path it came on
(the client's address and port as seen here, and our own address it was sent to), so a forged
or replayed packet can neither inject data nor move a link. Everything sent on that link goes
back along the same path: from the address it arrived on, to the address it came from, which
is what lets the site's policy routing return it over the same uplink.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

from .packet import Channel, Header, PacketError
from .peer import Bond, Event, LinkStatus, Role
from .settings import FlowPolicy, HealthSettings


@dataclass(frozen=True, slots=True)
class Path:
    """Where a client's link reaches us: its address, and our address it was sent to."""

    remote: tuple[str, int]
    local: str


@dataclass(frozen=True, slots=True)
class Outgoing:
    data: bytes
    path: Path


@dataclass(frozen=True, slots=True)
class ClientEvent:
    client: int
    event: Event


class BondServer:
    def __init__(
        self,
        *,
        keys: Mapping[int, bytes],
        flows: Mapping[int, FlowPolicy],
        health: HealthSettings,
        first_number: int,
    ) -> None:
        self.bonds = {
            client: Bond(
                role=Role.SERVER,
                client=client,
                key=key,
                links={},
                flows=flows,
                health=health,
                first_number=first_number,
            )
            for client, key in keys.items()
        }
        self.paths: dict[tuple[int, int], Path] = {}
        self.unknown = 0  # datagrams that name no client of ours, or no header at all
        self._events: deque[ClientEvent] = deque()

    def receive(self, datagram: bytes, path: Path, now: float) -> None:
        try:
            header = Header.unpack(datagram)
        except PacketError:
            self.unknown += 1
            return
        bond = self.bonds.get(header.client)
        if bond is None:
            self.unknown += 1
            return
        if bond.receive(datagram, now):
            self.paths[header.client, header.link] = path
        self._collect(header.client, bond)

    def send(self, client: int, channel: Channel, payload: bytes, now: float) -> None:
        self.bonds[client].send(channel, payload, now)

    def get_timer(self) -> float | None:
        timers = [t for bond in self.bonds.values() if (t := bond.get_timer()) is not None]
        return min(timers, default=None)

    def handle_timer(self, now: float) -> None:
        for client, bond in self.bonds.items():
            bond.handle_timer(now)
            self._collect(client, bond)

    def datagrams_to_send(self) -> list[Outgoing]:
        out: list[Outgoing] = []
        for client, bond in self.bonds.items():
            for transmit in bond.datagrams_to_send():
                path = self.paths.get((client, transmit.link))
                if path is not None:
                    out.append(Outgoing(transmit.data, path))
        return out

    def next_event(self) -> ClientEvent | None:
        return self._events.popleft() if self._events else None

    def _collect(self, client: int, bond: Bond) -> None:
        while (event := bond.next_event()) is not None:
            self._events.append(ClientEvent(client, event))

    def status(self, now: float) -> dict[int, list[LinkStatus]]:
        return {client: bond.status(now) for client, bond in self.bonds.items()}
