"""HEP version 3 (the Homer Encapsulation Protocol, "HEP3"): one captured SIP message, its
addresses, ports, time and capture agent, in one packet a collector (Homer's heplify-server,
sngrep, Kamailio's sipcapture) files with the rest of its call.

The layout, big-endian throughout::

    "HEP3"  total length (u16, these 6 bytes included)
    chunk:  vendor id (u16, 0 = generic)  type id (u16)  length (u16, these 6 bytes included)  value
    chunk:  ...

The generic chunk types used here are ``Chunk``. They are written in the order the senders of
Kamailio and sngrep use, because sngrep 1.x reads the first eight chunks and the two addresses
at fixed offsets: family, protocol, ports, times, protocol type, agent id, then the addresses,
then the auth key (only when a password is set: a reader without one takes that chunk for the
payload), then the payload. The correlation id and the node name follow the payload, where a
reader that stops at the payload does not miss them.

A packet is at most 65535 bytes (the total length is 16 bits): a message too large for one is
not encoded (``encode`` returns None) and the shell counts it.
"""

from __future__ import annotations

import ipaddress
import re
import struct
from dataclasses import dataclass
from enum import IntEnum
from functools import lru_cache

MAGIC = b"HEP3"
HEADER_SIZE = 6  # "HEP3" and the total length
CHUNK_HEADER_SIZE = 6  # vendor id, type id, length
MAX_PACKET = 0xFFFF
PROTO_SIP = 1  # chunk 11's value for SIP
AF_INET = 2  # chunk 1's values: the address families as Linux numbers them
AF_INET6 = 10
IPPROTO_TCP = 6
IPPROTO_UDP = 17
# chunk 2: the IP protocol; TLS is carried over TCP and the payload is captured decrypted
IP_PROTOCOL = {"udp": IPPROTO_UDP, "tcp": IPPROTO_TCP, "tls": IPPROTO_TCP}

_CHUNK = struct.Struct("!HHH")


class Chunk(IntEnum):
    """Generic chunk types (vendor 0) of HEP version 3."""

    IP_FAMILY = 1  # u8
    IP_PROTOCOL = 2  # u8
    SOURCE_IPV4 = 3  # 4 bytes
    DESTINATION_IPV4 = 4
    SOURCE_IPV6 = 5  # 16 bytes
    DESTINATION_IPV6 = 6
    SOURCE_PORT = 7  # u16
    DESTINATION_PORT = 8
    TIME_SECONDS = 9  # u32, since the epoch
    TIME_MICROSECONDS = 10  # u32, within the second
    PROTOCOL_TYPE = 11  # u8: 1 = SIP
    CAPTURE_AGENT_ID = 12  # u32
    AUTH_KEY = 14  # the collector's password
    PAYLOAD = 15
    CORRELATION_ID = 17  # the Call-ID
    NODE_NAME = 19


def _headers(size: int) -> tuple[bytes, ...]:
    """The headers of the chunks every packet has, in their order (see above), for addresses
    of ``size`` bytes: each packet packs them with their values at once."""
    source, destination = (
        (Chunk.SOURCE_IPV6, Chunk.DESTINATION_IPV6)
        if size == 16
        else (Chunk.SOURCE_IPV4, Chunk.DESTINATION_IPV4)
    )
    widths = [
        (Chunk.IP_FAMILY, 1),
        (Chunk.IP_PROTOCOL, 1),
        (Chunk.SOURCE_PORT, 2),
        (Chunk.DESTINATION_PORT, 2),
        (Chunk.TIME_SECONDS, 4),
        (Chunk.TIME_MICROSECONDS, 4),
        (Chunk.PROTOCOL_TYPE, 1),
        (Chunk.CAPTURE_AGENT_ID, 4),
        (source, size),
        (destination, size),
    ]
    return tuple(_CHUNK.pack(0, kind, CHUNK_HEADER_SIZE + width) for kind, width in widths)


_HEADERS4, _HEADERS6 = _headers(4), _headers(16)
_FIXED = "!6sB6sB6sH6sH6sI6sI6sB6sI6s{0}s6s{0}s"  # each chunk's header, then its value
_FIXED4, _FIXED6 = struct.Struct(_FIXED.format(4)), struct.Struct(_FIXED.format(16))


@dataclass(frozen=True, slots=True)
class Agent:
    """Who captured: ``node_id`` (the capture agent id), an optional ``node_name`` and the
    collector's optional ``password``."""

    node_id: int = 0
    node_name: str | None = None
    password: str | None = None


@dataclass(frozen=True, slots=True)
class Captured:
    """One SIP message as it crossed a socket of ours: ``time`` in seconds since the epoch."""

    data: bytes
    transport: str  # "udp", "tcp" or "tls"
    source: tuple[str, int]
    destination: tuple[str, int]
    time: float


def encode(message: Captured, agent: Agent) -> bytes | None:
    """The HEP3 packet of ``message``; None when it does not fit in one (65535 bytes)."""
    if len(message.data) > MAX_PACKET - HEADER_SIZE - CHUNK_HEADER_SIZE:
        return None
    source, destination = _addresses(message.source[0], message.destination[0])
    v6 = len(source) == 16
    seconds = int(message.time)
    micros = min(max(round((message.time - seconds) * 1_000_000), 0), 999_999)
    fixed, h = (_FIXED6, _HEADERS6) if v6 else (_FIXED4, _HEADERS4)
    parts = [
        fixed.pack(
            h[0],
            AF_INET6 if v6 else AF_INET,
            h[1],
            IP_PROTOCOL.get(message.transport, IPPROTO_UDP),
            h[2],
            message.source[1],
            h[3],
            message.destination[1],
            h[4],
            seconds & 0xFFFFFFFF,
            h[5],
            micros,
            h[6],
            PROTO_SIP,
            h[7],
            agent.node_id,
            h[8],
            source,
            h[9],
            destination,
        )
    ]
    if agent.password is not None:
        parts.append(_chunk(Chunk.AUTH_KEY, agent.password.encode()))
    parts.append(_chunk(Chunk.PAYLOAD, message.data))
    correlation = call_id(message.data)
    if correlation:
        parts.append(_chunk(Chunk.CORRELATION_ID, correlation))
    if agent.node_name:
        parts.append(_chunk(Chunk.NODE_NAME, agent.node_name.encode()))
    body = b"".join(parts)
    total = HEADER_SIZE + len(body)
    if total > MAX_PACKET:
        return None
    return MAGIC + total.to_bytes(2, "big") + body


def _chunk(kind: Chunk, value: bytes) -> bytes:
    return _CHUNK.pack(0, kind, CHUNK_HEADER_SIZE + len(value)) + value


def _addresses(source: str, destination: str) -> tuple[bytes, bytes]:
    """Both addresses packed in one family: an IPv4 one beside an IPv6 one (a dual-stack
    socket's peer) is written IPv4-mapped."""
    a, b = _packed(source), _packed(destination)
    if len(a) != len(b):
        a, b = _mapped(a), _mapped(b)
    return a, b


@lru_cache(maxsize=4096)
def _packed(host: str) -> bytes:
    """The address's bytes (4 or 16); an unspellable one (which a socket never gives) as
    0.0.0.0, so a capture is never lost to it."""
    try:
        return ipaddress.ip_address(host).packed
    except ValueError:
        return bytes(4)


def _mapped(packed: bytes) -> bytes:
    return packed if len(packed) == 16 else b"\0" * 10 + b"\xff\xff" + packed


def call_id(data: bytes) -> bytes | None:
    """The Call-ID (or compact ``i``, RFC 3261 20.8) in a message's header block, as written;
    None when there is none. Never raises: the message may be one that did not parse."""
    return _header(data, _CALL_ID)


def cseq_method(data: bytes) -> str | None:
    """The method of a message's CSeq (RFC 3261 20.16): a request's method, or the one a
    response answers; None when there is none."""
    value = _header(data, _CSEQ)
    parts = value.split() if value is not None else []
    return parts[1].decode("ascii", "replace") if len(parts) == 2 else None


def _header(data: bytes, pattern: re.Pattern[bytes]) -> bytes | None:
    """The value of the first header ``pattern`` finds in the header block, stripped."""
    end = data.find(b"\r\n\r\n")
    found = pattern.search(data, 0, len(data) if end < 0 else end)
    return (found[1].strip() or None) if found is not None else None


def _named(*names: bytes) -> re.Pattern[bytes]:
    """A header line of one of ``names`` (any case, white space before the colon allowed)."""
    alternatives = b"|".join(re.escape(name) for name in names)
    return re.compile(rb"\r\n(?:" + alternatives + rb")[ \t]*:([^\r\n]*)", re.IGNORECASE)


_CALL_ID = _named(b"call-id", b"i")
_CSEQ = _named(b"cseq")
