"""The JSON the admin API, the dashboard and ``siplb status`` read: built from the balancer's
view (``BalancerView``) on demand (nothing here is kept between requests)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from siplb import __version__
from siplb.dispatch import DestinationSpec, HealthSnapshot, SetSpec, State
from siplb.proxy.admission import ACL, BANNED, BLOCKLIST, RATE, SCANNER, BanView
from siplb.proxy.scanner import ENUMERATION, REGISTER_FAILURES

from .media import media_json
from .meter import RateHistory, latency_stats
from .view import BalancerView, ClusterReading, MemberReading, WorkerCounters

JSON = dict[str, Any]
Workers = WorkerCounters  # ``BalancerView.worker_counters()``: empty for one process


@dataclass(frozen=True, slots=True)
class AdminFacts:
    """What the admin server itself tells about its listener and its guard."""

    port: int | None  # the bound port (None: not listening)
    token: bool  # a token is configured
    refused: Counter[str]  # admin requests refused, by reason


DRAINED = "drained"
# Every state a destination is shown in; "drained" is draining with no call left.
DISPLAY_STATES = (*(str(s) for s in State), DRAINED)


def display_state(snapshot: HealthSnapshot) -> str:
    return DRAINED if snapshot.drained else str(snapshot.state)


def destination_json(
    balancer: BalancerView,
    meter: RateHistory,
    set_name: str,
    spec: DestinationSpec,
    *,
    removed: bool = False,
) -> JSON | None:
    """One destination of one set, or None when the balancer no longer tracks its URI."""
    uri = spec.uri
    reading = balancer.core.destination(uri)
    if reading is None:
        return None
    snap = reading.snapshot
    latency = latency_stats(reading.latency or None)
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
        "calls_total": reading.calls_total,
        "cps": round(meter.rate(uri), 3),
        "latency_ms": None if latency is None else latency.to_json(),
        "failures": snap.total_failures,
        "consecutive_failures": snap.consecutive_failures,
        "removed": removed,
        "name": spec.name,
        "attrs": dict(spec.attrs),
    }


def set_json(balancer: BalancerView, meter: RateHistory, spec: SetSpec) -> JSON:
    destinations = [
        view
        for dest in spec.destinations
        if (view := destination_json(balancer, meter, spec.name, dest)) is not None
    ]
    destinations.extend(_retiring(balancer, meter, spec.name))
    return _set_entry(spec.name, str(spec.algorithm), destinations, removed=False)


def sets_json(balancer: BalancerView, meter: RateHistory) -> list[JSON]:
    """Every set with its destinations, then removed sets whose destinations still drain."""
    specs = balancer.core.sets()
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


def _retiring(balancer: BalancerView, meter: RateHistory, set_name: str) -> list[JSON]:
    out = []
    for old_set, spec in balancer.retired_from.values():
        if old_set == set_name:
            view = destination_json(balancer, meter, set_name, spec, removed=True)
            if view is not None:
                out.append(view)
    return out


def status_json(
    balancer: BalancerView, meter: RateHistory, now: float, admin: AdminFacts | None
) -> JSON:
    """Version, uptime, config file and hash, listeners, totals. ``now``: loop time; ``admin``:
    the admin server's facts (None when it does not run)."""
    core = balancer.core
    config = balancer.config
    uris = core.uris()
    states: dict[str, int] = dict.fromkeys(DISPLAY_STATES, 0)
    for uri in uris:
        reading = core.destination(uri)
        if reading is not None:
            states[display_state(reading.snapshot)] += 1
    traffic = core.traffic()
    out: JSON = {
        "version": __version__,
        "node_id": core.node_id,
        "worker": balancer.worker,
        "started_at": round(balancer.wall(balancer.started_at), 3),
        "uptime_s": round(now - balancer.started_at, 3),
        "accepting": core.accepting,
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
            "reads_need_token": admin is not None and admin.token,
            "changes_allowed": admin is not None and admin.token,
        },
        "totals": {
            "sets": len(core.sets()),
            "destinations": len(uris),
            "states": states,
            "active_calls": traffic.calls,
            "cps": round(sum(meter.rate(uri) for uri in uris), 3),
            "transactions": {"server": traffic.servers, "client": traffic.clients},
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
    out["dns"] = dns_json(balancer, now)
    out["media"] = media_json(balancer.media_view(), balancer.wall)
    return out


def dns_json(balancer: BalancerView, now: float) -> list[JSON]:
    """Each DNS name the sets use: its status, addresses, last error (RFC 3263 lookups)."""
    return [
        {
            "name": reading.query.label,
            "srv": reading.query.srv,
            "status": str(reading.status),
            "addresses": [target.uri for target in reading.targets],
            "error": reading.error or None,
            "answered_at": None
            if reading.answered is None
            else round(balancer.wall(reading.answered), 3),
            "next_lookup_s": round(max(0.0, reading.expires - now), 3),
        }
        for reading in balancer.dns_names()
    ]


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


def refused_counts(balancer: BalancerView, workers: Workers | None = None) -> Counter[str]:
    """Requests refused by reason over every worker (``workers = N``), else this process's."""
    traffic = balancer.core.traffic()
    local = traffic.drops
    if workers is None:
        workers = balancer.worker_counters()
    if not workers:
        return merge_refused(traffic.stats, local)
    total: Counter[str] = Counter()
    for row in workers:
        drops = row.get("drops")
        if drops is None and row.get("worker") == balancer.worker:
            drops = local
        total.update(merge_refused(row["stats"], drops))
    return total


def pending_transactions(balancer: BalancerView, workers: Workers | None = None) -> int:
    """Server transactions waiting for their final answer, over every worker that reports it."""
    pending = balancer.core.traffic().pending
    if workers is None:
        workers = balancer.worker_counters()
    if not workers:
        return pending
    return sum(
        int(row.get("pending", pending if row.get("worker") == balancer.worker else 0))
        for row in workers
    )


def ban_json(ban: BanView, balancer: BalancerView, now: float) -> JSON:
    return {
        "host": ban.host,
        "reason": ban.reason,
        "until": round(balancer.wall(ban.until), 3),
        "seconds_left": round(max(0.0, ban.until - now), 1),
        "offences": ban.offences,
    }


def protection_json(
    balancer: BalancerView, now: float, admin_refused: Counter[str], limit: int = BANS_SHOWN
) -> JSON:
    """``GET /api/protection``: refusals by reason, bans in force (the ``limit`` ending first),
    pending transactions and their top sources, stream and admin refusals. ``now``: loop time."""
    core = balancer.core
    bans = core.bans(now)
    workers = balancer.worker_counters()
    refused = refused_counts(balancer, workers)
    streams = core.streams()
    pending = core.pending_limits(TOP_SOURCES)
    stats = [w["stats"] for w in workers] or [core.traffic().stats]
    return {
        "admission": core.protects,
        "refused_total": sum(refused.values()),
        "refused": dict(refused.most_common()),
        "bans_active": len(bans),
        "bans": [ban_json(ban, balancer, now) for ban in bans[: max(0, limit)]],
        "pending": {
            "transactions": pending_transactions(balancer, workers),
            "max": pending.max,
            "max_per_source": pending.max_per_source,
            "top_sources": [
                {"host": host, "pending": count} for host, count in pending.top_sources
            ],
        },
        "streams": {
            "refused": dict(streams.refused.most_common()),
            "inbound": streams.inbound,
            "outbound": streams.outbound,
            "buffered_bytes": streams.buffered,
        },
        "admin_refused": dict(admin_refused.most_common()),
        "internal_errors": sum(int(s.get("internal_errors", 0)) for s in stats),
    }


# ---- the cluster ------------------------------------------------------------------------------
def cluster_json(reading: ClusterReading | None) -> JSON:
    """``GET /api/cluster``: ``{"enabled": false}`` alone; else this member's view of the
    cluster. A member's ``config_matches`` compares its config hash with this member's (None
    while its hash is unknown); ``totals`` count the live members, their nodes and the calls
    they published."""
    if reading is None:
        return {"enabled": False}
    live = reading.live()
    redis = reading.redis
    channel = reading.channel
    return {
        "enabled": True,
        "me": reading.me,
        "node": reading.node,
        "config_hash": reading.config_hash,
        "redis": {
            "up": redis.up,
            "where": redis.where,
            "errors": redis.errors,
            "reconnects": redis.reconnects,
            "last_error": redis.last_error,
            "last_ok": _rounded(redis.last_ok),
        },
        "members": [_member_json(member, reading.config_hash) for member in reading.members],
        "destinations": [
            {
                "uri": dest.uri,
                "owner": dest.owner,
                "state": dest.state,
                "calls_here": dest.calls_here,
                "calls_elsewhere": dest.calls_elsewhere,
                "limit": dest.limit,
            }
            for dest in reading.destinations
        ],
        "channel": {
            "handed_over": channel.handed_over,
            "taken_over": channel.taken_over,
            "setups": {
                "told": channel.setups_told,
                "heard": channel.setups_heard,
                "adopted": channel.setups_adopted,
            },
            "rejected": channel.rejected(),
            "unreachable": channel.unreachable,
        },
        "totals": {
            "members": len(live),
            "nodes": len({member.node for member in live}),
            "calls": reading.calls(),
            "skewed": skewed(reading),
        },
    }


def skewed(reading: ClusterReading) -> int:
    """Live members known to run another config than this member."""
    mine = reading.config_hash
    return sum(1 for m in reading.live() if m.config_hash and m.config_hash != mine)


def _member_json(member: MemberReading, config_hash: str) -> JSON:
    return {
        "member": member.tag,
        "node": member.node,
        "worker": member.worker,
        "alive": member.alive,
        "last_seen": _rounded(member.last_seen),
        "peer": member.peer,
        "calls": member.calls,
        "config_hash": member.config_hash,
        "config_matches": (member.config_hash == config_hash) if member.config_hash else None,
        "started": _rounded(member.started),
    }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
