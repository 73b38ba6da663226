"""The validated settings the rest of siplb sees: frozen, slotted, already parsed (pure data).

Destination sets and health settings are the shared types of ``siplb.dispatch.spec``; the rest
is defined here. Every value has been checked by ``siplb.config``; nothing here validates.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from pathlib import Path
from typing import Literal

from siplb.dispatch.spec import HealthSettings, SetSpec, Transport
from siplb.media.settings import MediaSettings

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network
LogLevel = Literal["debug", "info", "warning", "error"]
LogFormat = Literal["human", "json"]

MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class HostPort:
    """A host (IP literal or DNS name, IPv6 without brackets) and an optional port."""

    host: str
    port: int | None = None

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port is None else f"{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """PEM files of a TLS listener; relative paths were resolved against the config's folder."""

    cert: Path
    key: Path
    ca: Path | None = None


@dataclass(frozen=True, slots=True)
class ListenerSettings:
    """One ``[[listen]]`` table: a socket to bind and what to put in Via/Record-Route."""

    transport: Transport
    host: str  # IP literal, IPv6 without brackets
    port: int  # 0 lets the system choose (tests)
    advertise: HostPort | None = None  # sent-by for Via and Record-Route instead of host:port
    recv_buffer: int = 4 * MIB  # SO_RCVBUF, UDP only
    tls: TlsFiles | None = None  # set exactly when transport == "tls"
    verify_client: bool = False  # TLS: require a client certificate signed by tls.ca
    name: str | None = None  # for [[acl]] listeners = [...]
    anycast: bool = False  # the same address on every node of the cluster ([cluster] needed)

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)


@dataclass(frozen=True, slots=True)
class RouteRule:
    """One ``[[routes]]`` table. Every match field given must match; None matches anything."""

    set_name: str
    methods: frozenset[str] | None = None  # case-sensitive method tokens
    ruri_user: re.Pattern[str] | None = None  # full match
    ruri_domain: re.Pattern[str] | None = None  # full match, case-insensitive
    sources: tuple[IPNetwork, ...] | None = None
    media: str | None = None  # "always" | "nat" | "never": overrides [media] anchor

    def matches(
        self, method: str, ruri_user: str | None, ruri_domain: str, source: IPAddress
    ) -> bool:
        if self.methods is not None and method not in self.methods:
            return False
        if self.ruri_user is not None and (
            ruri_user is None or self.ruri_user.fullmatch(ruri_user) is None
        ):
            return False
        if self.ruri_domain is not None and self.ruri_domain.fullmatch(ruri_domain) is None:
            return False
        return self.sources is None or _source_matches(self.sources, source)


def _source_matches(sources: tuple[IPNetwork, ...], source: IPAddress) -> bool:
    # A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d; match them as IPv4 too.
    mapped = source.ipv4_mapped if isinstance(source, IPv6Address) else None
    return any(source in net or (mapped is not None and mapped in net) for net in sources)


@dataclass(frozen=True, slots=True)
class ProxySettings:
    node_id: str = "n1"  # [a-z0-9]{1,16}, carried in Via branches
    failover_timeout: float = 2.0  # wait for a first response before the next destination
    max_attempts: int = 3
    failover_codes: frozenset[int] = frozenset({408, 500, 502, 503, 504})
    t1: float = 0.5  # RFC 3261 17.1.1.1
    t2: float = 4.0
    t4: float = 5.0
    max_call_age: float = 7200.0
    setup_timeout: float = 180.0  # longest a call may stay in setup
    retry_after: int = 5  # Retry-After seconds when every destination is full or down
    grace_period: float = 5.0  # SIGTERM drain time
    max_forwards: int = 70
    record_route: bool = True
    max_call_rate: float = 0.0  # new calls (initial INVITEs) admitted per second; 0: no limit
    overload_backlog: float = 0.25  # receive-buffer fill (0-1) from which new calls get 503; 0: off
    workers: int = 1  # processes sharing the UDP listeners (SO_REUSEPORT); 1: one process
    bye_unconfirmed: bool = False  # a 2xx never ACKed (64*T1): BYE to both sides, not only forget
    # the answer when no destination answered at all (RFC 3261 16.7 step 6: 408), never with
    # Retry-After: that would stop an upstream trunk sending any call (21.5.4)
    no_answer_status: int = 408


@dataclass(frozen=True, slots=True)
class RegistrarSettings:
    """``[registrar]``: the front end of a registrar set for phones behind NAT (RFC 3327, 5626)."""

    path: bool = True  # add our Path (with the received flow when needed) to REGISTERs
    require_supported: bool = False  # 421 to a phone whose REGISTER lacks Supported: path
    require_path: bool = True  # Require: path towards the registrar (420 if it lacks Path)
    contact_alias: bool = True  # ;alias= on Contacts of phones behind NAT (in-dialog way back)
    keepalive_interval: float = 25.0  # between NAT keepalives to one phone; 0 turns them off
    keepalive_misses: int = 3  # unanswered keepalives in a row before a phone is reported
    max_bindings: int = 200_000  # phones kept for keepalives


@dataclass(frozen=True, slots=True)
class TlsClientSettings:
    """``[tls]``: how we connect to TLS destinations (their certificates, our client one)."""

    ca: Path | None = None  # CA file or folder for destinations' certificates (None: system's)
    verify: bool = True  # check destinations' certificates (and their IP/host names)
    cert: Path | None = None  # our client certificate, for destinations that ask for one
    key: Path | None = None


@dataclass(frozen=True, slots=True)
class TcpSettings:
    """``[tcp]``: stream connections (TCP and TLS). Every count a peer can grow has a bound."""

    idle_timeout: float = 600.0
    connect_timeout: float = 2.0
    max_connections: int = 10000  # inbound (accepted) connections in total
    max_outbound: int = 10000  # connections we open, counted apart from inbound ones
    max_per_source: int = 100  # inbound connections from one IP address
    header_timeout: float = 10.0  # a started message's header block must be complete by then
    message_timeout: float = 30.0  # a started message must be complete (body too) by then
    max_buffered: int = 64 * MIB  # unframed bytes held over all connections
    tls_handshake_timeout: float = 5.0


Malformed = Literal["reply", "drop"]


@dataclass(frozen=True, slots=True)
class LimitsSettings:
    max_message_size: int = 65535
    max_headers: int = 256
    max_line_length: int = 8192
    malformed: Malformed = "reply"  # a request that does not parse: one stateless 400, or nothing
    max_transactions: int = 20000  # server transactions awaiting their final answer, in total
    max_transactions_per_source: int = 1000  # the same, from one source IP address


AclAction = Literal["allow", "deny"]
ScannerAction = Literal["drop", "reply"]


@dataclass(frozen=True, slots=True)
class AclRule:
    """One ``[[acl]]`` table: the first rule that matches a request decides (allow or deny).
    ``methods`` and ``listeners`` (listener names) None match anything."""

    action: AclAction
    sources: tuple[IPNetwork, ...]
    methods: frozenset[str] | None = None
    listeners: frozenset[str] | None = None


@dataclass(frozen=True, slots=True)
class RateSettings:
    """``[protection.rate]``: per-source budgets in the manner of Kamailio's pike module."""

    enabled: bool = True
    window: float = 1.0  # seconds per sampling window
    invite: int = 250  # initial INVITEs per source per window
    register: int = 250  # REGISTERs per source per window
    other: int = 1000  # every other request per source per window
    ban_time: float = 60.0  # first ban; each repeat offence doubles it (decaying score)
    max_ban_time: float = 3600.0
    score_half_life: float = 600.0  # an offender's score halves in this time
    max_sources: int = 100_000  # sources tracked at once (oldest forgotten first)


DEFAULT_SCANNER_AGENTS: tuple[str, ...] = (
    "friendly-scanner",
    "sipvicious",
    "sipcli",
    "vaxsipuseragent",
    "sip-scan",
    "sipsak",
    "iWar",
    "sundayddr",
    "pplsip",
    "smap",
    "sipptk",
    "VoIPSCAN",
    "SIPScan",
)


@dataclass(frozen=True, slots=True)
class ScannerSettings:
    """``[protection.scanners]``: scanner signatures, extension enumeration, REGISTER guessing."""

    enabled: bool = True
    action: ScannerAction = "drop"  # drop silently, or answer 403 once
    user_agents: tuple[str, ...] = DEFAULT_SCANNER_AGENTS  # case-insensitive substrings
    from_patterns: tuple[re.Pattern[str], ...] = ()  # searched in the From header's value
    ban_time: float = 3600.0
    max_failed_users: int = 20  # distinct To users refused (401/403/404/407/484) per window
    failed_users_window: float = 10.0
    max_register_failures: int = 10  # REGISTERs refused in a row from one source


@dataclass(frozen=True, slots=True)
class NftablesSettings:
    """``[protection.nftables]``: push bans into kernel sets with timeouts (needs CAP_NET_ADMIN)."""

    enabled: bool = False
    table: str = "siplb"  # an inet table
    set4: str = "banned4"
    set6: str = "banned6"
    create: bool = True  # create the table, the sets and a drop rule if they are missing


@dataclass(frozen=True, slots=True)
class ProtectionSettings:
    """``[protection]`` and ``[[acl]]``: the admission stage before any transaction."""

    trusted: tuple[IPNetwork, ...] = ()  # peers treated like destinations (exempt, may relay)
    acl: tuple[AclRule, ...] = ()
    blocklist: Path | None = None  # one network per line ("#" comments); read at start and reload
    blocked: tuple[IPNetwork, ...] = ()  # the blocklist file's networks, as last read
    rate: RateSettings = field(default_factory=RateSettings)
    scanners: ScannerSettings = field(default_factory=ScannerSettings)
    nftables: NftablesSettings = field(default_factory=NftablesSettings)
    passive_methods: frozenset[str] = frozenset({"INVITE"})  # whose timeouts count against health


@dataclass(frozen=True, slots=True)
class LogSettings:
    level: LogLevel = "info"
    format: LogFormat = "human"


@dataclass(frozen=True, slots=True)
class AdminSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    token: str | None = None
    token_file: Path | None = None
    enabled: bool = True  # False when the file has no [admin] table: no API at all
    hosts: tuple[str, ...] = ()  # accepted Host header names; () = the listen address, localhost

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)


@dataclass(frozen=True, slots=True)
class ClusterSettings:
    """``[cluster]``: this node as a member of a cluster sharing state through Redis.

    Exactly one of ``redis`` (a URL) and ``sentinels`` (with ``service``) is set. ``secret``
    authenticates node-to-node messages; it was read from ``secret_file`` when the file names
    one, and is never shown (``repr``)."""

    node_id: str  # [a-z0-9]{1,16}, carried in Via branches (the same as ProxySettings.node_id)
    peer: tuple[str, int]  # this node's unicast address for node-to-node messages
    secret: bytes = field(repr=False)
    name: str = "siplb"  # the cluster's name: its Redis keys start with "siplb:<name>:"
    redis: str | None = None  # redis:// or rediss:// URL
    sentinels: tuple[HostPort, ...] = ()  # Sentinel addresses, each with its port
    service: str | None = None  # the Sentinel service (master) name
    secret_file: Path | None = None
    heartbeat: float = 0.2  # seconds between a member's heartbeats (and its reads)
    dead_after: float = 0.7  # a member not heard for this long is gone
    lease_ttl: float = 3.0  # a capacity lease (and published counts) live this long unrefreshed

    @property
    def prefix(self) -> str:
        """The prefix of every Redis key of this cluster."""
        return f"siplb:{self.name}:"


@dataclass(frozen=True, slots=True)
class DnsSettings:
    """``[dns]``: how destination names are resolved (``siplb.io.resolver``)."""

    servers: tuple[tuple[str, int], ...] = ()  # (ip, port); (): the system's (resolv.conf)
    timeout: float = 2.0  # one lookup, every server tried
    ttl_floor: float = 5.0  # an answer is kept at least this long; a failed lookup retried after
    ttl_ceiling: float = 300.0  # and at most this long


@dataclass(frozen=True, slots=True)
class Config:
    """A whole validated config file."""

    listeners: tuple[ListenerSettings, ...]
    sets: tuple[SetSpec, ...]
    routes: tuple[RouteRule, ...]
    default_set: str
    health: HealthSettings = field(default_factory=HealthSettings)
    proxy: ProxySettings = field(default_factory=ProxySettings)
    tcp: TcpSettings = field(default_factory=TcpSettings)
    limits: LimitsSettings = field(default_factory=LimitsSettings)
    log: LogSettings = field(default_factory=LogSettings)
    admin: AdminSettings = field(default_factory=AdminSettings)
    registrar: RegistrarSettings = field(default_factory=RegistrarSettings)
    tls: TlsClientSettings = field(default_factory=TlsClientSettings)
    protection: ProtectionSettings = field(default_factory=ProtectionSettings)
    cluster: ClusterSettings | None = None  # None: no [cluster] table, siplb runs alone
    source: str = "<string>"  # the file's path, or what the caller named the text
    digest: str = ""  # sha256 hex of the file's bytes
    config_hash: str = ""  # what nodes compare to show config skew (siplb.config.hashing)
    readiness: NodeHealthSettings = field(default_factory=lambda: NodeHealthSettings())
    announce: AnnounceSettings | None = None  # None: no [announce] table
    dns: DnsSettings = field(default_factory=DnsSettings)
    capture: CaptureSettings | None = None  # None: no [capture] table, nothing is captured
    media: MediaSettings | None = None  # None: no [media] table, no call is anchored

    @property
    def node_id(self) -> str:
        """This node's id, carried in Via branches: ``[cluster] node_id`` or ``[proxy] node_id``
        (the config checked that they agree; ``proxy.node_id`` holds the same value)."""
        return self.proxy.node_id if self.cluster is None else self.cluster.node_id

    def set_named(self, name: str) -> SetSpec:
        """The set called ``name``; raises KeyError if there is none."""
        for spec in self.sets:
            if spec.name == name:
                return spec
        raise KeyError(name)


# ---- the node's own health, and the routes announced while it is healthy ---------------------
SetsPolicy = Literal["any", "every"] | tuple[str, ...]


@dataclass(frozen=True, slots=True)
class NodeHealthSettings:
    """``[health] sets`` and ``withdraw_delay``: when the whole node counts as healthy
    (``siplb.readiness``), and how long SIGTERM keeps it serving while unhealthy.

    ``sets``: ``"any"`` (some destination up in some set), ``"every"`` (one up in every set),
    or the names of the sets that each need one up."""

    sets: SetsPolicy = "any"
    withdraw_delay: float = 1.0  # seconds between SIGTERM's unhealthy and the drain of calls


@dataclass(frozen=True, slots=True)
class AnnounceSettings:
    """``[announce]``: the prefixes ``siplb announce`` has ExaBGP announce while the node is
    healthy, and how it checks (``GET /api/health`` every ``interval``, ``timeout`` each)."""

    prefixes: tuple[str, ...]  # CIDR, normalised ("10.99.0.1/32")
    next_hop: str = "self"  # "self" or an IP address
    interval: float = 0.2
    timeout: float = 0.5
    med: int | None = None
    communities: tuple[str, ...] = ()  # "65000:1" each


# ---- SIP capture to a HEP collector (Homer) ---------------------------------------------------
CaptureDirection = Literal["received", "sent"]


@dataclass(frozen=True, slots=True)
class CaptureSettings:
    """``[capture]``: every SIP message received and sent, as HEP version 3 to a collector
    (``siplb.capture``, ``siplb.io.capture``)."""

    host: str  # the collector's IP address
    port: int
    transport: Literal["udp", "tcp"] = "udp"
    node_id: int = 0  # the HEP capture agent id
    node_name: str | None = None
    password: str | None = field(default=None, repr=False)  # the collector's auth key
    what: frozenset[CaptureDirection] = frozenset({"received", "sent"})
    methods: frozenset[str] | None = None  # None: every method (by CSeq method)
    queue: int = 10000  # messages waiting to be sent, at most; past that they are dropped
