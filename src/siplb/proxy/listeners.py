"""The proxy's own addresses: where it listens, what it advertises, how it names itself.

A wildcard UDP listener (``0.0.0.0``, ``::``) is one socket that receives on every address of
the host. The core never sees the wildcard: each address becomes a listener of its own (the
configured index names the first address, the others get the next free indexes), sharing the
socket, so that Via, Record-Route and Path name the address a request arrived on and its
answers leave from it (the shell reads and sets the address per datagram, ``siplb.io.udp``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cached_property

from siplb.sip import SipUri

DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061}
WILDCARDS = frozenset({"0.0.0.0", "::"})


@dataclass(frozen=True)
class Listener:
    """A bound socket (after binding: ``port`` is the real port even when 0 was configured)."""

    index: int
    transport: str  # "udp" | "tcp" | "tls"
    host: str
    port: int
    advertise_host: str | None = None
    advertise_port: int | None = None
    anycast: bool = False  # an address every node of the cluster shares

    @property
    def family(self) -> int:
        return 6 if ":" in self.host else 4

    @cached_property
    def public_host(self) -> str:
        return self.advertise_host or self.host

    @cached_property
    def public_port(self) -> int:
        return self.advertise_port or self.port

    @cached_property
    def sent_by(self) -> bytes:
        host = self.public_host
        host = f"[{host}]" if ":" in host else host
        return f"{host}:{self.public_port}".encode("ascii")

    @cached_property
    def via_prefix(self) -> bytes:
        """``SIP/2.0/UDP host:port;branch=`` ready for a branch."""
        return b"SIP/2.0/" + self.transport.upper().encode("ascii") + b" " + self.sent_by

    @cached_property
    def record_route(self) -> bytes:
        """Our Record-Route value on this listener, with ``lr`` (RFC 3261 16.6 step 4)."""
        param = b"" if self.transport == "udp" else b";transport=" + self.transport.encode()
        return b"<sip:" + self.sent_by + param + b";lr>"

    def names(self) -> list[tuple[str, int]]:
        """Every (host, port) by which a URI may name this listener."""
        out = [(self.host, self.port)]
        if self.advertise_host is not None:
            out.append((self.advertise_host, self.public_port))
        return out


class LocalNames:
    """Answers "does this URI name us?" for loose routing (16.4) and requests to the proxy."""

    def __init__(self, listeners: list[Listener]) -> None:
        self._by_name: dict[tuple[str, int], Listener] = {}
        for listener in listeners:
            self.add(listener)

    def add(self, listener: Listener) -> None:
        for host, port in listener.names():
            self._by_name.setdefault((host.lower(), port), listener)

    def listener_for(self, uri: SipUri) -> Listener | None:
        """The listener a SIP URI names, or ``None`` when it is not one of ours."""
        port = uri.port or DEFAULT_PORTS.get(uri.transport, 5060)
        host = uri.params.get("maddr") or uri.host
        return self._by_name.get((host.lower(), port))


# ---- wildcard listeners ------------------------------------------------------------------------
HostAddress = tuple[int, str]  # (interface index, address) as the host lists them


def is_wildcard(host: str) -> bool:
    return host in WILDCARDS


def serves(wildcard: str, address: str) -> bool:
    """Whether a wildcard listener on ``wildcard`` gets a listener for local ``address``: of
    its family, and not an IPv6 link-local address (a SIP URI cannot carry its zone), nor a
    multicast or unspecified one (a datagram to a broadcast address names no listener)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if (ip.version == 6) != (":" in wildcard) or ip.is_multicast or ip.is_unspecified:
        return False
    return not (ip.version == 6 and ip.is_link_local)


def wildcard_addresses(wildcard: str, found: Sequence[HostAddress]) -> list[str]:
    """The addresses a wildcard listener serves, in the host's order with loopback last: the
    first one is the listener's own (what it names when no request chose an address)."""
    mine = [address for _, address in found if serves(wildcard, address)]
    unique = list(dict.fromkeys(mine))
    return sorted(unique, key=lambda address: ipaddress.ip_address(address).is_loopback)


def expand_wildcard(
    listener: Listener, addresses: Sequence[str], next_index: int
) -> list[Listener]:
    """``listener`` (bound to a wildcard) as one listener per address: the first keeps its
    index, the others are numbered from ``next_index``."""
    if not addresses:
        raise ValueError(f"no {listener.host} address on this host to listen on")
    first = replace(listener, host=addresses[0])
    return [first] + [
        replace(listener, index=next_index + n, host=address)
        for n, address in enumerate(addresses[1:])
    ]


def same_interface(found: Sequence[HostAddress], family: int) -> frozenset[str]:
    """The addresses of ``family`` (4 or 6) when all of its addresses but loopback sit on one
    interface, else none. On such a host a request keeps the address it arrived on (or its
    Route named) for its next hop: the route's source address would be the interface's first
    address, the wrong one for three of four peers. With several interfaces, the route decides
    (``multihome.py``): the private side must see the private address."""
    mine = [(index, ipaddress.ip_address(address)) for index, address in found]
    mine = [(index, ip) for index, ip in mine if ip.version == family]
    interfaces = {index for index, ip in mine if not ip.is_loopback}
    if len(interfaces) > 1:
        return frozenset()
    return frozenset(str(ip) for _, ip in mine)
