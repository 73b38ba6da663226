"""The bond's own TOML file (``siplb bond client -c FILE``, ``siplb bond server -c FILE``): one
file per end, validated into frozen settings, or one ``ConfigError`` listing every problem with
its path.

    # client end                               # server end
    [client]                                   [server]
    id = 1                                     listen = ["203.0.113.1:4600"]
    key_file = "site1.key"                     [[clients]]
    server = ["203.0.113.1:4600"]              id = 1
    [[links]]                                  key_file = "site1.key"
    source = "192.0.2.10"                      [[flows]]
    interface = "ppp0"                         id = 1
    weight = 2                                 mode = "redundant"
    [[flows]]                                  target = "10.0.0.5"
    id = 1                                     ports = 5060
    mode = "redundant"
    ports = 5060

A flow's ``ports`` is a port, a list of ports or a range ``"10000-10099"``; the n-th local port
at the client is carried to the n-th target port at the server. A flow's ``reorder`` (seconds,
0 by default) is how long the receiving end holds a datagram that arrived ahead of a gap
(``siplb.bond.reorder``); each end applies its own file's value to what it receives. Keys are 32 bytes written as 64
hexadecimal digits, in the file (``key``) or in a file of their own (``key_file``, relative to the
config's folder); ``siplb bond key`` makes one.
"""

from __future__ import annotations

import ipaddress
import tomllib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, PlainValidator

from siplb.bond.seal import KEY_SIZE
from siplb.bond.settings import FlowPolicy, HealthSettings, Mode

from .errors import ConfigError, Problem
from .files import find_file
from .problems import Loc, Problems
from .values import parse_bind_address, parse_peer_address

T = TypeVar("T")
MAX_PORTS = 4096
DEFAULT_PORT = 4600


def _string(parse: Callable[[str], T]) -> Callable[[Any], T]:
    def validate(value: Any) -> T:
        if not isinstance(value, str):
            raise ValueError("expected a string")
        return parse(value)

    return validate


def parse_ports(value: Any) -> tuple[int, ...]:
    """``5060``, ``[5060, 5062]`` or ``"10000-10099"`` (both ends included)."""
    if isinstance(value, str):
        low, dash, high = value.partition("-")
        if not (dash and low.strip().isdigit() and high.strip().isdigit()):
            raise ValueError(
                f"expected a port, a list of ports or a range like '10000-10099' (got {value!r})"
            )
        ports = list(range(int(low), int(high) + 1))
        if not ports:
            raise ValueError(f"empty range {value!r}")
    elif isinstance(value, int) and not isinstance(value, bool):
        ports = [value]
    elif isinstance(value, list) and value and all(type(p) is int for p in value):
        ports = list(value)
    else:
        raise ValueError("expected a port, a list of ports or a range like '10000-10099'")
    if not all(1 <= port <= 65535 for port in ports):
        raise ValueError("ports are 1 to 65535")
    if len(ports) > MAX_PORTS or len(set(ports)) != len(ports):
        raise ValueError(f"at most {MAX_PORTS} ports, each once")
    return tuple(ports)


def parse_ip(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise ValueError(f"{text!r} is not an IP address") from None


def parse_interface(text: str) -> str:
    if not 0 < len(text) < 16 or "/" in text or text.strip() != text:
        raise ValueError(f"{text!r} is not an interface name")
    return text


def parse_server_address(text: str) -> tuple[str, int]:
    if text.count(":") == 0 or (text.startswith("[") and text.endswith("]")):
        text = f"{text}:{DEFAULT_PORT}"
    return parse_peer_address(text)


Ports = Annotated[tuple[int, ...], PlainValidator(parse_ports)]
Ip = Annotated[str, PlainValidator(_string(parse_ip))]
Interface = Annotated[str, PlainValidator(_string(parse_interface))]
BindAddress = Annotated[tuple[str, int], PlainValidator(_string(parse_bind_address))]
ServerAddress = Annotated[tuple[str, int], PlainValidator(_string(parse_server_address))]
FlowId = Annotated[int, Field(ge=1, le=255)]
ModeName = Literal["balanced", "redundant", "parity"]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)


class HealthModel(Model):
    beat_interval: float = Field(0.05, ge=0.005, le=10)
    missed_beats: int = Field(3, ge=1, le=100)
    rtt_multiple: float = Field(4.0, ge=1, le=100)
    measure_interval: float = Field(0.5, ge=0.01, le=60)


class KeyedModel(Model):
    id: int = Field(ge=1, le=2**32 - 1)
    key: str | None = None
    key_file: str | None = None


class ClientModel(KeyedModel):
    server: list[ServerAddress] = Field(min_length=1)
    status: BindAddress = ("127.0.0.1", 4601)


class LinkModel(Model):
    name: str | None = None
    id: int | None = Field(None, ge=1, le=255)
    source: Ip | None = None
    interface: Interface | None = None
    weight: int = Field(1, ge=1, le=1000)
    server: ServerAddress | None = None


class FlowModel(Model):
    name: str | None = None
    id: FlowId
    mode: ModeName = "balanced"
    ports: Ports
    parity_group: int = Field(3, ge=1, le=16)
    parity_wait: float = Field(0.1, gt=0, le=5)
    reorder: float = Field(0.0, ge=0, le=0.5)  # seconds; 0 delivers as datagrams arrive


class ClientFlowModel(FlowModel):
    listen: Ip = "127.0.0.1"


class ServerFlowModel(FlowModel):
    target: Ip


class ServerModel(Model):
    listen: list[BindAddress] = Field(min_length=1)
    status: BindAddress = ("127.0.0.1", 4611)


class ServerClientModel(KeyedModel):
    name: str | None = None


class ClientDocument(Model):
    client: dict[str, Any]
    links: list[dict[str, Any]] = Field(min_length=1)
    flows: list[dict[str, Any]] = Field(min_length=1)
    health: dict[str, Any] = {}


class ServerDocument(Model):
    server: dict[str, Any]
    clients: list[dict[str, Any]] = Field(min_length=1)
    flows: list[dict[str, Any]] = Field(min_length=1)
    health: dict[str, Any] = {}


@dataclass(frozen=True, slots=True)
class BondLink:
    id: int
    name: str
    source: str | None
    interface: str | None
    weight: int
    server: tuple[str, int]


@dataclass(frozen=True, slots=True)
class BondFlow:
    id: int
    name: str
    policy: FlowPolicy
    host: str  # the client's listen address, or the server's target
    ports: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class BondClientConfig:
    client: int
    key: bytes
    links: tuple[BondLink, ...]
    flows: tuple[BondFlow, ...]
    health: HealthSettings
    status: tuple[str, int]


@dataclass(frozen=True, slots=True)
class BondServerConfig:
    listen: tuple[tuple[str, int], ...]
    keys: dict[int, bytes]
    names: dict[int, str]
    flows: tuple[BondFlow, ...]
    health: HealthSettings
    status: tuple[str, int]


def read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text("utf-8"))
    except OSError as exc:
        raise ConfigError([Problem("", f"cannot read {path}: {exc.strerror}")], str(path)) from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError([Problem("", f"not a TOML file: {exc}")], str(path)) from None


def load_client(path: Path) -> BondClientConfig:
    return build_client(read_toml(path), source=str(path), base_dir=path.parent)


def load_server(path: Path) -> BondServerConfig:
    return build_server(read_toml(path), source=str(path), base_dir=path.parent)


def build_client(
    raw: dict[str, Any], *, source: str = "<string>", base_dir: Path | None = None
) -> BondClientConfig:
    problems = Problems()
    doc = problems.validate(ClientDocument, raw, ())
    if doc is None:
        raise ConfigError(problems.items, source)
    client = problems.validate(ClientModel, doc.client, ("client",))
    one = _one_key(doc.client, ("client",), problems)
    key = _key(client, ("client",), problems, base_dir) if client and one else None
    links = [problems.validate(LinkModel, item, ("links", i)) for i, item in enumerate(doc.links)]
    flows = _flows(ClientFlowModel, doc.flows, problems)
    health = problems.validate(HealthModel, doc.health, ("health",))
    found = [link for link in links if link is not None]
    for i, link in enumerate(links):
        if link is not None and link.source is None and link.interface is None:
            problems.add(("links", i), "a link needs a source address, an interface or both")
    ids = [link.id or i + 1 for i, link in enumerate(links) if link is not None]
    _unique(ids, "links", "id", problems)
    if problems.items or client is None or key is None or health is None:
        raise ConfigError(problems.items, source)
    servers = client.server
    return BondClientConfig(
        client=client.id,
        key=key,
        links=tuple(
            BondLink(
                link_id,
                link.name or f"link{link_id}",
                link.source,
                link.interface,
                link.weight,
                link.server or servers[i % len(servers)],
            )
            for i, (link_id, link) in enumerate(zip(ids, found, strict=True))
        ),
        flows=tuple(
            _flow(flow, flow.listen) for flow in flows if isinstance(flow, ClientFlowModel)
        ),
        health=_health(health),
        status=client.status,
    )


def build_server(
    raw: dict[str, Any], *, source: str = "<string>", base_dir: Path | None = None
) -> BondServerConfig:
    problems = Problems()
    doc = problems.validate(ServerDocument, raw, ())
    if doc is None:
        raise ConfigError(problems.items, source)
    server = problems.validate(ServerModel, doc.server, ("server",))
    keys: dict[int, bytes] = {}
    names: dict[int, str] = {}
    for i, item in enumerate(doc.clients):
        client = problems.validate(ServerClientModel, item, ("clients", i))
        one = _one_key(item, ("clients", i), problems)
        key = _key(client, ("clients", i), problems, base_dir) if client and one else None
        if client is None or key is None:
            continue
        if client.id in keys:
            problems.add(("clients", i, "id"), f"client {client.id} is listed twice")
        keys[client.id] = key
        names[client.id] = client.name or f"client{client.id}"
    flows = _flows(ServerFlowModel, doc.flows, problems)
    health = problems.validate(HealthModel, doc.health, ("health",))
    if problems.items or server is None or health is None:
        raise ConfigError(problems.items, source)
    return BondServerConfig(
        listen=tuple(server.listen),
        keys=keys,
        names=names,
        flows=tuple(
            _flow(flow, flow.target) for flow in flows if isinstance(flow, ServerFlowModel)
        ),
        health=_health(health),
        status=server.status,
    )


def _flows(
    model: type[FlowModel], items: Sequence[dict[str, Any]], problems: Problems
) -> list[FlowModel]:
    flows = [problems.validate(model, item, ("flows", i)) for i, item in enumerate(items)]
    _unique([flow.id for flow in flows if flow is not None], "flows", "id", problems)
    return [flow for flow in flows if flow is not None]


def _flow(flow: FlowModel, host: str) -> BondFlow:
    policy = FlowPolicy(Mode(flow.mode), flow.parity_group, flow.parity_wait, flow.reorder)
    return BondFlow(flow.id, flow.name or f"flow{flow.id}", policy, host, flow.ports)


def _health(model: HealthModel) -> HealthSettings:
    return HealthSettings(
        beat_interval=model.beat_interval,
        missed_beats=model.missed_beats,
        rtt_multiple=model.rtt_multiple,
        measure_interval=model.measure_interval,
    )


def _unique(values: list[int], table: str, key: str, problems: Problems) -> None:
    for value, count in Counter(values).items():
        if count > 1:
            problems.add((table,), f"{key} {value} is used {count} times")


def _one_key(table: Any, loc: Loc, problems: Problems) -> bool:
    """Exactly one of ``key`` and ``key_file`` (checked on the raw table, so that it is reported
    even when other keys of the table are wrong)."""
    if isinstance(table, dict) and ("key" in table) == ("key_file" in table):
        problems.add(loc, "give exactly one of key and key_file")
        return False
    return True


def _key(model: KeyedModel, loc: Loc, problems: Problems, base_dir: Path | None) -> bytes | None:
    if model.key is not None:
        text, where = model.key, (*loc, "key")
    else:
        path = find_file(model.key_file, (*loc, "key_file"), problems, base_dir)
        if path is None or not path.is_file():
            return None
        text, where = path.read_text("utf-8", errors="replace"), (*loc, "key_file")
    try:
        key = bytes.fromhex(text.strip())
    except ValueError:
        key = b""
    if len(key) != KEY_SIZE:
        problems.add(where, f"a key is {KEY_SIZE} bytes written as {2 * KEY_SIZE} hex digits")
        return None
    return key
