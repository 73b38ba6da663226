"""The JSON the admin API, the dashboard and ``siplb status`` read: built from the balancer's
live state on demand (nothing here is kept between requests)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from siplb import __version__
from siplb.dispatch import DestinationSpec, HealthSnapshot, SetSpec, State
from siplb.proxy.admission import ACL, BANNED, BLOCKLIST, RATE, SCANNER, BanView
from siplb.proxy.scanner import ENUMERATION, REGISTER_FAILURES

from .meter import RateHistory, latency_stats

if TYPE_CHECKING:
    from siplb.app import Balancer
    from siplb.io.tcp import ConnectionPool

JSON = dict[str, Any]
Workers = list[dict[str, Any]]  # ``Balancer.worker_counters()``: empty for one process
DRAINED = "drained"
# Every state a destination is shown in; "drained" is draining with no call left.
DISPLAY_STATES = (*(str(s) for s in State), DRAINED)


def display_state(snapshot: HealthSnapshot) -> str:
    return DRAINED if snapshot.drained else str(snapshot.state)


def destination_json(
    balancer: Balancer,
    meter: RateHistory,
    set_name: str,
    spec: DestinationSpec,
    *,
    removed: bool = False,
) -> JSON | None:
    """One destination of one set, or None when the balancer no longer tracks its URI."""
    proxy = balancer.proxy
    assert proxy is not None
    uri = spec.uri
    try:
        snap = proxy.dispatcher.snapshot(uri)
    except KeyError:
        return None
    prober = proxy.prober
    latency = latency_stats(prober.latency.get(uri) if prober is not None else None)
    return {
        "set": set_name,
        "uri": uri,
        "transport": spec.transport,
        "state": display_state(snap),
        "health_state": str(snap.state),
        "probe_state": str(snap.probe_state),
        "admin": None if snap.admin is None else str(snap.admin),
        "cause": snap.cause,
        "since": round(balancer.wall(snap.since), 3),
        "weight": spec.weight,
        "priority": spec.priority,
        "max_calls": spec.max_calls,
        "active_calls": snap.active_calls,
        "calls_total": proxy.dispatcher.accounting.calls_total(uri),
        "cps": round(meter.rate(uri), 3),
        "latency_ms": None if latency is None else latency.to_json(),
        "failures": snap.total_failures,
        "consecutive_failures": snap.consecutive_failures,
        "removed": removed,
    }


def set_json(balancer: Balancer, meter: RateHistory, spec: SetSpec) -> JSON:
    destinations = [
        view
        for dest in spec.destinations
        if (view := destination_json(balancer, meter, spec.name, dest)) is not None
    ]
    destinations.extend(_retiring(balancer, meter, spec.name))
    return _set_entry(spec.name, str(spec.algorithm), destinations, removed=False)


def sets_json(balancer: Balancer, meter: RateHistory) -> list[JSON]:
    """Every set with its destinations, then removed sets whose destinations still drain."""
    assert balancer.proxy is not None
    specs = balancer.proxy.dispatcher.sets()
    out = [set_json(balancer, meter, spec) for spec in specs]
    names = {spec.name for spec in specs}
    for old_set in sorted({name for name, _ in balancer.retired_from.values()} - names):
        destinations = list(_retiring(balancer, meter, old_set))
        if destinations:
            out.append(_set_entry(old_set, "", destinations, removed=True))
    return out


def _set_entry(name: str, algorithm: str, destinations: list[JSON], *, removed: bool) -> JSON:
    return {
        "name": name,
        "algorithm": algorithm,
        "removed": removed,
        "active_calls": sum(d["active_calls"] for d in destinations),
        "cps": round(sum(d["cps"] for d in destinations), 3),
        "up": sum(1 for d in destinations if d["state"] in ("up", "suspect")),
        "destinations": destinations,
    }


def _retiring(balancer: Balancer, meter: RateHistory, set_name: str) -> list[JSON]:
    out = []
    for old_set, spec in balancer.retired_from.values():
        if old_set == set_name:
            view = destination_json(balancer, meter, set_name, spec, removed=True)
            if view is not None:
                out.append(view)
    return out


def status_json(balancer: Balancer, meter: RateHistory, now: float) -> JSON:
    """Version, uptime, config file and hash, listeners, totals. ``now``: loop time."""
    proxy = balancer.proxy
    assert proxy is not None
    config = balancer.config
    dispatcher = proxy.dispatcher
    uris = list(dispatcher.health)
    states: dict[str, int] = dict.fromkeys(DISPLAY_STATES, 0)
    for uri in uris:
        states[display_state(dispatcher.snapshot(uri))] += 1
    admin = balancer.admin
    out: JSON = {
        "version": __version__,
        "node_id": proxy.settings.node_id,
        "worker": balancer.worker,
        "started_at": round(balancer.wall(balancer.started_at), 3),
        "uptime_s": round(now - balancer.started_at, 3),
        "accepting": proxy.accepting,
        "config": {
            "file": config.source,
            "sha256": config.digest,
            "reloads": dict(balancer.recorder.reloads),
            "last_reload_at": balancer.recorder.last_reload_at,
        },
        "listeners": [
            {
                "transport": listener.transport,
                "address": _hostport(listener.host, listener.port),
                "advertise": (
                    _hostport(listener.public_host, listener.public_port)
                    if listener.advertise_host or listener.advertise_port
                    else None
                ),
            }
            for listener in balancer.listeners
        ],
        "admin": {
            "address": _hostport(
                balancer.started_config.admin.host,
                admin.port if admin is not None and admin.port else config.admin.port,
            ),
            "reads_need_token": admin is not None and admin.guard.token is not None,
            "changes_allowed": admin is not None and admin.guard.token is not None,
        },
        "totals": {
            "sets": len(dispatcher.sets()),
            "destinations": len(uris),
            "states": states,
            "active_calls": len(dispatcher.accounting),
            "cps": round(sum(meter.rate(uri) for uri in uris), 3),
            "transactions": {"server": len(proxy.servers), "client": len(proxy.clients)},
        },
    }
    workers = balancer.worker_counters()
    if workers:  # workers = N: each worker's counters, and the totals over all of them
        totals = out["totals"]
        totals["active_calls"] = sum(w["calls"] for w in workers)
        totals["transactions"] = {
            "server": sum(w["transactions"][0] for w in workers),
            "client": sum(w["transactions"][1] for w in workers),
        }
        out["workers"] = workers
    return out


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# ---- protection: what was refused, who is banned, what waits -----------------------------------
ADMISSION_REASONS = frozenset({BLOCKLIST, ACL, BANNED, RATE, SCANNER})
BAN_REASONS = frozenset({RATE, SCANNER, ENUMERATION, REGISTER_FAILURES})
OPERATOR = "operator"  # the label of every ban whose reason an operator wrote
TOP_SOURCES = 10  # sources listed by pending transactions
BANS_SHOWN = 100  # bans listed by default by /api/protection


def ban_label(reason: str) -> str:
    """A bounded label for a ban's reason: an operator's own text counts as "operator"."""
    return reason if reason in BAN_REASONS else OPERATOR


def merge_refused(stats: Mapping[str, int], drops: Mapping[str, int] | None) -> Counter[str]:
    """Requests refused by reason, from one proxy's counters: the core's own refusals
    (``stats["refused:<reason>"]``) and the admission stage's (``admission.drops``)."""
    out: Counter[str] = Counter()
    for key, count in stats.items():
        if key.startswith("refused:"):
            out[key[8:]] += count
    if drops is not None:
        out.update(drops)
    return +out


def refused_counts(balancer: Balancer, workers: Workers | None = None) -> Counter[str]:
    """Requests refused by reason over every worker (``workers = N``), else this process's."""
    proxy = balancer.proxy
    assert proxy is not None
    admission = proxy.admission
    local = admission.drops if admission is not None else None
    if workers is None:
        workers = balancer.worker_counters()
    if not workers:
        return merge_refused(proxy.stats, local)
    total: Counter[str] = Counter()
    for row in workers:
        drops = row.get("drops")
        if drops is None and row.get("worker") == balancer.worker:
            drops = local
        total.update(merge_refused(row["stats"], drops))
    return total


def pending_transactions(balancer: Balancer, workers: Workers | None = None) -> int:
    """Server transactions waiting for their final answer, over every worker that reports it."""
    proxy = balancer.proxy
    assert proxy is not None
    if workers is None:
        workers = balancer.worker_counters()
    if not workers:
        return proxy.pending
    return sum(
        int(row.get("pending", proxy.pending if row.get("worker") == balancer.worker else 0))
        for row in workers
    )


@dataclass(frozen=True, slots=True)
class StreamCounts:
    """The stream pool's bounds at work (``Balancer.pool``)."""

    refused: Counter[str]  # connections refused or closed, by reason
    inbound: int
    outbound: int
    buffered: int  # bytes held by the framers of all connections

    @classmethod
    def of(cls, pool: ConnectionPool) -> StreamCounts:
        refused = Counter({str(reason): count for reason, count in pool.refused.items()})
        return cls(refused, pool.inbound, pool.outbound, pool.buffered)


def admin_refused(balancer: Balancer) -> Counter[str]:
    """Admin requests refused, by reason (wrong host, missing token ...)."""
    admin = balancer.admin
    return Counter(admin.refused) if admin is not None else Counter()


def ban_json(ban: BanView, balancer: Balancer, now: float) -> JSON:
    return {
        "host": ban.host,
        "reason": ban.reason,
        "until": round(balancer.wall(ban.until), 3),
        "seconds_left": round(max(0.0, ban.until - now), 1),
        "offences": ban.offences,
    }


def protection_json(balancer: Balancer, now: float, limit: int = BANS_SHOWN) -> JSON:
    """``GET /api/protection``: refusals by reason, bans in force (the ``limit`` ending first),
    pending transactions and their top sources, stream and admin refusals. ``now``: loop time."""
    proxy = balancer.proxy
    assert proxy is not None
    admission = proxy.admission
    bans = admission.bans(now) if admission is not None else []
    workers = balancer.worker_counters()
    refused = refused_counts(balancer, workers)
    streams = StreamCounts.of(balancer.pool)
    stats = [w["stats"] for w in workers] or [proxy.stats]
    return {
        "admission": admission is not None,
        "refused_total": sum(refused.values()),
        "refused": dict(refused.most_common()),
        "bans_active": len(bans),
        "bans": [ban_json(ban, balancer, now) for ban in bans[: max(0, limit)]],
        "pending": {
            "transactions": pending_transactions(balancer, workers),
            "max": proxy.max_pending,
            "max_per_source": proxy.max_pending_per_source,
            "top_sources": [
                {"host": host, "pending": count}
                for host, count in proxy.pending_by_source.most_common(TOP_SOURCES)
            ],
        },
        "streams": {
            "refused": dict(streams.refused.most_common()),
            "inbound": streams.inbound,
            "outbound": streams.outbound,
            "buffered_bytes": streams.buffered,
        },
        "admin_refused": dict(admin_refused(balancer).most_common()),
        "internal_errors": sum(int(s.get("internal_errors", 0)) for s in stats),
    }
