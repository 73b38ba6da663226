"""``/metrics``: Prometheus text exposition (metric names start with ``siplb_``).

Nothing here runs per packet. Counters the proxy core keeps anyway (requests by method,
responses by class, drops, parse errors, refusals by reason), the admission stage's, the stream
pool's, the admin guard's and the recorder's event counters are read when Prometheus scrapes;
gauges (calls, states, weights, bans, pending transactions, connections) are computed then too.
The one metric fed between scrapes, the probe latency histogram, has its children bound per
destination at config load (``bind``) and is fed once a second from the prober's samples
(``observe_probes``).

``workers = N``: worker 0 serves the metrics and sums the counters the others send it
(``Balancer.worker_counters``: proxy stats, so refusals by reason and internal errors too; the
admission drops and the pending count when a worker sends them, see ``views.refused_counts``).
Bans are shared by every worker, so worker 0's table is the whole; streams and the admin API
live in worker 0 alone.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from siplb import __version__
from siplb.sip.scalars import METHODS as KNOWN_METHODS

from .views import (
    ADMISSION_REASONS,
    DISPLAY_STATES,
    StreamCounts,
    admin_refused,
    ban_label,
    display_state,
    pending_transactions,
    refused_counts,
)

if TYPE_CHECKING:
    from siplb.app import Balancer
    from siplb.proxy.core import Proxy

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
# Method labels are the methods the parser knows; anything else a peer sends counts as "other".
METHODS = frozenset(KNOWN_METHODS.values())
MAX_REASONS = 50  # distinct parse-error reasons exposed; the rest are "other"
_DETAIL = re.compile(r"\s*\(.*|\s+\S*\d\S*|\s+'.*'")


def method_label(method: str) -> str:
    return method if method in METHODS else "other"


def reason_label(reason: str) -> str:
    """A parse error's fixed text, without the numbers and quotes that vary per message."""
    return _DETAIL.sub("", reason).strip() or "unknown"


class Metrics:
    def __init__(self, balancer: Balancer) -> None:
        self.balancer = balancer
        self.registry = CollectorRegistry(auto_describe=False)
        self.probe_latency = Histogram(
            "siplb_probe_latency_seconds",
            "Round-trip time of answered OPTIONS probes.",
            ["destination"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._children: dict[str, Histogram] = {}
        self._seen: dict[str, int] = {}
        self.registry.register(_Collector(balancer))
        self.bind()

    def bind(self) -> None:
        """At config load and reload: one latency child per probed destination."""
        proxy = self.balancer.proxy
        assert proxy is not None
        answered = proxy.prober.answered if proxy.prober is not None else Counter[str]()
        uris = {spec.uri for spec in proxy.dispatcher.probe_targets()}
        for uri in uris - self._children.keys():
            self._children[uri] = self.probe_latency.labels(uri)
            self._seen[uri] = answered.get(uri, 0)
        for uri in self._children.keys() - uris:
            del self._children[uri]
            del self._seen[uri]
            self.probe_latency.remove(uri)

    def observe_probes(self) -> None:
        """Feed the histogram with the probe answers timed since the last call."""
        proxy = self.balancer.proxy
        prober = proxy.prober if proxy is not None else None
        if prober is None:
            return
        for uri, child in self._children.items():
            count = prober.answered.get(uri, 0)
            new = count - self._seen[uri]
            if new <= 0:
                continue
            self._seen[uri] = count
            samples = list(prober.latency.get(uri, ()))
            for value in samples[-min(new, len(samples)) :] if samples else ():
                child.observe(value)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _Collector(Collector):
    """Everything read at scrape time."""

    def __init__(self, balancer: Balancer) -> None:
        self.balancer = balancer

    def collect(self) -> Iterator[Metric]:
        balancer = self.balancer
        proxy = balancer.proxy
        if proxy is None:
            return
        yield from self._process()
        yield from self._traffic()
        yield from self._destinations()
        yield from self._events()
        yield from self._protection()
        yield from self._streams()

    def _process(self) -> Iterator[Metric]:
        balancer = self.balancer
        info = GaugeMetricFamily(
            "siplb_build_info", "siplb version (always 1).", labels=["version"]
        )
        info.add_metric([__version__], 1)
        yield info
        yield GaugeMetricFamily(
            "siplb_start_time_seconds",
            "When this balancer started, in seconds since the epoch.",
            value=balancer.wall(balancer.started_at),
        )
        config = GaugeMetricFamily(
            "siplb_config_info", "The config in force (always 1).", labels=["file", "sha256"]
        )
        config.add_metric([balancer.config.source, balancer.config.digest], 1)
        yield config

    def _traffic(self) -> Iterator[Metric]:
        proxy = self.balancer.proxy
        assert proxy is not None
        traffic = _Traffic.of_workers(self.balancer.worker_counters()) or _Traffic.of_proxy(proxy)
        stats = traffic.stats
        requests = CounterMetricFamily(
            "siplb_requests", "SIP requests received, by method.", labels=["method"]
        )
        for method, count in _by_method(traffic.requests).items():
            requests.add_metric([method], count)
        yield requests
        responses = CounterMetricFamily(
            "siplb_responses",
            "SIP responses received, by CSeq method and status class.",
            labels=["method", "class"],
        )
        merged: Counter[tuple[str, str]] = Counter()
        for (method, klass), count in traffic.responses.items():
            merged[(method_label(method), f"{klass}xx")] += count
        for labels, count in merged.items():
            responses.add_metric(list(labels), count)
        yield responses
        local = CounterMetricFamily(
            "siplb_local_responses",
            "Error responses siplb answered itself, by status code.",
            labels=["status"],
        )
        for key, count in stats.items():
            if key.startswith("local:"):
                local.add_metric([key[6:]], count)
        yield local
        yield CounterMetricFamily(
            "siplb_retransmissions",
            "Request retransmissions absorbed by server transactions.",
            value=stats.get("retransmissions", 0),
        )
        transactions = GaugeMetricFamily(
            "siplb_transactions", "Live SIP transactions, by side.", labels=["side"]
        )
        transactions.add_metric(["server"], traffic.servers)
        transactions.add_metric(["client"], traffic.clients)
        yield transactions
        yield GaugeMetricFamily(
            "siplb_calls_active",
            "Calls in setup or confirmed, on every destination.",
            value=traffic.calls,
        )
        probes = CounterMetricFamily("siplb_probes", "OPTIONS probes by result.", labels=["result"])
        probes.add_metric(["ok"], stats.get("probes_ok", 0))
        probes.add_metric(["failed"], stats.get("probes_failed", 0))
        yield probes
        errors = CounterMetricFamily(
            "siplb_parse_errors", "Messages that did not parse, by reason.", labels=["reason"]
        )
        reasons: Counter[str] = Counter()
        for key, count in stats.items():
            if key.startswith("malformed:"):
                reasons[reason_label(key[10:])] += count
        for reason, count in _capped(reasons).items():
            errors.add_metric([reason], count)
        yield errors
        yield CounterMetricFamily(
            "siplb_internal_errors",
            "Messages whose handling hit a bug in siplb (logged, never fatal).",
            value=stats.get("internal_errors", 0),
        )

    def _destinations(self) -> Iterator[Metric]:
        balancer = self.balancer
        proxy = balancer.proxy
        assert proxy is not None
        dispatcher = proxy.dispatcher
        labels = ["set", "destination"]
        state = GaugeMetricFamily(
            "siplb_destination_state",
            "1 for the state a destination is in (drained: draining with no call left).",
            labels=[*labels, "state"],
        )
        active = GaugeMetricFamily(
            "siplb_destination_active_calls", "Calls in setup or confirmed.", labels=labels
        )
        max_calls = GaugeMetricFamily(
            "siplb_destination_max_calls", "The configured call cap.", labels=labels
        )
        weight = GaugeMetricFamily("siplb_destination_weight", "Weight in its set.", labels=labels)
        calls = CounterMetricFamily(
            "siplb_destination_calls", "Calls answered with a 2xx.", labels=labels
        )
        failures = CounterMetricFamily(
            "siplb_destination_failures",
            "Probe and traffic failures seen.",
            labels=labels,
        )
        for spec in dispatcher.sets():
            for dest in spec.destinations:
                uri = dest.uri
                try:
                    snap = dispatcher.snapshot(uri)
                except KeyError:
                    continue
                pair = [spec.name, uri]
                shown = display_state(snap)
                for name in DISPLAY_STATES:
                    state.add_metric([*pair, name], 1.0 if name == shown else 0.0)
                active.add_metric(pair, snap.active_calls)
                if dest.max_calls is not None:
                    max_calls.add_metric(pair, dest.max_calls)
                weight.add_metric(pair, dest.weight)
                calls.add_metric(pair, dispatcher.accounting.calls_total(uri))
                failures.add_metric(pair, snap.total_failures)
        yield from (state, active, max_calls, weight, calls, failures)

    def _events(self) -> Iterator[Metric]:
        recorder = self.balancer.recorder
        failovers = CounterMetricFamily(
            "siplb_failovers",
            "Requests moved to the next destination, by the destination they left.",
            labels=["set", "destination"],
        )
        for (set_name, uri), count in recorder.failovers.items():
            failovers.add_metric([set_name, uri], count)
        yield failovers
        drops = CounterMetricFamily(
            "siplb_dropped", "Messages dropped without an answer, by reason.", labels=["reason"]
        )
        for reason, count in _capped(recorder.drops).items():
            drops.add_metric([reason], count)
        yield drops
        reloads = CounterMetricFamily(
            "siplb_reloads", "Config reloads, by result.", labels=["result"]
        )
        for result in ("ok", "refused"):
            reloads.add_metric([result], recorder.reloads.get(result, 0))
        yield reloads
        yield CounterMetricFamily(
            "siplb_admin_refused",
            "Admin requests refused for a missing or wrong token.",
            value=recorder.auth_refusals,
        )

    def _protection(self) -> Iterator[Metric]:
        balancer = self.balancer
        proxy = balancer.proxy
        assert proxy is not None
        workers = balancer.worker_counters()
        admission = proxy.admission
        refused = refused_counts(balancer, workers)
        if admission is not None:  # the admission reasons from the start, so rate() sees all
            for reason in sorted(ADMISSION_REASONS):
                refused.setdefault(reason, 0)
        yield _by_label(
            "siplb_requests_refused",
            "Requests refused (dropped or answered with an error) before any transaction, "
            "by reason.",
            refused,
        )
        yield GaugeMetricFamily(
            "siplb_bans_active",
            "Sources banned now (a ban is lifted within a second of its end).",
            value=admission.sizes()["bans"] if admission is not None else 0,
        )
        bans: Counter[str] = Counter()
        for reason, count in balancer.recorder.bans.items():
            bans[ban_label(reason)] += count
        yield _by_label("siplb_bans", "Bans made or made longer, by reason.", bans)
        yield GaugeMetricFamily(
            "siplb_pending_transactions",
            "Server transactions waiting for their final answer.",
            value=pending_transactions(balancer, workers),
        )

    def _streams(self) -> Iterator[Metric]:
        balancer = self.balancer
        streams = StreamCounts.of(balancer.pool)
        yield _by_label(
            "siplb_stream_connections_refused",
            "TCP and TLS connections refused or closed by a bound, by reason.",
            streams.refused,
        )
        connections = GaugeMetricFamily(
            "siplb_stream_connections", "Open TCP and TLS connections.", labels=["direction"]
        )
        connections.add_metric(["inbound"], streams.inbound)
        connections.add_metric(["outbound"], streams.outbound)
        yield connections
        yield GaugeMetricFamily(
            "siplb_stream_buffered_bytes",
            "Bytes of partial messages held for all TCP and TLS connections.",
            value=streams.buffered,
        )
        yield _by_label(
            "siplb_admin_requests_refused",
            "Admin API requests refused, by reason (wrong host, missing or wrong token ...).",
            admin_refused(balancer),
        )


def _by_label(name: str, documentation: str, counts: Counter[str]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=["reason"])
    for reason, count in _capped(counts).items():
        family.add_metric([reason], count)
    return family


@dataclass(slots=True)
class _Traffic:
    """The counters ``_traffic`` reports: one proxy's, or the sum over worker processes."""

    stats: Counter[str]
    requests: Counter[str]
    responses: Counter[tuple[str, int]]
    servers: int
    clients: int
    calls: int

    @classmethod
    def of_proxy(cls, proxy: Proxy) -> _Traffic:
        return cls(
            proxy.stats,
            proxy.requests_by_method,
            proxy.responses_by_class,
            len(proxy.servers),
            len(proxy.clients),
            len(proxy.dispatcher.accounting),
        )

    @classmethod
    def of_workers(cls, workers: list[dict[str, Any]]) -> _Traffic | None:
        """The sum of every worker's counters (``Balancer.worker_counters``); None for one."""
        if not workers:
            return None
        total = cls(Counter(), Counter(), Counter(), 0, 0, 0)
        for worker in workers:
            total.stats.update(worker["stats"])
            total.requests.update(worker["requests"])
            for method, klass, count in worker["responses"]:
                total.responses[(method, klass)] += count
            total.servers += worker["transactions"][0]
            total.clients += worker["transactions"][1]
            total.calls += worker["calls"]
        return total


def _by_method(counts: Counter[str]) -> Counter[str]:
    out: Counter[str] = Counter()
    for key, count in counts.items():
        out[method_label(key)] += count
    return out


def _capped(counts: Counter[str]) -> Counter[str]:
    """The MAX_REASONS most frequent keys; the rest summed as "other"."""
    if len(counts) <= MAX_REASONS:
        return counts
    out: Counter[str] = Counter(dict(counts.most_common(MAX_REASONS)))
    out["other"] += sum(counts.values()) - sum(out.values())
    return out
