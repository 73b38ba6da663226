"""Destinations by DNS name (RFC 3263, RFC 2782): which lookups, in which order, and what their
answers make of a set. Pure: the shell (``siplb.io.resolver``) does the lookups, feeds the
records in, and installs the sets this module builds through the same path as a reload.

The rules, written once:

1. **Lookups** (RFC 3263 4.1, 4.2). A URI with a port (``sip:pbx1.internal:5060``): A/AAAA of
   the host, the URI's transport (udp; tls for sips). With a transport but no port: SRV for that
   transport, else A/AAAA on the default port. With neither: NAPTR first (services ``SIP+D2U``,
   ``SIP+D2T``, ``SIPS+D2T``; sips only the last), by order then preference; no usable NAPTR:
   SRV ``_sip._udp`` then ``_sip._tcp`` (sips: ``_sips._tcp``), the first that answers; no SRV:
   A/AAAA on 5060 (5061) over udp (tls). A set's ``srv = "_sip._udp.example.com"``: that SRV
   name, its transport read from the name.
2. **Targets**. Each address a lookup answers becomes a destination of its own,
   ``sip:<ip>:<port>`` (``;transport=tcp|tls``), carrying the name it came from
   (``DestinationSpec.name``): health, calls, drains and the API work per address, and an
   address stays one destination however many names lead to it in a set (the first wins; a
   configured destination wins over a resolved one).
3. **Priorities and weights** (RFC 2782). In a ``srv`` set, a record's priority is the
   destination's ``priority`` (lower first, the set's default algorithm is "priority") and its
   weight the destination's ``weight`` (0 counts as 1). A named URI destination answered by SRV
   keeps its configured priority for the best SRV priority, one more for each worse level, and
   takes the records' weights; answered by A/AAAA, every address gets the configured weight and
   priority. ``max_calls`` and ``attrs`` apply to each address. An address of an IP version
   no listener has (AAAA on an IPv4-only balancer) is left out.
4. **Cache** (``NameTable``). An answer is kept for its smallest TTL, clamped to
   ``[ttl_floor, ttl_ceiling]``, then looked up again. A lookup that fails (timeout, SERVFAIL,
   refused) or answers nothing (NXDOMAIN, no records) keeps the last good answer and is
   retried after ``ttl_floor``; a name never answered has no destination until it is. Each
   change of a name's status is returned once (``NameStatusChanged``), not per retry.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

from siplb.dispatch.spec import DestinationSpec, NameSpec, Query, SetSpec, Transport

SIP_PORT = 5060  # RFC 3261 19.1.2
SIPS_PORT = 5061

# RFC 3263 4.1: NAPTR services and the SRV prefixes of each transport
NAPTR_SERVICES: dict[str, Transport] = {"SIP+D2U": "udp", "SIP+D2T": "tcp", "SIPS+D2T": "tls"}
SRV_PREFIX: dict[Transport, str] = {"udp": "_sip._udp.", "tcp": "_sip._tcp.", "tls": "_sips._tcp."}
SRV_ORDER: tuple[Transport, ...] = ("udp", "tcp")  # no NAPTR: the first SRV that answers


@dataclass(frozen=True, slots=True)
class Naptr:
    """A NAPTR record (RFC 3403) as the resolver read it."""

    order: int
    preference: int
    flags: str
    service: str
    replacement: str  # lower case, no trailing dot


@dataclass(frozen=True, slots=True)
class Srv:
    """An SRV record (RFC 2782)."""

    priority: int
    weight: int
    port: int
    target: str  # lower case, no trailing dot; "" is RFC 2782's "." (no service here)


@dataclass(frozen=True, slots=True)
class Target:
    """One address an answer gives: where, over what, and with which SRV rank."""

    host: str  # IP literal, IPv6 without brackets
    port: int
    transport: Transport
    priority: int = 0  # the SRV record's (0 for A/AAAA)
    weight: int = 1  # the SRV record's (1 for A/AAAA)
    via_srv: bool = False

    @property
    def uri(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        suffix = "" if self.transport == "udp" else f";transport={self.transport}"
        return f"sip:{host}:{self.port}{suffix}"


@dataclass(frozen=True, slots=True)
class Answer:
    """A lookup's usable result: its targets in order and the TTL it may be kept for."""

    targets: tuple[Target, ...]
    ttl: float


# ---- rule 1: lookups -----------------------------------------------------------------------------
def default_port(transport: Transport) -> int:
    return SIPS_PORT if transport == "tls" else SIP_PORT


def default_transport(query: Query) -> Transport:
    """RFC 3263 4.1: a URI naming no transport and no NAPTR/SRV: udp, tls for sips."""
    return query.transport or ("tls" if query.secure else "udp")


def srv_transport(srv_name: str) -> Transport | None:
    """The transport an SRV owner name stands for (``_sip._udp.x`` -> udp), or None."""
    lower = srv_name.lower()
    for transport, prefix in SRV_PREFIX.items():
        if lower.startswith(prefix) and len(lower) > len(prefix):
            return transport
    return None


def naptr_candidates(records: Iterable[Naptr], secure: bool) -> list[tuple[Transport, str]]:
    """RFC 3263 4.1: the SRV names to try, from the NAPTR records we can use, in order."""
    usable = [
        r
        for r in records
        if r.flags.lower() == "s"
        and r.service.upper() in NAPTR_SERVICES
        and (not secure or NAPTR_SERVICES[r.service.upper()] == "tls")
        and r.replacement
    ]
    usable.sort(key=lambda r: (r.order, r.preference))
    return [(NAPTR_SERVICES[r.service.upper()], r.replacement) for r in usable]


def srv_candidates(query: Query) -> list[tuple[Transport, str]]:
    """RFC 3263 4.1: the SRV names to try without NAPTR (a URI with a transport: that one)."""
    if query.transport is not None:
        transports: Sequence[Transport] = (query.transport,)
    else:
        transports = ("tls",) if query.secure else SRV_ORDER
    return [(t, SRV_PREFIX[t] + query.name) for t in transports]


def uses_naptr(query: Query) -> bool:
    return not query.srv and query.port is None and query.transport is None


def uses_srv(query: Query) -> bool:
    return query.srv or query.port is None


# ---- rule 2 and 3: targets and destinations ------------------------------------------------------
def srv_targets(
    records: Iterable[Srv], addresses: Mapping[str, Sequence[str]], transport: Transport
) -> tuple[Target, ...]:
    """The addresses of SRV records in RFC 2782 order (priority, then heavier weight first);
    a target with no address is left out; a lone "." record means no service at all."""
    ordered = sorted(records, key=lambda r: (r.priority, -r.weight, r.target, r.port))
    return _unique(
        Target(host, record.port, transport, record.priority, record.weight, via_srv=True)
        for record in ordered
        for host in sorted(addresses.get(record.target, ()))
    )


def address_targets(hosts: Iterable[str], port: int, transport: Transport) -> tuple[Target, ...]:
    """A/AAAA answers: every address on one port and transport, in a stable order."""
    return _unique(Target(host, port, transport) for host in sorted(hosts))


def _unique(targets: Iterable[Target]) -> tuple[Target, ...]:
    first: dict[str, Target] = {}
    for target in targets:
        first.setdefault(target.uri, target)
    return tuple(first.values())


def destination_specs(spec: NameSpec, targets: Sequence[Target]) -> tuple[DestinationSpec, ...]:
    """Rule 3: the destinations a name's targets become."""
    ranks = {p: rank for rank, p in enumerate(sorted({t.priority for t in targets}))}
    out = []
    for target in targets:
        if spec.query.srv:
            priority, weight = target.priority, max(1, target.weight)
        elif target.via_srv:
            priority, weight = spec.priority + ranks[target.priority], max(1, target.weight)
        else:
            priority, weight = spec.priority, spec.weight
        out.append(
            DestinationSpec(
                uri=target.uri,
                host=target.host,
                port=target.port,
                transport=target.transport,
                weight=weight,
                priority=priority,
                max_calls=spec.max_calls,
                attrs=spec.attrs,
                name=spec.text,
            )
        )
    return tuple(out)


BOTH = frozenset({4, 6})


def expand(
    sets: Sequence[SetSpec], answers: Mapping[Query, Answer], versions: frozenset[int] = BOTH
) -> tuple[SetSpec, ...]:
    """The sets to run: each set's configured destinations, then the destinations of its names
    that have an answer (an address already in the set is not added twice). ``versions``: the
    IP versions siplb can send from (its listeners'); an address of another is left out."""
    return tuple(_expand_one(spec, answers, versions) for spec in sets)


def ip_version(host: str) -> int:
    return 6 if ":" in host else 4


def _expand_one(
    spec: SetSpec, answers: Mapping[Query, Answer], versions: frozenset[int]
) -> SetSpec:
    if not spec.names:
        return spec
    seen = {d.uri for d in spec.destinations}
    destinations = list(spec.destinations)
    for name in spec.names:
        answer = answers.get(name.query)
        if answer is None:
            continue
        usable = [t for t in answer.targets if ip_version(t.host) in versions]
        for dest in destination_specs(name, usable):
            if dest.uri not in seen:
                seen.add(dest.uri)
                destinations.append(dest)
    return replace(spec, destinations=tuple(destinations))


def keep_weights(
    running: Sequence[SetSpec], before: Sequence[SetSpec], after: Sequence[SetSpec]
) -> tuple[SetSpec, ...]:
    """A DNS refresh on top of operators' weight changes: a destination whose weight the new
    answer leaves as it was (``before`` -> ``after``) keeps the weight it runs with."""
    was = {(s.name, d.uri): d.weight for s in before for d in s.destinations}
    now = {(s.name, d.uri): d.weight for s in running for d in s.destinations}

    def weight(set_name: str, dest: DestinationSpec) -> DestinationSpec:
        key = (set_name, dest.uri)
        if was.get(key) == dest.weight and key in now and now[key] != dest.weight:
            return replace(dest, weight=now[key])
        return dest

    return tuple(
        replace(s, destinations=tuple(weight(s.name, d) for d in s.destinations)) for s in after
    )


def queries(sets: Iterable[SetSpec]) -> tuple[Query, ...]:
    """Every distinct lookup the sets need, in config order."""
    return tuple(dict.fromkeys(name.query for spec in sets for name in spec.names))


# ---- rule 4: the cache -------------------------------------------------------------------------
class NameStatus(StrEnum):
    PENDING = "pending"  # never looked up yet
    OK = "ok"  # the last lookup answered
    STALE = "stale"  # the last lookup failed: the last good answer is kept
    UNRESOLVED = "unresolved"  # never answered: no destination from this name


@dataclass(frozen=True, slots=True)
class NameStatusChanged:
    query: Query
    old: NameStatus
    new: NameStatus
    detail: str  # the error, or how many addresses the answer has


@dataclass(frozen=True, slots=True)
class NameReading:
    """What the API shows of one lookup."""

    query: Query
    status: NameStatus
    targets: tuple[Target, ...]
    error: str
    checked: float | None  # when the last lookup ended (answered or failed)
    answered: float | None  # when the last good answer came
    expires: float  # when the next lookup is due


class _Entry:
    __slots__ = ("answer", "answered", "checked", "due", "error", "status")

    def __init__(self, now: float) -> None:
        self.answer: Answer | None = None
        self.status = NameStatus.PENDING
        self.error = ""
        self.due = now
        self.checked: float | None = None
        self.answered: float | None = None


class NameTable:
    """The answers in use, when each must be looked up again, and each name's status."""

    def __init__(self, ttl_floor: float, ttl_ceiling: float) -> None:
        if not 0 < ttl_floor <= ttl_ceiling:
            raise ValueError("need 0 < ttl_floor <= ttl_ceiling")
        self.ttl_floor = ttl_floor
        self.ttl_ceiling = ttl_ceiling
        self._entries: dict[Query, _Entry] = {}

    def track(self, wanted: Iterable[Query], now: float) -> None:
        """The lookups a (new) config needs: new ones are due now, others kept, the rest
        forgotten."""
        keep = dict.fromkeys(wanted)
        self._entries = {q: self._entries.get(q) or _Entry(now) for q in keep}

    def clamp(self, ttl: float) -> float:
        return min(self.ttl_ceiling, max(self.ttl_floor, ttl))

    def answers(self) -> dict[Query, Answer]:
        return {q: e.answer for q, e in self._entries.items() if e.answer is not None}

    def due(self, now: float) -> list[Query]:
        return [q for q, e in self._entries.items() if e.due <= now]

    def next_due(self) -> float | None:
        return min((e.due for e in self._entries.values()), default=None)

    def answered(
        self, query: Query, answer: Answer, now: float
    ) -> tuple[bool, NameStatusChanged | None]:
        """A lookup answered: (whether the targets changed, the status change if any). An
        answer without targets counts as a failure (rule 4)."""
        entry = self._entries.get(query)
        if entry is None:
            return False, None
        if not answer.targets:
            return False, self.failed(query, "no address in the answer", now)
        changed = entry.answer is None or entry.answer.targets != answer.targets
        entry.answer = answer
        entry.error = ""
        entry.checked = entry.answered = now
        entry.due = now + self.clamp(answer.ttl)
        return changed, self._status(query, entry, NameStatus.OK, f"{len(answer.targets)} addr")

    def failed(self, query: Query, error: str, now: float) -> NameStatusChanged | None:
        """A lookup failed: keep what was there, try again after the floor."""
        entry = self._entries.get(query)
        if entry is None:
            return None
        entry.error = error
        entry.checked = now
        entry.due = now + self.ttl_floor
        new = NameStatus.UNRESOLVED if entry.answer is None else NameStatus.STALE
        return self._status(query, entry, new, error)

    def _status(
        self, query: Query, entry: _Entry, new: NameStatus, detail: str
    ) -> NameStatusChanged | None:
        old, entry.status = entry.status, new
        return None if old is new else NameStatusChanged(query, old, new, detail)

    def readings(self) -> list[NameReading]:
        return [
            NameReading(
                q,
                e.status,
                () if e.answer is None else e.answer.targets,
                e.error,
                e.checked,
                e.answered,
                e.due,
            )
            for q, e in self._entries.items()
        ]
