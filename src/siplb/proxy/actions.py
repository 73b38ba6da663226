"""What the proxy core asks its shell to do, and what it reports (pure values)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Target:
    """A next hop: transport and address (host may be a DNS name for the shell to resolve)."""

    transport: str  # "udp" | "tcp" | "tls"
    host: str
    port: int

    @property
    def reliable(self) -> bool:
        return self.transport != "udp"

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport}:{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Send:
    """Send ``data`` to ``target`` from local listener number ``listener``."""

    data: bytes
    target: Target
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


Event = MessageDropped | RequestRejected | FailedOver | CallsExpired
