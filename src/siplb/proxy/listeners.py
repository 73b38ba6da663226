"""The proxy's own addresses: where it listens, what it advertises, how it names itself."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from siplb.sip import SipUri

DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061}


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
            for host, port in listener.names():
                self._by_name.setdefault((host.lower(), port), listener)

    def listener_for(self, uri: SipUri) -> Listener | None:
        """The listener a SIP URI names, or ``None`` when it is not one of ours."""
        port = uri.port or DEFAULT_PORTS.get(uri.transport, 5060)
        host = uri.params.get("maddr") or uri.host
        return self._by_name.get((host.lower(), port))
