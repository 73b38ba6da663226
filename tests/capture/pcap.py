"""A small reader of classic pcap files (``tcpdump -w``, ``sngrep -O``): each frame's time,
and for Ethernet frames carrying IPv4 or IPv6 UDP, the addresses, ports and payload."""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from pathlib import Path

LINKTYPE_ETHERNET = 1
_MAGIC = {
    b"\xd4\xc3\xb2\xa1": ("<", 1e-6),
    b"\xa1\xb2\xc3\xd4": (">", 1e-6),
    b"\x4d\x3c\xb2\xa1": ("<", 1e-9),
    b"\xa1\xb2\x3c\x4d": (">", 1e-9),
}
IPPROTO_UDP = 17


@dataclass(frozen=True)
class Datagram:
    time: float
    source: tuple[str, int]
    destination: tuple[str, int]
    payload: bytes


def read_pcap(path: Path) -> list[Datagram]:
    """Every UDP datagram of the file, in order; fails on a file that is not a whole pcap."""
    data = path.read_bytes()
    endian, unit = _MAGIC[data[:4]]
    (linktype,) = struct.unpack(endian + "I", data[20:24])
    assert linktype == LINKTYPE_ETHERNET, linktype
    out = []
    at = 24
    while at < len(data):
        seconds, fraction, included, _ = struct.unpack(endian + "IIII", data[at : at + 16])
        frame = data[at + 16 : at + 16 + included]
        assert len(frame) == included, "a truncated record"
        at += 16 + included
        found = _udp(frame)
        if found is not None:
            source, destination, payload = found
            out.append(Datagram(seconds + fraction * unit, source, destination, payload))
    return out


def _udp(frame: bytes) -> tuple[tuple[str, int], tuple[str, int], bytes] | None:
    (ethertype,) = struct.unpack("!H", frame[12:14])
    packet = frame[14:]
    if ethertype == 0x0800:
        header = (packet[0] & 0x0F) * 4
        protocol, src, dst = packet[9], packet[12:16], packet[16:20]
    elif ethertype == 0x86DD:
        header, protocol, src, dst = 40, packet[6], packet[8:24], packet[24:40]
    else:
        return None
    if protocol != IPPROTO_UDP:
        return None
    sport, dport, length = struct.unpack("!HHH", packet[header : header + 6])
    payload = packet[header + 8 : header + length]
    source = (str(ipaddress.ip_address(src)), sport)
    destination = (str(ipaddress.ip_address(dst)), dport)
    return source, destination, payload
