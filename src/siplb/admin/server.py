"""The admin server: aiohttp in the balancer's own event loop (docs/design.md section 2).

It serves the JSON API (``api``), the dashboard (``static/``) and ``/metrics``, and runs one
sampler task: once a second it records calls per second per destination, feeds the probe latency
histogram, and pushes an update to every open dashboard over Server-Sent Events. Nothing polls:
a dashboard receives a full snapshot when it connects (and after a reload or any change of the
table's layout), then one small update a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import Counter
from typing import Any

from aiohttp import web

from .api import AdminApi
from .auth import WILDCARDS, Guard, HttpErrorLog, allowed_hosts, load_token
from .meter import RateHistory
from .metrics import Metrics
from .view import BalancerView
from .views import JSON, AdminFacts, sets_json, status_json

log = logging.getLogger("siplb.admin")

SAMPLE_INTERVAL = 1.0
SNAPSHOT_EVENTS = 200  # journal entries a new dashboard receives
CHART_POINTS = 300  # per-set history in a snapshot (five minutes)
SPARK_POINTS = 60  # per-destination history in a snapshot
SHUTDOWN_TIMEOUT = 2.0


class AdminServer:
    def __init__(self, balancer: BalancerView) -> None:
        self.balancer = balancer
        settings = balancer.config.admin
        self.guard = Guard(
            load_token(settings),
            allowed_hosts(settings, settings.host),
            balancer.recorder,
            balancer.now,
        )
        self.refused: Counter[str] = self.guard.refused  # reason -> requests refused
        self.meter = RateHistory()
        self.metrics = Metrics(balancer, self.refused)
        self.clients: set[asyncio.Queue[bytes | None]] = set()
        self.api = AdminApi(self)
        self.app = web.Application(middlewares=[self.guard.middleware])
        self.app.add_routes(self.api.routes())
        self._runner: web.AppRunner | None = None
        self._sampler: asyncio.Task[None] | None = None
        self._layout: object = None
        self._last_event = balancer.recorder.journal.last_id
        self.port: int | None = None

    # ---- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        settings = self.balancer.config.admin
        host, port = settings.address
        runner = web.AppRunner(
            self.app,
            access_log=None,
            logger=HttpErrorLog(self.guard),
            shutdown_timeout=SHUTDOWN_TIMEOUT,
        )
        await runner.setup()
        site = web.TCPSite(runner, host, port, reuse_address=True)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = _bound_port(runner, port)
        self.sample()
        self._sampler = asyncio.get_running_loop().create_task(self._sample_forever())
        shown = f"[{host}]" if ":" in host else host
        log.info("admin API, dashboard and metrics on http://%s:%d/", shown, self.port)
        if self.guard.token is None:
            log.warning("admin: no token configured: reads are open and changes are refused")
        if host in WILDCARDS and not settings.hosts:
            log.warning(
                "admin: listening on every address, but answering only for Host %s: "
                "name the others in [admin] hosts",
                ", ".join(sorted(self.guard.hosts)),
            )

    async def stop(self) -> None:
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampler
            self._sampler = None
        for queue in list(self.clients):
            _offer(queue, None)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def url(self) -> str:
        host = self.balancer.config.admin.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    def facts(self) -> AdminFacts:
        """What ``/api/status`` tells about this server."""
        return AdminFacts(self.port, self.guard.token is not None, self.refused)

    # ---- what a reload or an operator's change tells us ---------------------------------------
    def config_changed(self) -> None:
        """After a reload or a weight change: rebind metric children, reread the token and the
        Host names, and resend every dashboard its table."""
        self.metrics.bind()
        listen_host = self.balancer.started_config.admin.host  # the address stays until restart
        self.guard.hosts = allowed_hosts(self.balancer.config.admin, listen_host)
        try:
            self.guard.token = load_token(self.balancer.config.admin)
        except (OSError, ValueError) as exc:
            log.warning("admin: token not reloaded, the old one stays: %s", exc)
        self._layout = None
        self.push()

    # ---- sampling and pushing ----------------------------------------------------------------
    def attach(self, queue: asyncio.Queue[bytes | None]) -> None:
        """A new dashboard: its first message is the whole table."""
        sets = sets_json(self.balancer, self.meter)
        if not self.clients:  # the layout the next push compares with is this one
            self._layout = _layout(sets)
        queue.put_nowait(sse("snapshot", self.snapshot(sets)))
        self.clients.add(queue)

    def detach(self, queue: asyncio.Queue[bytes | None]) -> None:
        """A dashboard gone."""
        self.clients.discard(queue)

    async def _sample_forever(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time() + SAMPLE_INTERVAL
        while True:
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            next_at = max(next_at + SAMPLE_INTERVAL, loop.time())
            try:
                self.sample()
                self.push()
            except Exception:  # the admin side must never take the balancer down
                log.exception("admin: sampling failed")

    def sample(self) -> None:
        """Once a second: calls per second per destination, and the probe latency histogram."""
        balancer = self.balancer
        self.meter.sample(balancer.core.calls_totals(), balancer.wall(balancer.now()))
        self.metrics.observe_probes()

    def push(self) -> None:
        """Send every dashboard an update (a snapshot when the table's layout changed)."""
        journal = self.balancer.recorder.journal
        events = journal.after(self._last_event)
        self._last_event = journal.last_id
        if not self.clients:
            self._layout = None
            return
        sets = sets_json(self.balancer, self.meter)
        layout = _layout(sets)
        if layout != self._layout:
            self._layout = layout
            message = sse("snapshot", self.snapshot(sets))
        else:
            message = sse("tick", self._tick(sets, [e.to_json() for e in events]))
        for queue in list(self.clients):
            if not _offer(queue, message):
                _resync(queue, sse("snapshot", self.snapshot()))

    def snapshot(self, sets: list[JSON] | None = None) -> JSON:
        """Everything a dashboard draws: status, sets, recent events and the rate history."""
        balancer = self.balancer
        if sets is None:
            sets = sets_json(balancer, self.meter)
        meter = self.meter
        events = balancer.recorder.journal.after(0, SNAPSHOT_EVENTS)
        return {
            "status": status_json(balancer, meter, balancer.now(), self.facts()),
            "sets": sets,
            "events": [entry.to_json() for entry in events],
            "history": {
                "times": [round(t, 3) for t in list(meter.times)[-CHART_POINTS:]],
                "sets": {
                    s["name"]: _rounded(
                        meter.summed((d["uri"] for d in s["destinations"]), CHART_POINTS)
                    )
                    for s in sets
                },
                "destinations": {
                    d["uri"]: _rounded(meter.series(d["uri"], SPARK_POINTS))
                    for s in sets
                    for d in s["destinations"]
                },
            },
        }

    def _tick(self, sets: list[JSON], events: list[JSON]) -> JSON:
        meter = self.meter
        balancer = self.balancer
        last_time = meter.times[-1] if meter.times else None
        return {
            "t": last_time,
            "status": status_json(balancer, meter, balancer.now(), self.facts()),
            "sets": [
                {
                    "active_calls": s["active_calls"],
                    "cps": s["cps"],
                    "up": s["up"],
                    "sample": round(sum(_last(meter, d["uri"]) for d in s["destinations"]), 3),
                }
                for s in sets
            ],
            "destinations": [
                [
                    d["state"],
                    d["active_calls"],
                    d["cps"],
                    d["latency_ms"],
                    d["failures"],
                    d["since"],
                    d["cause"],
                    d["calls_total"],
                    round(_last(meter, d["uri"]), 3),
                ]
                for s in sets
                for d in s["destinations"]
            ],
            "events": events,
        }


def sse(event: str, data: Any) -> bytes:
    """One Server-Sent Events message."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _layout(sets: list[JSON]) -> object:
    return tuple(
        (
            s["name"],
            s["removed"],
            tuple(
                (d["uri"], d["weight"], d["priority"], d["max_calls"], d["removed"])
                for d in s["destinations"]
            ),
        )
        for s in sets
    )


def _last(meter: RateHistory, uri: str) -> float:
    series = meter.series(uri, 1)
    return series[0] if series else 0.0


def _rounded(values: list[float]) -> list[float]:
    return [round(v, 3) for v in values]


def _offer(queue: asyncio.Queue[bytes | None], message: bytes | None) -> bool:
    try:
        queue.put_nowait(message)
    except asyncio.QueueFull:
        return False
    return True


def _resync(queue: asyncio.Queue[bytes | None], snapshot: bytes) -> None:
    """A dashboard that fell behind: forget what it missed, send it the whole table again."""
    while not queue.empty():
        queue.get_nowait()
    queue.put_nowait(snapshot)


def _bound_port(runner: web.AppRunner, configured: int) -> int:
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return configured
