"""The bond's wire format: a 16-byte header in clear, then a sealed body (``seal.py``).

    header  version(1) kind(1) link(1) flags(1) client(4) number(8)     authenticated, clear
    body    DATA    flow(1) index(2) seq(8) payload                      sealed
            PARITY  flow(1) index(2) first(8) count(1) length(2) xor     sealed
            BEAT, ECHO, WELCOME   sent(8, a float of the beating end's clock)
            HELLO   sent(8) count(1) then link(1) weight(2) per link

``number`` is the sender's packet number: it makes each nonce unique and feeds the receiver's
replay window; every copy of a packet (one per link in ``redundant`` mode) has its own.
``seq`` numbers the datagrams of one channel (a flow's port) for de-duplication and parity
groups; the copies of one datagram share it. A channel is ``(flow, index)``: ``index`` is the
position of the local port in the flow's port list, so one flow may carry a range of RTP ports.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

VERSION = 1
HEADER = struct.Struct("!BBBBIQ")
DATA_HEAD = struct.Struct("!BHQ")
PARITY_HEAD = struct.Struct("!BHQBH")
BEAT = struct.Struct("!d")
HELLO_LINK = struct.Struct("!BH")
TAG_SIZE = 16  # Poly1305


IN_GROUP = 0x01  # flags: this DATA belongs to a parity group (the receiver keeps a copy)
NOT_HEARD = 0x02  # flags: the sender hears nothing on this link (it is down at its end)


class Kind(IntEnum):
    HELLO = 1
    WELCOME = 2
    BEAT = 3
    ECHO = 4
    DATA = 5
    PARITY = 6


class PacketError(Exception):
    """What the peer (or an attacker) sent is not a packet of ours; the shell counts and drops it."""


@dataclass(frozen=True, slots=True)
class Channel:
    flow: int
    index: int = 0


@dataclass(frozen=True, slots=True)
class Header:
    kind: Kind
    link: int
    client: int
    number: int
    flags: int = 0

    def pack(self) -> bytes:
        return HEADER.pack(VERSION, self.kind, self.link, self.flags, self.client, self.number)

    @classmethod
    def unpack(cls, datagram: bytes) -> Header:
        if len(datagram) < HEADER.size + TAG_SIZE:
            raise PacketError("too short")
        version, kind, link, flags, client, number = HEADER.unpack_from(datagram)
        if version != VERSION:
            raise PacketError(f"version {version}")
        try:
            return cls(Kind(kind), link, client, number, flags)
        except ValueError:
            raise PacketError(f"kind {kind}") from None


@dataclass(frozen=True, slots=True)
class Data:
    channel: Channel
    seq: int
    payload: bytes

    def pack(self) -> bytes:
        return DATA_HEAD.pack(self.channel.flow, self.channel.index, self.seq) + self.payload

    @classmethod
    def unpack(cls, body: bytes) -> Data:
        if len(body) < DATA_HEAD.size:
            raise PacketError("short data")
        flow, index, seq = DATA_HEAD.unpack_from(body)
        return cls(Channel(flow, index), seq, body[DATA_HEAD.size :])


@dataclass(frozen=True, slots=True)
class Parity:
    """The XOR of ``count`` datagrams ``first .. first + count - 1`` of a channel, each padded
    with zeros to the longest, and the XOR of their lengths."""

    channel: Channel
    first: int
    count: int
    length: int
    xor: bytes

    def pack(self) -> bytes:
        head = PARITY_HEAD.pack(
            self.channel.flow, self.channel.index, self.first, self.count, self.length
        )
        return head + self.xor

    @classmethod
    def unpack(cls, body: bytes) -> Parity:
        if len(body) < PARITY_HEAD.size:
            raise PacketError("short parity")
        flow, index, first, count, length = PARITY_HEAD.unpack_from(body)
        if count == 0:
            raise PacketError("empty parity group")
        return cls(Channel(flow, index), first, count, length, body[PARITY_HEAD.size :])


@dataclass(frozen=True, slots=True)
class Beat:
    """BEAT, ECHO and WELCOME: ``sent`` is the clock of the end that sent the BEAT (or HELLO);
    an ECHO or WELCOME returns it unchanged, so that end reads its RTT off its own clock."""

    sent: float

    def pack(self) -> bytes:
        return BEAT.pack(self.sent)

    @classmethod
    def unpack(cls, body: bytes) -> Beat:
        if len(body) < BEAT.size:
            raise PacketError("short beat")
        return cls(BEAT.unpack_from(body)[0])


@dataclass(frozen=True, slots=True)
class Hello:
    """A client's link set (link id -> weight), sent on each link that has not answered yet."""

    sent: float
    weights: dict[int, int]

    def pack(self) -> bytes:
        links = b"".join(HELLO_LINK.pack(link, w) for link, w in sorted(self.weights.items()))
        return BEAT.pack(self.sent) + bytes([len(self.weights)]) + links

    @classmethod
    def unpack(cls, body: bytes) -> Hello:
        if len(body) < BEAT.size + 1:
            raise PacketError("short hello")
        count = body[BEAT.size]
        if len(body) != BEAT.size + 1 + count * HELLO_LINK.size:
            raise PacketError("bad hello length")
        pairs = (
            HELLO_LINK.unpack_from(body, BEAT.size + 1 + i * HELLO_LINK.size) for i in range(count)
        )
        return cls(BEAT.unpack_from(body)[0], dict(pairs))


Body = Data | Parity | Beat | Hello
PARSERS: dict[Kind, type[Data] | type[Parity] | type[Beat] | type[Hello]] = {
    Kind.HELLO: Hello,
    Kind.WELCOME: Beat,
    Kind.BEAT: Beat,
    Kind.ECHO: Beat,
    Kind.DATA: Data,
    Kind.PARITY: Parity,
}


def parse_body(kind: Kind, body: bytes) -> Body:
    return PARSERS[kind].unpack(body)
