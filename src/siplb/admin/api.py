"""The JSON API under ``/api/`` (described by ``/api/openapi.json``), ``/metrics`` and the
dashboard's files. Handlers are thin: views build the JSON, the balancer performs the actions.

Every error is ``{"error": "..."}`` with its status: 400 bad input, 401 missing or wrong token,
403 changes without a configured token, 404 unknown set, destination or ban, 409 nothing to
reload or a host that cannot be banned, 422 a refused config (with its ``problems``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from aiohttp import web

from siplb.dispatch import AdminState
from siplb.proxy.acl import host_key, parse_host
from siplb.readiness import Readiness, readiness

from .meter import RateHistory
from .metrics import CONTENT_TYPE, Metrics
from .openapi import OPENAPI
from .view import BalancerView
from .views import (
    BANS_SHOWN,
    JSON,
    AdminFacts,
    ban_json,
    cluster_json,
    destination_json,
    protection_json,
    refused_counts,
    set_json,
    sets_json,
    status_json,
)

STATIC = Path(__file__).resolve().parent / "static"
ACTIONS = {
    "drain": AdminState.DRAINING,
    "enable": AdminState.ENABLED,
    "disable": AdminState.DISABLED,
}
MAX_WEIGHT = 1_000_000
MAX_BAN = 365 * 86400.0  # seconds: an operator's ban lasts a year at most
MAX_BANS_SHOWN = 10_000
MAX_REASON = 100  # characters of an operator's ban reason
OPERATOR_BAN = "operator"
DEST = "/api/sets/{set}/destinations/{uri}"
CLIENT_QUEUE = 16  # updates queued for a slow dashboard before it is resynchronised


def error(status: int, message: str, **extra: object) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


@dataclass(frozen=True, slots=True)
class BanRequest:
    host: str  # canonical: 192.0.2.7 for ::ffff:192.0.2.7, IPv6 without brackets
    seconds: float
    reason: str


def parse_ban(body: object) -> BanRequest | str:
    """The body of ``POST /api/bans``, or what is wrong with it."""
    if not isinstance(body, dict):
        return 'the body must be JSON: {"host": "IP", "seconds": N}'
    host, seconds = body.get("host"), body.get("seconds")
    reason = body.get("reason", OPERATOR_BAN)
    if not isinstance(host, str) or parse_host(host) is None:
        return "host must be an IP address"
    if not isinstance(seconds, int | float) or isinstance(seconds, bool):
        return "seconds must be a number"
    if not 0 < seconds <= MAX_BAN:
        return f"seconds must be above 0 and at most {MAX_BAN:.0f}"
    if not isinstance(reason, str) or not 0 < len(reason.strip()) <= MAX_REASON:
        return f"reason must be a text of 1 to {MAX_REASON} characters"
    if not reason.isprintable():
        return "reason must be printable text"
    return BanRequest(host_key(host), float(seconds), reason.strip())


class Served(Protocol):
    """What the API asks of the admin server (``server.AdminServer``)."""

    @property
    def balancer(self) -> BalancerView: ...
    @property
    def meter(self) -> RateHistory: ...
    @property
    def metrics(self) -> Metrics: ...
    @property
    def refused(self) -> Counter[str]: ...
    def facts(self) -> AdminFacts: ...
    def snapshot(self, sets: list[JSON] | None = None) -> JSON: ...
    def attach(self, queue: asyncio.Queue[bytes | None]) -> None: ...
    def detach(self, queue: asyncio.Queue[bytes | None]) -> None: ...


class AdminApi:
    def __init__(self, server: Served) -> None:
        self.server = server
        self.balancer = server.balancer
        # the journal sums refusals from the proxy's counters (``Recorder.settle``)
        self.balancer.recorder.refusals = functools.partial(refused_counts, self.balancer)

    def routes(self) -> list[web.AbstractRouteDef]:
        return [
            web.get("/", self.index),
            web.static("/static", STATIC, append_version=False),
            web.get("/api/openapi.json", self.openapi),
            web.get("/api/status", self.status),
            web.get("/api/sets", self.sets),
            web.get("/api/sets/{set}", self.one_set),
            web.get(DEST, self.destination),
            web.post(DEST + "/{action:drain|enable|disable}", self.action),
            web.put(DEST + "/weight", self.weight),
            web.get("/api/events", self.events),
            web.get("/api/history", self.history),
            web.post("/api/reload", self.reload),
            web.get("/api/protection", self.protection),
            web.post("/api/bans", self.ban),
            web.delete("/api/bans/{host}", self.unban),
            web.get("/api/cluster", self.cluster),
            web.get("/api/health", self.health),
            web.post("/api/node", self.node),
            web.get("/api/stream", self.stream),
            web.get("/metrics", self.metrics),
        ]

    # ---- pages -------------------------------------------------------------------------------
    async def index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    async def openapi(self, request: web.Request) -> web.Response:
        return web.json_response(OPENAPI)

    # ---- reads -------------------------------------------------------------------------------
    async def status(self, request: web.Request) -> web.Response:
        balancer = self.balancer
        status = status_json(balancer, self.server.meter, balancer.now(), self.server.facts())
        return web.json_response(status)

    async def sets(self, request: web.Request) -> web.Response:
        return web.json_response({"sets": sets_json(self.balancer, self.server.meter)})

    async def one_set(self, request: web.Request) -> web.Response:
        name = request.match_info["set"]
        for spec in self.balancer.core.sets():
            if spec.name == name:
                return web.json_response(set_json(self.balancer, self.server.meter, spec))
        return error(404, f"no set {name!r}")

    async def destination(self, request: web.Request) -> web.Response:
        set_name, uri = request.match_info["set"], request.match_info["uri"]
        try:
            spec = self.balancer.find_destination(set_name, uri)
        except KeyError as exc:
            return error(404, exc.args[0])
        view = destination_json(self.balancer, self.server.meter, set_name, spec)
        return web.json_response(view) if view is not None else error(404, f"no {uri!r}")

    async def events(self, request: web.Request) -> web.Response:
        try:
            after = int(request.query.get("after", "0"))
            limit = int(request.query.get("limit", "100"))
        except ValueError:
            return error(400, "after and limit are integers")
        journal = self.balancer.recorder.journal
        entries = journal.after(max(0, after), max(0, min(limit, 500)))
        return web.json_response(
            {"last_id": journal.last_id, "events": [e.to_json() for e in entries]}
        )

    async def protection(self, request: web.Request) -> web.Response:
        try:
            limit = int(request.query.get("limit", str(BANS_SHOWN)))
        except ValueError:
            return error(400, "limit is an integer")
        balancer = self.balancer
        limit = max(0, min(limit, MAX_BANS_SHOWN))
        view = protection_json(balancer, balancer.now(), self.server.refused, limit)
        return web.json_response(view)

    async def cluster(self, request: web.Request) -> web.Response:
        return web.json_response(cluster_json(self.balancer.cluster()))

    async def health(self, request: web.Request) -> web.Response:
        """200 when the node should receive new traffic, else 503 with the reasons
        (``siplb.readiness``); ``siplb health`` and ``siplb announce`` ask it."""
        return self._health_json(readiness(self.balancer))

    def _health_json(self, found: Readiness) -> web.Response:
        body = {
            "healthy": found.healthy,
            "reasons": list(found.reasons),
            "draining": self.balancer.draining,
            "node_id": self.balancer.core.node_id,
        }
        return web.json_response(body, status=200 if found.healthy else 503)

    async def history(self, request: web.Request) -> web.Response:
        snapshot = self.server.snapshot()
        return web.json_response(snapshot["history"])

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self.server.metrics.render(), headers={"Content-Type": CONTENT_TYPE}
        )

    # ---- changes -----------------------------------------------------------------------------
    async def action(self, request: web.Request) -> web.Response:
        set_name, uri = request.match_info["set"], request.match_info["uri"]
        action = request.match_info["action"]
        cause = f"{action} by admin API from {request.remote}"
        try:
            self.balancer.set_admin_state(set_name, uri, ACTIONS[action], cause)
        except KeyError as exc:
            return error(404, exc.args[0])
        addresses = self.balancer.addresses_of(set_name, uri)
        if addresses is not None:  # a DNS name: the addresses it has now
            meter = self.server.meter
            views = [destination_json(self.balancer, meter, set_name, spec) for spec in addresses]
            body = {"set": set_name, "name": uri, "destinations": [v for v in views if v]}
            return web.json_response(body)
        return await self.destination(request)

    async def weight(self, request: web.Request) -> web.Response:
        set_name, uri = request.match_info["set"], request.match_info["uri"]
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return error(400, 'the body must be JSON: {"weight": N}')
        weight = body.get("weight") if isinstance(body, dict) else None
        if not isinstance(weight, int) or isinstance(weight, bool) or not 0 <= weight <= MAX_WEIGHT:
            return error(400, f"weight must be an integer from 0 (no new calls) to {MAX_WEIGHT}")
        cause = f"admin API from {request.remote}"
        try:
            self.balancer.set_weight(set_name, uri, weight, cause)
        except KeyError as exc:
            return error(404, exc.args[0])
        return await self.destination(request)

    async def ban(self, request: web.Request) -> web.Response:
        """``{"host": "192.0.2.7", "seconds": 3600, "reason": "..."}``: drop the host's requests
        until then (every worker, and the kernel's set when nftables is on). A ban in force
        that ends later stays as it is."""
        try:
            wanted = parse_ban(await request.json())
        except (json.JSONDecodeError, UnicodeDecodeError):
            wanted = 'the body must be JSON: {"host": "IP", "seconds": N}'
        if isinstance(wanted, str):
            return error(400, wanted)
        balancer = self.balancer
        core = balancer.core
        host = wanted.host
        if not core.protects:
            return error(409, "this balancer has no admission stage")
        if core.is_trusted(host):
            return error(409, f"{host} is trusted (a destination or a trusted network)")
        balancer.ban(host, wanted.seconds, wanted.reason)
        now = balancer.now()
        view = next((ban for ban in core.bans(now) if ban.host == host), None)
        if view is None:  # the table was full and this ban would have ended first
            return error(409, f"{host} could not be banned (the ban table is full)")
        return web.json_response(ban_json(view, balancer, now))

    async def unban(self, request: web.Request) -> web.Response:
        host = request.match_info["host"]
        if not self.balancer.unban(host):
            return error(404, f"no ban on {host}")
        return web.json_response({"host": host_key(host), "lifted": True})

    async def node(self, request: web.Request) -> web.Response:
        """``{"drain": true}``: the node turns unhealthy (its route is withdrawn, VRRP moves)
        and, in a cluster, the others take its new calls; ``false`` resumes it. Answers like
        ``GET /api/health``, after the change."""
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = None
        drain = body.get("drain") if isinstance(body, dict) else None
        if not isinstance(drain, bool):
            return error(400, 'the body must be JSON: {"drain": true} or {"drain": false}')
        self.balancer.drain_node(drain, f"admin API from {request.remote}")
        return self._health_json(readiness(self.balancer))

    async def reload(self, request: web.Request) -> web.Response:
        outcome = self.balancer.reload_file(f"admin API from {request.remote}")
        if outcome.ok:
            return web.json_response(outcome.to_json())
        status = 409 if self.balancer.config_path is None else 422
        return web.json_response({"error": outcome.summary(), **outcome.to_json()}, status=status)

    # ---- the dashboard's event stream ---------------------------------------------------------
    async def stream(self, request: web.Request) -> web.StreamResponse:
        """Server-Sent Events: ``snapshot`` (everything) then a ``tick`` every second."""
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        queue: asyncio.Queue[bytes | None] = asyncio.Queue(CLIENT_QUEUE)
        self.server.attach(queue)
        try:
            while (message := await queue.get()) is not None:
                await response.write(message)
        except (ConnectionResetError, ConnectionError):
            pass
        finally:
            self.server.detach(queue)
        with contextlib.suppress(ConnectionError):
            await response.write_eof()
        return response
