"""Destination names in DNS: the lookups RFC 3263 asks for, with dnspython's asyncio resolver,
and the task that keeps their answers fresh. The rules (what to look up, what the answers make of
a set, how long they are kept) are in ``siplb.dispatch.names``; this module only asks the
network and reports.

Nothing here is on the per-packet path: the proxy core sees plain IP destinations, installed
through the same path as a reload (``Balancer.dns_changed``) when an answer changes. A lookup's
every failure (timeout, SERVFAIL, refused, a broken answer) is an input, never an exception:
the name keeps its last good answer (``NameTable.failed``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import dns.asyncresolver
import dns.exception
import dns.nameserver
import dns.resolver

from siplb.dispatch.names import (
    Answer,
    NameStatusChanged,
    NameTable,
    Naptr,
    Srv,
    Target,
    address_targets,
    default_port,
    default_transport,
    naptr_candidates,
    queries,
    srv_candidates,
    srv_targets,
    uses_naptr,
)
from siplb.dispatch.spec import Query, SetSpec, Transport
from siplb.logs import log_fields
from siplb.settings import DnsSettings

log = logging.getLogger("siplb.dns")

# One name is never looked up more often than this, however small the floor.
MIN_WAIT = 0.05


class LookupFailed(Exception):
    """The DNS server did not give an answer (timeout, SERVFAIL, refused): not "no records"."""


def make_resolver(settings: DnsSettings) -> dns.asyncresolver.Resolver:
    """The servers of ``[dns]`` (with their ports), else those of /etc/resolv.conf."""
    if settings.servers:
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = [
            dns.nameserver.Do53Nameserver(host, port) for host, port in settings.servers
        ]
    else:
        try:
            resolver = dns.asyncresolver.Resolver()
        except dns.exception.DNSException as exc:  # no /etc/resolv.conf: every lookup fails
            log.error(
                "DNS: cannot read the system's resolver settings (%s); set [dns] servers", exc
            )
            resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.timeout = settings.timeout
    resolver.lifetime = settings.timeout
    resolver.cache = None  # the table below is the cache, with its floor and ceiling
    return resolver


class Lookup:
    """One RFC 3263 resolution of a ``Query``: records in, an ``Answer`` out (the smallest TTL
    of the records it used), or ``LookupFailed``."""

    def __init__(self, resolver: dns.asyncresolver.Resolver) -> None:
        self._resolver = resolver
        self._ttl = float("inf")

    async def run(self, query: Query) -> Answer:
        targets = await self._targets(query)
        ttl = self._ttl if self._ttl != float("inf") else 0.0
        return Answer(targets, ttl)

    async def _targets(self, query: Query) -> tuple[Target, ...]:
        if query.srv:  # a set's SRV name: nothing else
            assert query.transport is not None  # the config read it from the name
            return await self._srv(query.name, query.transport)
        if query.port is not None:  # RFC 3263 4.2: a port, so A/AAAA only
            return await self._addresses(query.name, query.port, default_transport(query))
        candidates = []
        if uses_naptr(query):
            candidates = naptr_candidates(await self._naptr(query.name), query.secure)
        for transport, srv_name in candidates or srv_candidates(query):
            targets = await self._srv(srv_name, transport)
            if targets:
                return targets
        transport = default_transport(query)
        return await self._addresses(query.name, default_port(transport), transport)

    async def _srv(self, srv_name: str, transport: Transport) -> tuple[Target, ...]:
        records = [
            Srv(r.priority, r.weight, r.port, _name(r.target))
            for r in await self._ask(srv_name, "SRV")
        ]
        if [r.target for r in records] == [""]:
            return ()  # RFC 2782: "." alone, the service is not available at this domain
        hosts = {r.target for r in records if r.target}
        found = await asyncio.gather(*(self._hosts(host) for host in sorted(hosts)))
        return srv_targets(records, dict(zip(sorted(hosts), found, strict=True)), transport)

    async def _naptr(self, name: str) -> list[Naptr]:
        return [
            Naptr(r.order, r.preference, _text(r.flags), _text(r.service), _name(r.replacement))
            for r in await self._ask(name, "NAPTR")
        ]

    async def _addresses(self, name: str, port: int, transport: Transport) -> tuple[Target, ...]:
        return address_targets(await self._hosts(name), port, transport)

    async def _hosts(self, name: str) -> list[str]:
        v4, v6 = await asyncio.gather(self._ask(name, "A"), self._ask(name, "AAAA"))
        return [r.address for r in (*v4, *v6)]

    async def _ask(self, name: str, rdtype: str) -> Sequence[Any]:
        """The records of one type; [] for NXDOMAIN or no data (a step of RFC 3263 that does
        not apply); LookupFailed when the server gives no answer."""
        try:
            answer = await self._resolver.resolve(name + ".", rdtype, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except dns.resolver.NoNameservers as exc:
            raise LookupFailed(
                f"{rdtype} {name}: no server answered ({_first_error(exc)})"
            ) from None
        except dns.exception.Timeout:
            raise LookupFailed(f"{rdtype} {name}: timed out") from None
        except dns.exception.DNSException as exc:
            raise LookupFailed(f"{rdtype} {name}: {exc}") from None
        if answer.rrset is None:  # pragma: no cover - raise_on_no_answer covers it
            return []
        self._ttl = min(self._ttl, float(answer.rrset.ttl))
        return list(answer.rrset)


def _name(value: object) -> str:
    return str(value).lower().removesuffix(".")


def _text(value: object) -> str:
    return value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)


def _first_error(exc: dns.resolver.NoNameservers) -> str:
    errors = exc.kwargs.get("errors") or []
    return str(errors[0][3]) if errors else "no servers"


class NameResolver:
    """The lookups a config needs (``track``), looked up again as their TTLs run out, by one
    task; ``on_change`` is called when some answer's targets changed, ``on_status`` for each
    change of a name's status (logged here once per change)."""

    def __init__(
        self,
        settings: DnsSettings,
        clock: Callable[[], float],
        on_change: Callable[[], None],
        on_status: Callable[[NameStatusChanged], None] | None = None,
    ) -> None:
        self.settings = settings
        self.table = NameTable(settings.ttl_floor, settings.ttl_ceiling)
        self._resolver = make_resolver(settings)
        self._clock = clock
        self._on_change = on_change
        self._on_status = on_status
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.lookups = 0
        self.failures = 0

    def track(self, wanted: Iterable[Query]) -> None:
        """The names of a (new) config: new ones are looked up at once, gone ones forgotten."""
        self.table.track(wanted, self._clock())
        self._wake.set()

    async def refresh(self, within: float | None = None) -> bool:
        """Look up every name that is due, at once (each bounded by ``[dns] timeout``, the
        whole by ``within``); True when some answer's targets changed."""
        due = self.table.due(self._clock())
        if not due:
            return False
        tasks = [asyncio.ensure_future(Lookup(self._resolver).run(q)) for q in due]
        done, pending = await asyncio.wait(tasks, timeout=within)
        for task in pending:
            task.cancel()
        changed = False
        for query, task in zip(due, tasks, strict=True):
            changed |= self._settle(query, task, task in done)
        return changed

    def _settle(self, query: Query, task: asyncio.Future[Answer], finished: bool) -> bool:
        now = self._clock()
        self.lookups += 1
        error = "" if finished else "timed out"
        if finished and task.exception() is not None:
            exc = task.exception()
            error = str(exc) if isinstance(exc, LookupFailed) else f"{type(exc).__name__}: {exc}"
        if error:
            self.failures += 1
            self._status(self.table.failed(query, error, now))
            return False
        changed, status = self.table.answered(query, task.result(), now)
        self._status(status)
        if changed:
            uris = [t.uri for t in task.result().targets]
            log_fields(
                log,
                logging.INFO,
                "DNS %s: %s",
                query.label,
                " ".join(uris),
                always=True,
                event="dns",
                name=query.label,
                destinations=uris,
            )
        return changed

    def _status(self, change: NameStatusChanged | None) -> None:
        if change is None:
            return
        log_status(change)
        if self._on_status is not None:
            self._on_status(change)

    @property
    def running(self) -> bool:
        return self._task is not None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="dns-refresh")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            try:
                if await self.refresh():
                    self._on_change()
            except Exception:  # a bug, never DNS's doing: keep the answers, try again later
                log.exception("DNS refresh failed")
                await asyncio.sleep(self.settings.ttl_floor)
            next_due = self.table.next_due()
            self._wake.clear()
            wait = None if next_due is None else max(MIN_WAIT, next_due - self._clock())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)


STATUS_LOG = {
    "ok": (logging.INFO, "DNS %s answers again (%s)"),
    "stale": (logging.WARNING, "DNS %s: lookup failed (%s); keeping the last good answer"),
    "unresolved": (
        logging.WARNING,
        "DNS %s: no answer (%s); no destination from it until it has one",
    ),
}


def log_status(change: NameStatusChanged) -> None:
    label, detail = change.query.label, change.detail
    fields = {"old": change.old.value, "new": change.new.value, "cause": detail}
    if change.old.value == "pending" and change.new.value == "ok":
        message = "DNS %s resolved (%s)"
        log_fields(log, logging.INFO, message, label, detail, event="dns", name=label, **fields)
        return
    level, message = STATUS_LOG.get(change.new.value, (logging.INFO, "DNS %s: %s"))
    log_fields(log, level, message, label, detail, always=True, event="dns", name=label, **fields)


async def unresolved(settings: DnsSettings, sets: Sequence[SetSpec]) -> list[str]:
    """``siplb check``: a line for each name of the sets that does not resolve now (the DNS
    server may be down at check time: a warning, not a problem of the file)."""
    try:
        resolver = make_resolver(settings)
    except dns.exception.DNSException as exc:  # pragma: no cover - make_resolver catches it
        return [f"[dns]: {exc}"]
    wanted = queries(sets)
    found = await asyncio.gather(
        *(_try(Lookup(resolver), query) for query in wanted), return_exceptions=False
    )
    failed = dict(zip(wanted, found, strict=True))
    out = []
    for index, spec in enumerate(sets):
        for name in spec.names:
            error = failed[name.query]
            if error:
                key = "srv" if name.query.srv else "destinations"
                out.append(f"sets[{index}].{key} {name.text!r} does not resolve: {error}")
    return out


async def _try(lookup: Lookup, query: Query) -> str:
    try:
        answer = await lookup.run(query)
    except LookupFailed as exc:
        return str(exc)
    return "" if answer.targets else "no address in the answer"
