"""What the proxy core asks its shell to do, and what it reports (pure values)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from siplb.cluster import Member


class Target:
    """A next hop: transport and address (host may be a DNS name for the shell to resolve).

    ``flow`` marks a phone's own flow (RFC 5626): over TCP/TLS the shell sends on the phone's
    existing connection and never opens one (a Target compares equal with or without it).

    A plain class and not a dataclass, like ``Send``: several are made per message, and a
    compiled build constructs, compares and hashes a plain class natively. Read-only (``Final``).
    """

    __slots__ = ("flow", "host", "port", "transport")
    __match_args__ = ("transport", "host", "port")

    def __init__(self, transport: str, host: str, port: int, flow: bool = False) -> None:
        self.transport: Final = transport  # "udp" | "tcp" | "tls"
        self.host: Final = host
        self.port: Final = port
        self.flow: Final = flow

    @property
    def reliable(self) -> bool:
        return self.transport != "udp"

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Target):
            return NotImplemented
        return (
            self.port == other.port
            and self.host == other.host
            and self.transport == other.transport
        )

    def __hash__(self) -> int:
        return hash((self.transport, self.host, self.port))

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport}:{host}:{self.port}"

    def __repr__(self) -> str:
        flow = ", flow=True" if self.flow else ""
        return f"Target({self.transport!r}, {self.host!r}, {self.port!r}{flow})"


class Send:
    """Send ``data`` to ``target`` from local listener number ``listener``."""

    __slots__ = ("data", "listener", "target")
    __match_args__ = ("data", "target", "listener")

    def __init__(self, data: bytes, target: Target, listener: int) -> None:
        self.data: Final = data
        self.target: Final = target
        self.listener: Final = listener

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Send):
            return NotImplemented
        return (self.data, self.target, self.listener) == (
            other.data,
            other.target,
            other.listener,
        )

    def __hash__(self) -> int:
        return hash((self.data, self.target, self.listener))

    def __repr__(self) -> str:
        return f"Send({self.data!r}, {self.target!r}, {self.listener})"


@dataclass(frozen=True, slots=True)
class HandOver:
    """Hand a datagram to the member that owns it (docs/design.md 4, one ownership model): the
    admission stage found it owned elsewhere and did nothing else with it. Drained by the shell
    from ``Proxy.handovers``, like ``Send`` from ``Proxy.out``."""

    member: Member
    data: bytes
    source: Target
    listener: int


# ---- events (past tense), for logs and metrics ----------------------------------------------


@dataclass(frozen=True, slots=True)
class MessageDropped:
    reason: str
    source: Target


@dataclass(frozen=True, slots=True)
class RequestRejected:
    """We answered a request ourselves with an error status."""

    status: int
    reason: str
    method: str
    source: Target


@dataclass(frozen=True, slots=True)
class FailedOver:
    """A request left a destination for the next one inside the same transaction."""

    call_id: str
    set_name: str
    uri: str
    cause: str


@dataclass(frozen=True, slots=True)
class CallsExpired:
    count: int


@dataclass(frozen=True, slots=True)
class PhoneUnreachable:
    """A phone registered through us stopped answering keepalives (or lost its connection)."""

    aor: str
    flow: Target
    cause: str


@dataclass(frozen=True, slots=True)
class PhoneReachable:
    """A phone reported unreachable answered again."""

    aor: str
    flow: Target


@dataclass(frozen=True, slots=True)
class RegistrarLacksPath:
    """A registrar refused or ignored our Path (RFC 3327): phones behind it are unreachable."""

    registrar: str
    cause: str


@dataclass(frozen=True, slots=True)
class OverloadChanged:
    """The proxy started (``active``) or stopped refusing new calls because it is behind."""

    active: bool
    backlog: float  # the receive-buffer fill (0-1) that made the change


@dataclass(frozen=True, slots=True)
class PassiveObserved:
    """Live traffic showed ``uri`` alive (``ok``) or failing, and another member decides its
    health: the shell routes this to that member, whose core takes it in ``Proxy.passive``."""

    uri: str
    ok: bool
    cause: str


Event = (
    MessageDropped
    | RequestRejected
    | FailedOver
    | CallsExpired
    | PhoneUnreachable
    | PhoneReachable
    | RegistrarLacksPath
    | OverloadChanged
    | PassiveObserved
)
