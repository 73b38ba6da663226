"""``/metrics``: Prometheus text exposition (metric names start with ``siplb_``).

Nothing here runs per packet. Counters the proxy core keeps anyway (requests by method,
responses by class, drops, parse errors, refusals by reason), the admission stage's, the stream
pool's, the admin guard's and the recorder's event counters are read when Prometheus scrapes;
gauges (calls, states, weights, bans, pending transactions, connections) are computed then too.
The one metric fed between scrapes, the probe latency histogram, has its children bound per
destination at config load (``bind``) and is fed once a second from the prober's samples
(``observe_probes``).

``workers = N``: worker 0 serves the metrics and sums the counters the others send it
(``BalancerView.worker_counters``: proxy stats, so refusals by reason and internal errors too; the
admission drops and the pending count when a worker sends them, see ``views.refused_counts``).
Bans are shared by every worker, so worker 0's table is the whole; streams and the admin API
live in worker 0 alone.

``siplb_cluster_*`` are there only with ``[cluster]`` (a balancer alone has no such families, so
an alert on them cannot fire on a node that was never clustered). They are this member's view
(worker 0's with ``workers = N``): the members it sees live and the calls they published, its
Redis link, its node-to-node channel.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from siplb import __version__
from siplb.io.capture import DROPPED as CAPTURE_DROPPED
from siplb.io.capture import SENT as CAPTURE_SENT
from siplb.sip.scalars import METHODS as KNOWN_METHODS

from .media import media_metrics
from .view import BalancerView, ClusterReading, Traffic, WorkerCounters
from .views import (
    ADMISSION_REASONS,
    DISPLAY_STATES,
    ban_label,
    display_state,
    pending_transactions,
    refused_counts,
    skewed,
)

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
    """``admin_refused``: the admin guard's refusals by reason (a live counter)."""

    def __init__(self, balancer: BalancerView, admin_refused: Counter[str]) -> None:
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
        self.registry.register(_Collector(balancer, admin_refused))
        self.bind()

    def bind(self) -> None:
        """At config load and reload: one latency child per probed destination."""
        core = self.balancer.core
        uris = core.probe_targets()
        for uri in uris - self._children.keys():
            reading = core.destination(uri)
            self._children[uri] = self.probe_latency.labels(uri)
            self._seen[uri] = reading.answered if reading is not None else 0
        for uri in self._children.keys() - uris:
            del self._children[uri]
            del self._seen[uri]
            self.probe_latency.remove(uri)

    def observe_probes(self) -> None:
        """Feed the histogram with the probe answers timed since the last call."""
        core = self.balancer.core
        for uri, child in self._children.items():
            reading = core.destination(uri)
            if reading is None:
                continue
            count = reading.answered
            new = count - self._seen[uri]
            if new <= 0:
                continue
            self._seen[uri] = count
            samples = reading.latency
            for value in samples[-min(new, len(samples)) :] if samples else ():
                child.observe(value)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _Collector(Collector):
    """Everything read at scrape time."""

    def __init__(self, balancer: BalancerView, admin_refused: Counter[str]) -> None:
        self.balancer = balancer
        self.admin_refused = admin_refused

    def collect(self) -> Iterator[Metric]:
        yield from self._process()
        yield from self._traffic()
        yield from self._destinations()
        yield from self._events()
        yield from self._protection()
        yield from self._streams()
        yield from dns_metrics(self.balancer)
        reading = self.balancer.cluster()
        if reading is not None:
            yield from cluster_metrics(reading)
        media = self.balancer.media_view()
        if media is not None:
            yield from media_metrics(media)

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
        balancer = self.balancer
        traffic = of_workers(balancer.worker_counters()) or balancer.core.traffic()
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
        anchoring = CounterMetricFamily(
            "siplb_media_anchoring_events",
            "Media anchoring in the proxy core (calls anchored, engine commands, failures).",
            labels=["event"],
        )
        for key, count in stats.items():
            if key.startswith("media_"):
                anchoring.add_metric([key[6:]], count)
        yield anchoring
        if balancer.config.capture is not None or CAPTURE_SENT in stats:
            yield from capture_metrics(stats)

    def _destinations(self) -> Iterator[Metric]:
        core = self.balancer.core
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
        for spec in core.sets():
            for dest in spec.destinations:
                uri = dest.uri
                reading = core.destination(uri)
                if reading is None:
                    continue
                snap = reading.snapshot
                pair = [spec.name, uri]
                shown = display_state(snap)
                for name in DISPLAY_STATES:
                    state.add_metric([*pair, name], 1.0 if name == shown else 0.0)
                active.add_metric(pair, snap.active_calls)
                if dest.max_calls is not None:
                    max_calls.add_metric(pair, dest.max_calls)
                weight.add_metric(pair, dest.weight)
                calls.add_metric(pair, reading.calls_total)
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
        core = balancer.core
        workers = balancer.worker_counters()
        refused = refused_counts(balancer, workers)
        if core.protects:  # the admission reasons from the start, so rate() sees all
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
            value=core.ban_count(),
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
        streams = self.balancer.core.streams()
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
            self.admin_refused,
        )


DNS_STATUSES = ("pending", "ok", "stale", "unresolved")


def dns_metrics(balancer: BalancerView) -> Iterator[Metric]:
    """The DNS names the sets use (none: no such families): each one's status (1 for the
    current one; "stale": the last lookup failed and the last good answer is kept) and how many
    addresses its answer in use has."""
    readings = balancer.dns_names()
    if not readings:
        return
    status = GaugeMetricFamily(
        "siplb_dns_name_status",
        "A destination name's lookup status (1 for the current one).",
        labels=["name", "status"],
    )
    addresses = GaugeMetricFamily(
        "siplb_dns_name_addresses",
        "Addresses in a destination name's answer in use.",
        labels=["name"],
    )
    for reading in readings:
        name = reading.query.label
        for value in DNS_STATUSES:
            status.add_metric([name, value], 1.0 if reading.status == value else 0.0)
        addresses.add_metric([name], float(len(reading.targets)))
    yield status
    yield addresses


def cluster_metrics(reading: ClusterReading) -> Iterator[Metric]:
    """``siplb_cluster_*``: this member's view of its cluster."""
    live = reading.live()
    yield GaugeMetricFamily(
        "siplb_cluster_members", "Members (node workers) seen live.", value=len(live)
    )
    yield GaugeMetricFamily(
        "siplb_cluster_nodes",
        "Nodes with a member seen live.",
        value=len({member.node for member in live}),
    )
    yield GaugeMetricFamily(
        "siplb_cluster_calls",
        "Live calls in the cluster, as the live members published them.",
        value=reading.calls(),
    )
    per_member = GaugeMetricFamily(
        "siplb_cluster_member_calls",
        "Live calls each live member published.",
        labels=["node", "member"],
    )
    for member in live:
        per_member.add_metric([member.node, member.tag], member.calls)
    yield per_member
    yield GaugeMetricFamily(
        "siplb_cluster_config_skew",
        "Live members running another config than this one.",
        value=skewed(reading),
    )
    redis = reading.redis
    yield GaugeMetricFamily(
        "siplb_cluster_redis_up", "1 when the last batch reached Redis.", value=int(redis.up)
    )
    yield CounterMetricFamily(
        "siplb_cluster_redis_errors", "Batches that did not reach Redis.", value=redis.errors
    )
    yield CounterMetricFamily(
        "siplb_cluster_redis_reconnects",
        "Times the Redis link came back after it was down.",
        value=redis.reconnects,
    )
    channel = reading.channel
    yield CounterMetricFamily(
        "siplb_cluster_handed_over",
        "Datagrams sent to the member that owns them.",
        value=channel.handed_over,
    )
    yield CounterMetricFamily(
        "siplb_cluster_taken_over",
        "Datagrams another member handed over, handled here.",
        value=channel.taken_over,
    )
    yield CounterMetricFamily(
        "siplb_cluster_setups_adopted",
        "Calls in setup of a node gone, continued here (anycast).",
        value=channel.setups_adopted,
    )
    rejected = CounterMetricFamily(
        "siplb_cluster_channel_rejected",
        "Node-to-node frames dropped, by reason (forged, replayed, stale, malformed).",
        labels=["reason"],
    )
    for reason, count in channel.rejected().items():
        rejected.add_metric([reason], count)
    yield rejected
    yield CounterMetricFamily(
        "siplb_cluster_channel_unreachable",
        "Node-to-node frames not sent: the member's address was not known.",
        value=channel.unreachable,
    )


def capture_metrics(stats: Counter[str]) -> Iterator[Metric]:
    """``[capture]`` (``siplb.io.capture``): HEP packets sent to the collector, and captured
    messages dropped by reason."""
    yield CounterMetricFamily(
        "siplb_capture_sent",
        "SIP messages sent to the HEP collector.",
        value=stats.get(CAPTURE_SENT, 0),
    )
    dropped = Counter(
        {
            key[len(CAPTURE_DROPPED) :]: n
            for key, n in stats.items()
            if key.startswith(CAPTURE_DROPPED)
        }
    )
    yield _by_label(
        "siplb_capture_dropped",
        "Captured SIP messages not sent to the collector, by reason.",
        dropped,
    )


def _by_label(name: str, documentation: str, counts: Counter[str]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=["reason"])
    for reason, count in _capped(counts).items():
        family.add_metric([reason], count)
    return family


def of_workers(workers: WorkerCounters) -> Traffic | None:
    """The sum of every worker's counters (``BalancerView.worker_counters``); None for one."""
    if not workers:
        return None
    stats: Counter[str] = Counter()
    requests: Counter[str] = Counter()
    responses: Counter[tuple[str, int]] = Counter()
    for worker in workers:
        stats.update(worker["stats"])
        requests.update(worker["requests"])
        for method, klass, count in worker["responses"]:
            responses[(method, klass)] += count
    return Traffic(
        stats,
        requests,
        responses,
        sum(worker["transactions"][0] for worker in workers),
        sum(worker["transactions"][1] for worker in workers),
        sum(worker["calls"] for worker in workers),
        sum(int(worker.get("pending", 0)) for worker in workers),
        None,
    )


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
