"""Parity across links: the XOR of a group of datagrams, so any one lost datagram of the group
is rebuilt from the others and the parity (like RAID 5 across links).

Datagrams are padded with zeros to the longest of the group; the parity carries the XOR of the
lengths too, so the rebuilt datagram gets its own length back. A group is ``count`` consecutive
sequence numbers of one channel from ``first``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .packet import Channel, Parity

KEEP = 256  # datagrams (and parities) a channel's decoder remembers


def xor_bytes(a: bytes, b: bytes) -> bytes:
    if len(a) < len(b):
        a, b = b, a
    mixed = int.from_bytes(a, "big") ^ int.from_bytes(b.ljust(len(a), b"\0"), "big")
    return mixed.to_bytes(len(a), "big")


def make_parity(channel: Channel, first: int, payloads: list[bytes]) -> Parity:
    xor, length = b"", 0
    for payload in payloads:
        xor = xor_bytes(xor, payload)
        length ^= len(payload)
    return Parity(channel, first, len(payloads), length, xor)


@dataclass(slots=True)
class ParityGroup:
    """The group a sender is filling: its first sequence number, its datagrams, its deadline,
    the live links it was started on and the links its datagrams went on."""

    first: int
    started: float
    live: tuple[int, ...] = ()
    payloads: list[bytes] = field(default_factory=list)
    used: set[int] = field(default_factory=set)


class ParityDecoder:
    """One channel's receiving side: remembers recent datagrams and parities, and rebuilds the
    one datagram missing from a group once the rest and the parity are in."""

    def __init__(self) -> None:
        self._data: dict[int, bytes] = {}
        self._parities: dict[int, Parity] = {}
        self._rebuilt: set[int] = set()

    def arrived_late(self, seq: int) -> bool:
        """True (once) when ``seq`` was rebuilt here and its own copy has now arrived: the
        parity only came first, nothing had been lost."""
        if seq in self._rebuilt:
            self._rebuilt.discard(seq)
            return True
        return False

    def add_data(self, seq: int, payload: bytes) -> tuple[int, bytes] | None:
        self._data[seq] = payload
        self._trim(self._data, seq)
        for parity in list(self._parities.values()):
            if parity.first <= seq < parity.first + parity.count:
                return self._try(parity)
        return None

    def add_parity(self, parity: Parity) -> tuple[int, bytes] | None:
        self._parities[parity.first] = parity
        self._trim(self._parities, parity.first)
        return self._try(parity)

    def _try(self, parity: Parity) -> tuple[int, bytes] | None:
        group = range(parity.first, parity.first + parity.count)
        missing = [seq for seq in group if seq not in self._data]
        if len(missing) != 1:
            if not missing:
                del self._parities[parity.first]
            return None
        xor, length = parity.xor, parity.length
        for seq in group:
            if seq != missing[0]:
                xor = xor_bytes(xor, self._data[seq])
                length ^= len(self._data[seq])
        del self._parities[parity.first]
        if length > len(xor):
            return None  # not a group we can rebuild (corrupt lengths)
        self._data[missing[0]] = xor[:length]
        self._rebuilt.add(missing[0])
        if len(self._rebuilt) > KEEP:
            self._rebuilt = {seq for seq in self._rebuilt if seq > missing[0] - KEEP}
        return missing[0], xor[:length]

    @staticmethod
    def _trim(table: dict[int, bytes] | dict[int, Parity], newest: int) -> None:
        if len(table) > KEEP:
            for seq in [seq for seq in table if seq <= newest - KEEP]:
                del table[seq]
