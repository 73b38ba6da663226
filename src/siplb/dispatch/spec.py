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
    name: str | None = None  # resolved from DNS: the URI or SRV name as written (``NameSpec``)

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)


@dataclass(frozen=True, slots=True)
class Query:
    """What is looked up in DNS for a ``NameSpec`` (RFC 3263 4.1, 4.2); two specs with the same
    query share one lookup and one cached answer."""

    name: str  # lower case, no trailing dot
    srv: bool = False  # the name is an SRV owner name (``[[sets]] srv``)
    port: int | None = None  # given in the URI: A/AAAA only
    transport: Transport | None = None  # given in the URI (or by the SRV name); None: RFC 3263
    secure: bool = False  # sips: TLS only

    @property
    def label(self) -> str:
        """How logs, the API and metrics name the lookup: the SRV name, or a URI of the host
        with the port and transport it fixes (``sip:pbx.example.com:5070;transport=tcp``)."""
        if self.srv:
            return self.name
        port = "" if self.port is None else f":{self.port}"
        transport = "" if self.transport is None or self.secure else f";transport={self.transport}"
        return f"{'sips' if self.secure else 'sip'}:{self.name}{port}{transport}"


@dataclass(frozen=True, slots=True)
class NameSpec:
    """A destination named by DNS (``sip:pbx.example.com``) or a set's SRV name (``srv =``): it
    stands for every address its lookup answers (``siplb.dispatch.names``)."""

    text: str  # as written: the URI, or the SRV name
    query: Query
    weight: int = 1
    priority: int = 0
    max_calls: int | None = None
    attrs: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, slots=True)
class SetSpec:
    name: str
    destinations: tuple[DestinationSpec, ...]
    algorithm: Algorithm = Algorithm.ROUND_ROBIN
    hash_key: HashKey = HashKey.CALL_ID
    names: tuple[NameSpec, ...] = ()  # DNS names: their addresses join ``destinations``
    # ``[[sets]] health``: this set's probes and thresholds (None: ``[health]``'s). A URI that
    # two sets list is checked with the settings of the first set that lists it.
    health: HealthSettings | None = None


@dataclass(frozen=True, slots=True)
class HealthSettings:
    """Active OPTIONS probing and passive detection (docs/design.md section 4)."""

    interval: float = 1.0
    timeout: float = 0.5
    down_after: int = 2
    up_after: int = 2
    # Final responses to OPTIONS that count as alive: every final code not in ``dead_codes``.
    dead_codes: frozenset[int] = frozenset({408, *range(500, 600)})
    # Passive detection: failures seen on live traffic count like failed probes.
    passive: bool = True
    # A new destination takes calls only after a probe showed it alive (``State.PROBING``).
    probe_first: bool = True
