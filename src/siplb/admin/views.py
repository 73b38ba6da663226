"""The JSON the admin API, the dashboard and ``siplb status`` read: built from the balancer's
live state on demand (nothing here is kept between requests)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from siplb import __version__
from siplb.dispatch import DestinationSpec, HealthSnapshot, SetSpec, State

from .meter import RateHistory, latency_stats

if TYPE_CHECKING:
    from siplb.app import Balancer

JSON = dict[str, Any]
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
