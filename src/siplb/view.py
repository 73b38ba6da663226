"""``ProxyView``: the proxy core and its stream pool read as plain values, the
``siplb.admin.view.CoreView`` the admin side sees. Everything is read on demand; nothing here
changes the core."""

from __future__ import annotations

from collections import Counter

from siplb.admin.view import DestinationReading, PendingLimits, StreamCounts, Traffic
from siplb.dispatch import SetSpec
from siplb.io.tcp import ConnectionPool
from siplb.proxy.admission import BanView
from siplb.proxy.core import Proxy


class ProxyView:
    def __init__(self, proxy: Proxy, pool: ConnectionPool) -> None:
        self._proxy = proxy
        self._pool = pool

    @property
    def node_id(self) -> str:
        return self._proxy.settings.node_id

    @property
    def accepting(self) -> bool:
        return self._proxy.accepting

    def sets(self) -> tuple[SetSpec, ...]:
        return self._proxy.dispatcher.sets()

    def uris(self) -> list[str]:
        return list(self._proxy.dispatcher.health)

    def destination(self, uri: str) -> DestinationReading | None:
        dispatcher = self._proxy.dispatcher
        try:
            snapshot = dispatcher.snapshot(uri)
        except KeyError:
            return None
        prober = self._proxy.prober
        latency = tuple(prober.latency.get(uri, ())) if prober is not None else ()
        answered = prober.answered.get(uri, 0) if prober is not None else 0
        return DestinationReading(
            snapshot, dispatcher.accounting.calls_total(uri), latency, answered
        )

    def calls_totals(self) -> dict[str, int]:
        dispatcher = self._proxy.dispatcher
        accounting = dispatcher.accounting
        return {uri: accounting.calls_total(uri) for uri in dispatcher.health}

    def probe_targets(self) -> frozenset[str]:
        return frozenset(spec.uri for spec in self._proxy.dispatcher.probe_targets())

    def traffic(self) -> Traffic:
        proxy = self._proxy
        admission = proxy.admission
        return Traffic(
            proxy.stats,
            proxy.requests_by_method,
            proxy.responses_by_class,
            len(proxy.servers),
            len(proxy.clients),
            len(proxy.dispatcher.accounting),
            proxy.pending,
            admission.drops if admission is not None else None,
        )

    @property
    def protects(self) -> bool:
        return self._proxy.admission is not None

    def bans(self, now: float) -> list[BanView]:
        admission = self._proxy.admission
        return admission.bans(now) if admission is not None else []

    def ban_count(self) -> int:
        admission = self._proxy.admission
        return admission.sizes()["bans"] if admission is not None else 0

    def is_trusted(self, host: str) -> bool:
        admission = self._proxy.admission
        return admission is not None and admission.is_trusted(host)

    def pending_limits(self, top: int) -> PendingLimits:
        proxy = self._proxy
        return PendingLimits(
            proxy.max_pending,
            proxy.max_pending_per_source,
            proxy.pending_by_source.most_common(top),
        )

    def streams(self) -> StreamCounts:
        pool = self._pool
        refused = Counter({str(reason): count for reason, count in pool.refused.items()})
        return StreamCounts(refused, pool.inbound, pool.outbound, pool.buffered)
