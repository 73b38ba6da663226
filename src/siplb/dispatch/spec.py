"""Settings for destination sets and health checking (frozen; built by ``siplb.config``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType


class Algorithm(StrEnum):
    ROUND_ROBIN = "round-robin"
    WEIGHTED = "weighted"
    HASH = "hash"
    LEAST_CALLS = "least-calls"
    PRIORITY = "priority"
    RANDOM = "random"


class HashKey(StrEnum):
    CALL_ID = "call-id"
    FROM_URI = "from-uri"
    TO_URI = "to-uri"
    RURI_USER = "ruri-user"


Transport = str  # "udp" | "tcp" | "tls"


@dataclass(frozen=True, slots=True)
class DestinationSpec:
    """One backend (a PBX, a registrar) as configured.

    ``uri`` is the configured text (``sip:10.0.0.5:5060;transport=tcp``) and is the destination's
    identity everywhere (admin API, logs, metrics). ``host``/``port``/``transport`` are parsed
    from it; ``host`` is an IP literal without brackets.
    """

    uri: str
    host: str
    port: int
    transport: Transport = "udp"
    weight: int = 1
    priority: int = 0
    max_calls: int | None = None
    attrs: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)


@dataclass(frozen=True, slots=True)
class SetSpec:
    name: str
    destinations: tuple[DestinationSpec, ...]
    algorithm: Algorithm = Algorithm.ROUND_ROBIN
    hash_key: HashKey = HashKey.CALL_ID


@dataclass(frozen=True, slots=True)
class HealthSettings:
    """Active OPTIONS probing and passive detection (DESIGN.md section 4)."""

    interval: float = 1.0
    timeout: float = 0.5
    down_after: int = 2
    up_after: int = 2
    # Final responses to OPTIONS that count as alive: every final code not in ``dead_codes``.
    dead_codes: frozenset[int] = frozenset({408, *range(500, 600)})
    # Passive detection: failures seen on live traffic count like failed probes.
    passive: bool = True
