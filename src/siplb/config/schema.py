"""The config file's schema: pydantic models at the edge, one per TOML table.

Every model forbids unknown keys and is strict (TOML already gives typed values, so ``"5"`` is
not a number and ``true`` is not 1); integers are accepted where seconds are expected. Text
values are parsed here (``values.py``) so their problems carry the path of their key.
Checks that span several keys or tables live in ``build.py``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, Strict

from siplb.dispatch.spec import Algorithm, HashKey
from siplb.settings import MIB, HostPort, IPNetwork

from .values import (
    DestinationUri,
    NamedUri,
    check_token,
    compile_regex,
    parse_advertise,
    parse_bind_address,
    parse_codes,
    parse_destination_uri,
    parse_dns_server,
    parse_host_name,
    parse_methods,
    parse_network,
    parse_peer_address,
    parse_redis_url,
    parse_service_address,
    parse_srv_name,
)

T = TypeVar("T")


def _string(parse: Callable[[str], T]) -> Callable[[Any], T]:
    def validate(value: Any) -> T:
        if not isinstance(value, str):
            raise ValueError("expected a string")
        return parse(value)

    return validate


def _set_name(value: str) -> str:
    return check_token(
        value, "set name", r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", "use up to 64 of A-Z a-z 0-9 _ . -"
    )


NODE_ID = r"[a-z0-9]{1,16}"


def _node_id(value: str) -> str:
    return check_token(value, "node_id", NODE_ID, "use 1 to 16 of a-z 0-9")


def _listener_name(value: str) -> str:
    return check_token(
        value, "listener name", r"[A-Za-z0-9_.-]{1,32}", "use 1 to 32 of A-Z a-z 0-9 _ . -"
    )


def _nft_name(value: str) -> str:
    return check_token(
        value, "nftables name", r"[A-Za-z0-9_]{1,32}", "use 1 to 32 of A-Z a-z 0-9 _"
    )


def _cluster_name(value: str) -> str:
    return check_token(
        value, "cluster name", r"[A-Za-z0-9_.-]{1,32}", "use 1 to 32 of A-Z a-z 0-9 _ . -"
    )


def _service(value: str) -> str:
    return check_token(
        value, "Sentinel service name", r"[A-Za-z0-9_.-]{1,64}", "use 1 to 64 of A-Z a-z 0-9 _ . -"
    )


def _nonempty(value: str) -> str:
    if not value:
        raise ValueError("must not be empty")
    return value


BindAddress = Annotated[tuple[str, int], PlainValidator(_string(parse_bind_address))]
Advertise = Annotated[HostPort, PlainValidator(_string(parse_advertise))]
Uri = Annotated[DestinationUri | NamedUri, PlainValidator(_string(parse_destination_uri))]
SrvName = Annotated[str, PlainValidator(_string(parse_srv_name))]
DnsServer = Annotated[tuple[str, int], PlainValidator(_string(parse_dns_server))]
Network = Annotated[IPNetwork, PlainValidator(_string(parse_network))]
Methods = Annotated[frozenset[str], PlainValidator(parse_methods)]
Regex = Annotated[re.Pattern[str], PlainValidator(compile_regex)]
CaseFreeRegex = Annotated[
    re.Pattern[str], PlainValidator(lambda value: compile_regex(value, re.IGNORECASE))
]
SetName = Annotated[str, PlainValidator(_string(_set_name))]
ListenerName = Annotated[str, PlainValidator(_string(_listener_name))]
NftName = Annotated[str, PlainValidator(_string(_nft_name))]
HostName = Annotated[str, PlainValidator(_string(parse_host_name))]
NonEmpty = Annotated[str, PlainValidator(_string(_nonempty))]
NodeId = Annotated[str, PlainValidator(_string(_node_id))]
ClusterName = Annotated[str, PlainValidator(_string(_cluster_name))]
ServiceName = Annotated[str, PlainValidator(_string(_service))]
RedisUrl = Annotated[str, PlainValidator(_string(parse_redis_url))]
ServiceAddress = Annotated[HostPort, PlainValidator(_string(parse_service_address))]
PeerAddress = Annotated[tuple[str, int], PlainValidator(_string(parse_peer_address))]
DeadCodes = Annotated[frozenset[int], PlainValidator(lambda value: parse_codes(value, 200, 699))]
FailoverCodes = Annotated[
    frozenset[int], PlainValidator(lambda value: parse_codes(value, 300, 699))
]
Seconds = Annotated[float, Field(gt=0)]
Count = Annotated[int, Field(ge=1)]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)


class ListenModel(Model):
    name: ListenerName | None = None
    transport: Literal["udp", "tcp", "tls"] = "udp"
    address: BindAddress
    advertise: Advertise | None = None
    recv_buffer: int = Field(4 * MIB, ge=65536)
    cert: str | None = None
    key: str | None = None
    ca: str | None = None
    verify_client: bool = False
    anycast: bool = False


class DestinationModel(Model):
    uri: Uri
    weight: Count = 1
    priority: int = Field(0, ge=0)
    max_calls: Count | None = None
    attrs: dict[str, str] = {}


class SetModel(Model):
    name: SetName
    algorithm: Annotated[Algorithm, Strict(False)] = Algorithm.ROUND_ROBIN
    hash_key: Annotated[HashKey, Strict(False)] = HashKey.CALL_ID
    destinations: list[dict[str, Any]] = []  # each one a DestinationModel, checked on its own
    srv: SrvName | None = None  # fill the set from this SRV name (build.py: this or destinations)
    health: dict[str, Any] | None = None  # a HealthModel overriding [health] (build.py)


class RouteModel(Model):
    set: str
    method: Methods | None = None
    ruri_user: Regex | None = None
    ruri_domain: CaseFreeRegex | None = None
    source: list[Network] | None = None
    media: Literal["always", "nat", "never"] | None = None  # overrides [media] anchor


class HealthModel(Model):
    interval: Seconds = 1.0
    timeout: Seconds = 0.5
    down_after: Count = 2
    up_after: Count = 2
    dead_codes: list[DeadCodes] | None = None  # None: HealthSettings' default
    passive: bool = True
    probe_first: bool = True


class ProxyModel(Model):
    node_id: NodeId = "n1"
    failover_timeout: Seconds = 2.0
    max_attempts: Count = 3
    failover_codes: list[FailoverCodes] | None = None  # None: ProxySettings' default
    t1: Seconds = 0.5
    t2: Seconds = 4.0
    t4: Seconds = 5.0
    max_call_age: Seconds = 7200.0
    setup_timeout: Seconds = 180.0
    retry_after: int = Field(5, ge=0)
    grace_period: float = Field(5.0, ge=0)
    max_forwards: int = Field(70, ge=1, le=255)
    record_route: bool = True
    max_call_rate: float = Field(0.0, ge=0)
    overload_backlog: float = Field(0.25, ge=0, le=1)
    workers: int = Field(1, ge=1, le=64)
    bye_unconfirmed: bool = False
    no_answer_status: int = Field(408, ge=400, le=699)  # none answered (16.7)


class TcpModel(Model):
    idle_timeout: Seconds = 600.0
    connect_timeout: Seconds = 2.0
    max_connections: Count = 10000
    max_outbound: Count = 10000
    max_per_source: Count = 100
    header_timeout: Seconds = 10.0
    message_timeout: Seconds = 30.0  # at least header_timeout (build.py)
    max_buffered: int = Field(64 * MIB, ge=MIB)
    tls_handshake_timeout: Seconds = 5.0


class RegistrarModel(Model):
    path: bool = True
    require_supported: bool = False
    require_path: bool = True
    contact_alias: bool = True
    keepalive_interval: float = Field(25.0, ge=0)
    keepalive_misses: Count = 3
    max_bindings: Count = 200_000


class TlsModel(Model):
    ca: str | None = None
    verify: bool = True
    cert: str | None = None
    key: str | None = None


class LimitsModel(Model):
    max_message_size: int = Field(65535, ge=1024, le=16 * MIB)
    max_headers: int = Field(256, ge=8)
    max_line_length: int = Field(8192, ge=256)
    malformed: Literal["reply", "drop"] = "reply"
    max_transactions: Count = 20000
    max_transactions_per_source: Count = 1000  # at most max_transactions (build.py)


class LogModel(Model):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["human", "json"] = "human"


class AdminModel(Model):
    listen: BindAddress = ("127.0.0.1", 8080)
    token: str | None = Field(None, min_length=1)
    token_file: str | None = Field(None, min_length=1)
    hosts: list[HostName] | None = None  # None: AdminSettings' default


class AclModel(Model):
    action: Literal["allow", "deny"]
    source: list[Network]
    method: Methods | None = None
    listen: list[ListenerName] | None = None


class ProtectionModel(Model):
    """``[protection]``; its sub-tables are validated one by one, like the top level's."""

    trusted: list[Network] = []
    blocklist: str | None = Field(None, min_length=1)
    passive_methods: Methods = frozenset({"INVITE"})
    rate: dict[str, Any] = {}
    scanners: dict[str, Any] = {}
    nftables: dict[str, Any] = {}


class RateModel(Model):
    enabled: bool = True
    window: Seconds = 1.0
    invite: Count = 250
    register_: Count = Field(250, alias="register")  # "register" would shadow BaseModel's
    other: Count = 1000
    ban_time: Seconds = 60.0
    max_ban_time: Seconds = 3600.0  # at least ban_time (protection.py)
    score_half_life: Seconds = 600.0
    max_sources: Count = 100_000


class ScannersModel(Model):
    enabled: bool = True
    action: Literal["drop", "reply"] = "drop"
    user_agents: list[NonEmpty] | None = None  # None: the default signatures
    extra_user_agents: list[NonEmpty] = []  # added to user_agents (or to the defaults)
    from_patterns: list[CaseFreeRegex] = []
    ban_time: Seconds = 3600.0
    max_failed_users: Count = 20
    failed_users_window: Seconds = 10.0
    max_register_failures: Count = 10


class NftablesModel(Model):
    enabled: bool = False
    table: NftName = "siplb"
    set4: NftName = "banned4"
    set6: NftName = "banned6"
    create: bool = True


class ClusterModel(Model):
    node_id: NodeId | None = None  # None: [proxy] node_id (cluster.py)
    name: ClusterName = "siplb"
    redis: RedisUrl | None = None  # this or sentinels + service (cluster.py)
    sentinels: list[ServiceAddress] | None = None
    service: ServiceName | None = None
    peer: PeerAddress | None = None  # required (cluster.py), so a broken one hides no other problem
    secret: str | None = None  # this or secret_file, at least 32 characters (cluster.py)
    secret_file: str | None = Field(None, min_length=1)
    heartbeat: Seconds = 0.2
    dead_after: Seconds = 0.7  # more than heartbeat (cluster.py)
    lease_ttl: Seconds = 3.0  # at least dead_after (cluster.py)


class DnsModel(Model):
    servers: list[DnsServer] | None = None  # None: the system's (resolv.conf)
    timeout: Seconds = 2.0
    ttl_floor: Seconds = 5.0
    ttl_ceiling: Seconds = 300.0  # at least ttl_floor (build.py)


class DocumentModel(Model):
    """The top level. Tables are validated one by one (so a broken table does not hide the
    problems of the others, nor the checks across tables): here they are only shapes."""

    listen: list[dict[str, Any]] = []
    sets: list[dict[str, Any]] = []
    routes: list[dict[str, Any]] = []
    default_set: str | None = None
    health: dict[str, Any] = {}
    proxy: dict[str, Any] = {}
    tcp: dict[str, Any] = {}
    limits: dict[str, Any] = {}
    log: dict[str, Any] = {}
    admin: dict[str, Any] | None = None  # None: no [admin] table, so no admin API
    registrar: dict[str, Any] = {}
    tls: dict[str, Any] = {}
    protection: dict[str, Any] = {}
    acl: list[dict[str, Any]] = []
    cluster: dict[str, Any] | None = None  # None: no [cluster] table, siplb runs alone
    announce: dict[str, Any] | None = None  # None: no [announce] table (config/announce.py)
    capture: dict[str, Any] | None = None  # None: no [capture] table (config/capture.py)
    media: dict[str, Any] | None = None  # None: no [media] table, no anchoring (config/media.py)
    dns: dict[str, Any] = {}
