"""From a parsed TOML document to ``Config``: validate each table, then check across tables.

Each table is validated on its own, so one broken table neither hides the problems of the
others nor stops the checks across tables (duplicate names, unknown sets); a check whose input
is itself broken is skipped rather than reported twice.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

from pydantic import ValidationError

from siplb.dispatch.names import srv_transport
from siplb.dispatch.spec import (
    Algorithm,
    DestinationSpec,
    HealthSettings,
    NameSpec,
    Query,
    SetSpec,
)
from siplb.settings import (
    AdminSettings,
    Config,
    DnsSettings,
    HostPort,
    LimitsSettings,
    ListenerSettings,
    LogSettings,
    ProxySettings,
    RegistrarSettings,
    RouteRule,
    TcpSettings,
    TlsClientSettings,
    TlsFiles,
)

from .announce import build_announce, build_node_health, split_health
from .capture import build_capture
from .cluster import build_cluster
from .errors import ConfigError
from .files import find_file
from .hashing import config_hash
from .media import build_media
from .problems import Loc, Problems
from .protection import build_protection
from .schema import (
    AdminModel,
    DestinationModel,
    DnsModel,
    DocumentModel,
    HealthModel,
    LimitsModel,
    ListenModel,
    LogModel,
    Model,
    ProxyModel,
    RegistrarModel,
    RouteModel,
    SetModel,
    TcpModel,
    TlsModel,
)
from .values import NamedUri

S = TypeVar("S")
HASH = Algorithm.HASH
_SOCKET_KIND = {"udp": "udp", "tcp": "tcp", "tls": "tcp"}  # tcp and tls cannot share a port


def build_config(raw: dict[str, Any], *, source: str, digest: str, base_dir: Path | None) -> Config:
    """The validated config, or ConfigError listing every problem found."""
    builder = _Builder(base_dir)
    config = builder.build(raw, source=source, digest=digest, config_hash=config_hash(raw))
    if builder.problems.items:
        raise ConfigError(builder.problems.items, source=source, partial=config)
    return config


class _Builder:
    def __init__(self, base_dir: Path | None) -> None:
        self.base_dir = base_dir
        self.problems = Problems()
        self.broken: set[str] = set()  # top-level keys whose shape is wrong

    def build(self, raw: dict[str, Any], *, source: str, digest: str, config_hash: str) -> Config:
        doc = self._document(raw)
        set_names = [table.get("name") for table in doc.sets]
        listeners = self._listeners(doc.listen)
        node_health, probe_health = split_health(doc.health)
        health = self._health(probe_health)
        sets = self._sets(doc.sets, health)
        listener_names = None if "listen" in self.broken else _names(doc.listen)
        config = Config(
            listeners=listeners,
            sets=sets,
            routes=self._routes(doc.routes, set_names),
            default_set=self._default_set(doc.default_set, set_names),
            health=health,
            proxy=self._proxy(doc.proxy),
            tcp=self._tcp(doc.tcp),
            limits=self._limits(doc.limits),
            log=self._section(LogModel, doc.log, "log", LogSettings),
            admin=self._admin(doc.admin),
            registrar=self._section(RegistrarModel, doc.registrar, "registrar", RegistrarSettings),
            tls=self._tls(doc.tls),
            protection=build_protection(
                doc.protection, doc.acl, listener_names, self.problems, self.base_dir
            ),
            source=source,
            digest=digest,
            config_hash=config_hash,
            readiness=build_node_health(
                node_health, None if "sets" in self.broken else set_names, self.problems
            ),
            announce=build_announce(doc.announce, doc.admin, self.problems),
            dns=self._dns(doc.dns),
            capture=build_capture(doc.capture, self.problems),
            media=build_media(doc.media, self.problems),
        )
        cluster = build_cluster(doc.cluster, doc.proxy, self.problems, self.base_dir)
        self._anycast(config.listeners, cluster is not None)
        self._wildcards(config.listeners, config.proxy.workers)
        if cluster is None:
            return config
        # One node id: the cluster's, which [proxy] node_id gave when only it was set.
        proxy = dataclasses.replace(config.proxy, node_id=cluster.node_id)
        return dataclasses.replace(config, proxy=proxy, cluster=cluster)

    def _document(self, raw: dict[str, Any]) -> DocumentModel:
        try:
            return DocumentModel.model_validate(raw)
        except ValidationError as exc:
            self.problems.record(DocumentModel, (), exc)
            self.broken = {str(error["loc"][0]) for error in exc.errors() if error["loc"]}
        # Keep going with the keys whose shape is right, to report their problems too.
        return DocumentModel.model_validate(
            {key: value for key, value in raw.items() if key not in self.broken}
        )

    # [[listen]]

    def _listeners(self, tables: list[dict[str, Any]]) -> tuple[ListenerSettings, ...]:
        if not tables and "listen" not in self.broken:
            self.problems.add(("listen",), "at least one [[listen]] table is required")
        listeners: list[ListenerSettings] = []
        seen: dict[tuple[str, str, int], int] = {}
        names: dict[str, int] = {}
        for index, table in enumerate(tables):
            model, broken = self.problems.validate_partial(ListenModel, table, ("listen", index))
            if model is not None and model.name is not None:
                if model.name in names:
                    self.problems.add(
                        ("listen", index, "name"),
                        f"listener {model.name!r} is already defined by listen[{names[model.name]}]",
                    )
                names.setdefault(model.name, index)
            if model is None or "transport" in broken:
                continue
            listeners.append(self._listener(model, table, ("listen", index)))
            host, port = model.address
            key = (_SOCKET_KIND[model.transport], host, port)
            if port != 0 and key in seen:
                self.problems.add(
                    ("listen", index, "address"),
                    f"{HostPort(host, port)} is already bound by listen[{seen[key]}]",
                )
            seen.setdefault(key, index)
        return tuple(listeners)

    def _listener(self, model: ListenModel, table: dict[str, Any], loc: Loc) -> ListenerSettings:
        if "recv_buffer" in model.model_fields_set and model.transport != "udp":
            self.problems.add((*loc, "recv_buffer"), "recv_buffer applies to udp listeners only")
        tls = None
        if model.transport == "tls":
            for name in ("cert", "key"):
                if name not in table:
                    self.problems.add((*loc, name), "required for a tls listener")
            cert = self._file(model.cert, (*loc, "cert"))
            key = self._file(model.key, (*loc, "key"))
            ca = self._file(model.ca, (*loc, "ca"), directory_ok=True)
            tls = TlsFiles(cert, key, ca) if cert and key else None
            if model.verify_client and model.ca is None:
                self.problems.add((*loc, "verify_client"), "needs ca (the clients' CA)")
        else:
            for name in ("cert", "key", "ca", "verify_client"):
                if name in table:
                    self.problems.add((*loc, name), f"{name} applies to tls listeners only")
        host, port = model.address
        return ListenerSettings(
            model.transport,
            host,
            port,
            model.advertise,
            model.recv_buffer,
            tls,
            model.verify_client,
            model.name,
            model.anycast,
        )

    def _anycast(self, listeners: tuple[ListenerSettings, ...], clustered: bool) -> None:
        """An anycast listener shares its address with the other nodes: it needs the cluster
        (that hands a datagram to the node that owns it), and a unicast listener of its
        transport and family on this node (probes and keepalives leave from it, so that their
        answers come back here)."""
        unicast = {(s.transport, ":" in s.host) for s in listeners if not s.anycast}
        for index, spec in enumerate(listeners):
            if not spec.anycast:
                continue
            loc = ("listen", index, "anycast")
            if not clustered:
                self.problems.add(loc, "an anycast listener needs [cluster]")
            if spec.transport != "udp":
                self.problems.add(
                    loc, "anycast applies to udp listeners (a stream stays on the node it reached)"
                )
            if (spec.transport, ":" in spec.host) not in unicast:
                family = "IPv6" if ":" in spec.host else "IPv4"
                self.problems.add(
                    loc,
                    f"needs a unicast {spec.transport} {family} listener on this node too "
                    "(probes and keepalives leave from it)",
                )

    def _wildcards(self, listeners: tuple[ListenerSettings, ...], workers: int) -> None:
        """A wildcard address (``0.0.0.0``, ``::``) listens on every address of the host: for
        udp only (each datagram carries its local address), in one process, never anycast,
        and no other udp listener of its family may take its port."""
        for index, spec in enumerate(listeners):
            if spec.host not in ("0.0.0.0", "::"):
                continue
            loc = ("listen", index, "address")
            if spec.transport != "udp":
                self.problems.add(
                    loc,
                    f"{spec.host} (every address) is for udp listeners; give a {spec.transport} "
                    "listener one address ([[listen]] per address)",
                )
                continue
            if workers > 1:
                self.problems.add(
                    loc, f"{spec.host} (every address) needs [proxy] workers = 1 (not {workers})"
                )
            if spec.anycast:
                self.problems.add(
                    ("listen", index, "anycast"), "an anycast listener needs its shared address"
                )
            for other, rival in enumerate(listeners):
                same = rival.transport == "udp" and (":" in rival.host) == (":" in spec.host)
                same = same and rival.host != spec.host  # the same address: "already bound"
                if other != index and same and spec.port != 0 and rival.port == spec.port:
                    self.problems.add(
                        ("listen", other, "address"),
                        f"port {spec.port} is taken on every address by listen[{index}] "
                        f"({spec.host})",
                    )

    def _file(self, text: str | None, loc: Loc, *, directory_ok: bool = False) -> Path | None:
        return find_file(text, loc, self.problems, self.base_dir, directory_ok=directory_ok)

    # [[sets]], [[routes]], default_set

    def _sets(self, tables: list[dict[str, Any]], health: HealthSettings) -> tuple[SetSpec, ...]:
        if not tables and "sets" not in self.broken:
            self.problems.add(("sets",), "at least one [[sets]] table is required")
        sets: list[SetSpec] = []
        names: dict[str, int] = {}
        for index, table in enumerate(tables):
            loc: Loc = ("sets", index)
            model, broken = self.problems.validate_partial(SetModel, table, loc)
            name = table.get("name")
            if isinstance(name, str) and name in names:
                self.problems.add(
                    (*loc, "name"), f"set {name!r} is already defined by sets[{names[name]}]"
                )
            elif isinstance(name, str):
                names[name] = index
            # Destinations are checked even when the set's other keys are broken.
            destinations, named = (
                ((), ()) if "destinations" in broken else self._destinations(table, loc)
            )
            if model is None:
                continue
            if "hash_key" in table and "algorithm" not in broken and model.algorithm != HASH:
                self.problems.add((*loc, "hash_key"), 'hash_key applies to algorithm = "hash" only')
            algorithm = model.algorithm
            if model.srv is not None:
                named = (*named, _srv_name(model.srv))
                if "algorithm" not in table:  # RFC 2782: priority levels, weighted shares
                    algorithm = Algorithm.PRIORITY
            own = None if model.health is None else self._set_health(model.health, health, loc)
            sets.append(SetSpec(model.name, destinations, algorithm, model.hash_key, named, own))
        return tuple(sets)

    def _destinations(
        self, table: dict[str, Any], loc: Loc
    ) -> tuple[tuple[DestinationSpec, ...], tuple[NameSpec, ...]]:
        tables: list[dict[str, Any]] = table.get("destinations", [])  # its shape is checked
        if not tables and "srv" not in table:
            self.problems.add(
                (*loc, "destinations"), "a set needs at least one destination (or srv)"
            )
        seen: dict[tuple[str, str, int | None], int] = {}
        destinations = []
        named: list[NameSpec] = []
        for index, item in enumerate(tables):
            dest_loc = (*loc, "destinations", index)
            dest, _ = self.problems.validate_partial(DestinationModel, item, dest_loc)
            if dest is None:
                continue
            uri = dest.uri
            key = (str(uri.transport), uri.host, uri.port)
            if key in seen:
                self.problems.add(
                    (*loc, "destinations", index, "uri"),
                    f"same destination as destinations[{seen[key]}] "
                    f"({uri.transport} {HostPort(uri.host, uri.port)})",
                )
            seen.setdefault(key, index)
            if isinstance(uri, NamedUri):
                query = Query(uri.host, port=uri.port, transport=uri.transport, secure=uri.secure)
                attrs = MappingProxyType(dict(dest.attrs))
                named.append(
                    NameSpec(uri.uri, query, dest.weight, dest.priority, dest.max_calls, attrs)
                )
                continue
            destinations.append(
                DestinationSpec(
                    uri=uri.uri,
                    host=uri.host,
                    port=uri.port,
                    transport=uri.transport,
                    weight=dest.weight,
                    priority=dest.priority,
                    max_calls=dest.max_calls,
                    attrs=MappingProxyType(dict(dest.attrs)),
                )
            )
        return tuple(destinations), tuple(named)

    def _routes(
        self, tables: list[dict[str, Any]], set_names: Sequence[object]
    ) -> tuple[RouteRule, ...]:
        routes: list[RouteRule] = []
        catch_all: int | None = None
        for index, table in enumerate(tables):
            loc: Loc = ("routes", index)
            model = self.problems.validate(RouteModel, table, loc)
            name = table.get("set")
            if isinstance(name, str):
                self._check_set_name(name, set_names, (*loc, "set"))
            if model is None:
                continue
            if model.source == []:
                self.problems.add((*loc, "source"), "an empty list never matches: remove the key")
            if catch_all is not None:
                self.problems.add(
                    loc, f"never used: routes[{catch_all}] before it matches every request"
                )
            rule = RouteRule(
                set_name=model.set,
                methods=model.method,
                ruri_user=model.ruri_user,
                ruri_domain=model.ruri_domain,
                sources=None if model.source is None else tuple(model.source),
                media=model.media,
            )
            if catch_all is None and _matches_everything(rule):
                catch_all = index
            routes.append(rule)
        return tuple(routes)

    def _default_set(self, name: str | None, set_names: Sequence[object]) -> str:
        if name is not None:
            self._check_set_name(name, set_names, ("default_set",))
            return name
        first = set_names[0] if set_names else None
        return first if isinstance(first, str) else ""

    def _check_set_name(self, name: str, set_names: Sequence[object], loc: Loc) -> None:
        if "sets" in self.broken or name in set_names:
            return
        known = ", ".join(
            repr(known) for known in dict.fromkeys(set_names) if isinstance(known, str)
        )
        self.problems.add(loc, f"unknown set {name!r} (sets: {known or 'none'})")

    # [health], [proxy], [tcp], [limits], [log], [admin] ([protection] and [[acl]]: protection.py)

    def _health(self, table: dict[str, Any]) -> HealthSettings:
        model, broken = self.problems.validate_partial(HealthModel, table, ("health",))
        if model is None:
            return HealthSettings()
        if not broken & {"timeout", "interval"} and model.timeout >= model.interval:
            self.problems.add(
                ("health", "timeout"), f"must be less than interval ({model.interval:g})"
            )
        fields = model.model_dump(exclude={"dead_codes"})
        if model.dead_codes is not None:
            fields["dead_codes"] = frozenset[int]().union(*model.dead_codes)
        return HealthSettings(**fields)

    def _set_health(self, table: dict[str, Any], base: HealthSettings, loc: Loc) -> HealthSettings:
        """``[[sets]] health``: the keys it gives override ``[health]``'s for this set."""
        model, broken = self.problems.validate_partial(HealthModel, table, (*loc, "health"))
        if model is None:  # pragma: no cover - every key has a default
            return base
        given = model.model_fields_set - broken
        fields = {key: getattr(model, key) for key in given if key != "dead_codes"}
        if "dead_codes" in given and model.dead_codes is not None:
            fields["dead_codes"] = frozenset[int]().union(*model.dead_codes)
        settings = dataclasses.replace(base, **fields)
        if settings.timeout >= settings.interval and given & {"timeout", "interval"}:
            key = "timeout" if "timeout" in given else "interval"
            self.problems.add(
                (*loc, "health", key),
                f"timeout ({settings.timeout:g}) must be less than interval "
                f"({settings.interval:g})",
            )
        return settings

    def _proxy(self, table: dict[str, Any]) -> ProxySettings:
        model, broken = self.problems.validate_partial(ProxyModel, table, ("proxy",))
        if model is None:
            return ProxySettings()
        if not broken & {"t1", "t2"} and model.t2 < model.t1:
            self.problems.add(("proxy", "t2"), f"must be at least t1 ({model.t1:g})")
        if (
            not broken & {"setup_timeout", "max_call_age"}
            and model.setup_timeout > model.max_call_age
        ):
            self.problems.add(
                ("proxy", "setup_timeout"),
                f"must not exceed max_call_age ({model.max_call_age:g})",
            )
        fields = model.model_dump(exclude={"failover_codes"})
        if model.failover_codes is not None:
            fields["failover_codes"] = frozenset[int]().union(*model.failover_codes)
        return ProxySettings(**fields)

    def _limits(self, table: dict[str, Any]) -> LimitsSettings:
        model, broken = self.problems.validate_partial(LimitsModel, table, ("limits",))
        if model is None:
            return LimitsSettings()
        if (
            not broken & {"max_line_length", "max_message_size"}
            and model.max_line_length > model.max_message_size
        ):
            self.problems.add(
                ("limits", "max_line_length"),
                f"must not exceed max_message_size ({model.max_message_size})",
            )
        self.problems.check_order(
            model,
            broken,
            ("limits",),
            "max_transactions_per_source",
            "max_transactions",
            blame="low",
        )
        return LimitsSettings(**model.model_dump())

    def _tcp(self, table: dict[str, Any]) -> TcpSettings:
        model, broken = self.problems.validate_partial(TcpModel, table, ("tcp",))
        if model is None:  # pragma: no cover - every key has a default
            return TcpSettings()
        self.problems.check_order(model, broken, ("tcp",), "header_timeout", "message_timeout")
        return TcpSettings(**model.model_dump())

    def _admin(self, table: dict[str, Any] | None) -> AdminSettings:
        # No [admin] table, no admin API: an open port is something the file has to ask for.
        if table is None:
            return AdminSettings(enabled=False)
        model, _ = self.problems.validate_partial(AdminModel, table, ("admin",))
        if model is None:
            return AdminSettings()
        if model.token is not None and model.token_file is not None:
            self.problems.add(("admin", "token_file"), "set token or token_file, not both")
        if model.hosts == []:
            self.problems.add(
                ("admin", "hosts"),
                "an empty list accepts no request: remove the key for the "
                "default (the listen address and localhost)",
            )
        host, port = model.listen
        return AdminSettings(
            host,
            port,
            model.token,
            self._file(model.token_file, ("admin", "token_file")),
            hosts=() if model.hosts is None else tuple(dict.fromkeys(model.hosts)),
        )

    def _tls(self, table: dict[str, Any]) -> TlsClientSettings:
        model, _ = self.problems.validate_partial(TlsModel, table, ("tls",))
        if model is None:
            return TlsClientSettings()
        if (model.cert is None) != (model.key is None):
            self.problems.add(("tls", "key" if model.key is None else "cert"), "set cert and key")
        return TlsClientSettings(
            ca=self._file(model.ca, ("tls", "ca"), directory_ok=True),
            verify=model.verify,
            cert=self._file(model.cert, ("tls", "cert")),
            key=self._file(model.key, ("tls", "key")),
        )

    def _dns(self, table: dict[str, Any]) -> DnsSettings:
        model, broken = self.problems.validate_partial(DnsModel, table, ("dns",))
        if model is None:  # pragma: no cover - every key has a default
            return DnsSettings()
        self.problems.check_order(model, broken, ("dns",), "ttl_floor", "ttl_ceiling")
        if model.servers == []:
            self.problems.add(
                ("dns", "servers"), "an empty list resolves nothing: remove the key for resolv.conf"
            )
        servers = () if model.servers is None else tuple(dict.fromkeys(model.servers))
        return DnsSettings(servers, model.timeout, model.ttl_floor, model.ttl_ceiling)

    def _section(
        self, model_type: type[Model], table: dict[str, Any], key: str, settings: Callable[..., S]
    ) -> S:
        model = self.problems.validate(model_type, table, (key,))
        return settings() if model is None else settings(**model.model_dump())


def _srv_name(name: str) -> NameSpec:
    """A set's ``srv``: the SRV name, its transport read from it."""
    return NameSpec(name, Query(name, srv=True, transport=srv_transport(name)))


def _names(tables: list[dict[str, Any]]) -> list[str]:
    """The names the ``[[listen]]`` tables give, for ``[[acl]] listen``."""
    return list(dict.fromkeys(t["name"] for t in tables if isinstance(t.get("name"), str)))


def _matches_everything(rule: RouteRule) -> bool:
    return (rule.methods, rule.ruri_user, rule.ruri_domain, rule.sources) == (None,) * 4
