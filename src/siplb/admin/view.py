"""What the admin side may see of a running balancer, and the operator actions it may call.

The API, ``/metrics``, the dashboard and ``siplb demo`` read a ``BalancerView``: the process's
own facts (config, journal, listeners, clocks) plus ``core``, a ``CoreView`` of the proxy core
answering in plain values. Nothing here reaches into the core: the composition root builds the
view (``siplb.app.Balancer`` is one; ``siplb.view.ProxyView`` reads the core), so the admin
side depends on these few names only, and a cluster view can answer them too.

With ``[cluster]``, ``BalancerView.cluster()`` answers a ``ClusterReading``: this member's view of
the cluster (the members it knows, who owns which destination's health, the calls it and the
others hold, its Redis link and its node-to-node channel), read from its cluster link when asked.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from siplb.dispatch import AdminState, DestinationSpec, HealthSnapshot, SetSpec
from siplb.dispatch.names import NameReading
from siplb.media.engines import MediaView
from siplb.proxy.admission import BanView
from siplb.proxy.listeners import Listener
from siplb.settings import Config

from .journal import Recorder
from .reloads import ReloadOutcome

WorkerCounters = list[dict[str, Any]]  # one JSON row per worker process; empty for one process


@dataclass(frozen=True, slots=True)
class DestinationReading:
    """One destination as the core tracks it now."""

    snapshot: HealthSnapshot
    calls_total: int  # calls answered with a 2xx, ever
    latency: tuple[float, ...]  # the last probe round trips, in seconds (empty: none timed)
    answered: int  # probe answers ever timed


@dataclass(frozen=True, slots=True)
class Traffic:
    """One process's counters (or their sum over worker processes)."""

    stats: Counter[str]
    requests: Counter[str]  # by method
    responses: Counter[tuple[str, int]]  # by (CSeq method, status class)
    servers: int  # live server transactions
    clients: int  # live client transactions
    calls: int  # calls in setup or confirmed
    pending: int  # server transactions waiting for their final answer
    drops: Counter[str] | None  # the admission stage's drops by reason; None without one


@dataclass(frozen=True, slots=True)
class PendingLimits:
    """The bounds on pending server transactions, and the sources holding the most."""

    max: int
    max_per_source: int
    top_sources: list[tuple[str, int]]


@dataclass(frozen=True, slots=True)
class StreamCounts:
    """The stream pool's bounds at work."""

    refused: Counter[str]  # connections refused or closed, by reason
    inbound: int
    outbound: int
    buffered: int  # bytes held by the framers of all connections


class CoreView(Protocol):
    """The proxy core, read-only."""

    @property
    def node_id(self) -> str: ...
    @property
    def accepting(self) -> bool: ...
    def sets(self) -> tuple[SetSpec, ...]: ...
    def uris(self) -> list[str]:
        """Every destination URI the core tracks (in a set, or retiring with calls)."""
        ...

    def destination(self, uri: str) -> DestinationReading | None:
        """None when the core no longer tracks ``uri``."""
        ...

    def calls_totals(self) -> dict[str, int]: ...
    def probe_targets(self) -> frozenset[str]: ...
    def traffic(self) -> Traffic: ...
    @property
    def protects(self) -> bool:
        """Whether there is an admission stage (bans, ACLs, rates)."""
        ...

    def bans(self, now: float) -> list[BanView]: ...
    def ban_count(self) -> int: ...
    def is_trusted(self, host: str) -> bool: ...
    def pending_limits(self, top: int) -> PendingLimits: ...
    def streams(self) -> StreamCounts: ...


# ---- the cluster, as one member sees it ------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RedisReading:
    """The member's link to the cluster's Redis."""

    up: bool  # the last batch went through
    where: str  # the URL without its password, or "Sentinel <service>"
    errors: int  # batches that failed, ever
    reconnects: int  # times the link came back after it was down
    last_error: str  # "" when none yet
    last_ok: float | None = None  # seconds since Redis last answered (None: never)


@dataclass(frozen=True, slots=True)
class MemberReading:
    """One member (a worker of a node) as the members set and its heartbeat tell it."""

    tag: str  # "node.worker"
    node: str
    worker: int
    alive: bool
    last_seen: float | None  # seconds since its last heartbeat (0 for this member; None: never)
    peer: str  # "IP:port" of its node-to-node channel ("" while unknown)
    calls: int  # its live calls, as it last published them
    config_hash: str  # the config it runs ("" while unknown)
    started: float | None  # when it started, seconds since the epoch


@dataclass(frozen=True, slots=True)
class ClusterDestination:
    """One destination: who decides its health, and whose calls it carries."""

    uri: str
    owner: str  # the tag of the member that probes it and decides its health
    state: str  # its state here (``views.display_state``)
    calls_here: int  # live calls this member holds on it
    calls_elsewhere: int  # live calls the other live members hold on it
    limit: int | None  # calls this member may hold (its capacity lease); None: no cap


CHANNEL_REJECTS = ("forged", "replayed", "stale", "malformed")


@dataclass(frozen=True, slots=True)
class ChannelCounts:
    """The node-to-node channel's counters, ever, at this member."""

    handed_over: int = 0  # datagrams sent to their owner
    taken_over: int = 0  # datagrams received from another member, handled here
    forged: int = 0  # frames dropped: bad seal
    replayed: int = 0  # frames dropped: seen before
    stale: int = 0  # frames dropped: stamp outside the window
    malformed: int = 0  # frames dropped: not a frame, or a bad payload
    unreachable: int = 0  # frames not sent: the member's address is unknown
    setups_told: int = 0  # attempts of calls in setup told to the others (anycast)
    setups_heard: int = 0  # attempts of calls in setup heard from the others
    setups_adopted: int = 0  # calls in setup of a member gone, continued here

    @classmethod
    def of(cls, stats: Mapping[str, int]) -> ChannelCounts:
        """From the link's counters: ``handed_over``, ``rejected_<reason>``, ..."""
        return cls(
            handed_over=stats.get("handed_over", 0),
            taken_over=stats.get("taken_over", 0),
            forged=stats.get("rejected_forged", 0),
            replayed=stats.get("rejected_replayed", 0),
            stale=stats.get("rejected_stale", 0),
            malformed=stats.get("rejected_malformed", 0),
            unreachable=stats.get("unreachable", 0),
            setups_told=stats.get("told_Setup", 0),
            setups_heard=stats.get("heard_Setup", 0),
            setups_adopted=stats.get("setups_adopted", 0),
        )

    def rejected(self) -> dict[str, int]:
        return {reason: getattr(self, reason) for reason in CHANNEL_REJECTS}


@dataclass(frozen=True, slots=True)
class ClusterReading:
    """This member's view of its cluster."""

    me: str  # this member's tag
    node: str
    config_hash: str  # the config this member runs
    redis: RedisReading
    members: tuple[MemberReading, ...]  # every member known, live or just gone, by tag
    destinations: tuple[ClusterDestination, ...]
    channel: ChannelCounts

    def live(self) -> list[MemberReading]:
        return [member for member in self.members if member.alive]

    def calls(self) -> int:
        """Live calls in the cluster: the sum of what the live members published."""
        return sum(member.calls for member in self.live())


class BalancerView(Protocol):
    """A running balancer as the admin side sees it, with the operator actions it may call."""

    @property
    def config(self) -> Config: ...
    @property
    def started_config(self) -> Config:
        """The config the listeners (and the admin listener) were opened with."""
        ...

    @property
    def config_path(self) -> Path | None: ...
    @property
    def recorder(self) -> Recorder: ...
    @property
    def worker(self) -> int: ...
    @property
    def started_at(self) -> float: ...
    @property
    def listeners(self) -> Sequence[Listener]: ...
    @property
    def retired_from(self) -> Mapping[str, tuple[str, DestinationSpec]]:
        """Destinations a reload removed that still carry calls: uri -> (old set, old spec)."""
        ...

    @property
    def core(self) -> CoreView: ...
    def now(self) -> float:
        """The event loop's clock."""
        ...

    def wall(self, loop_time: float) -> float:
        """A time of the loop's clock as seconds since the epoch."""
        ...

    def worker_counters(self) -> WorkerCounters: ...
    def addresses_of(self, set_name: str, name: str) -> list[DestinationSpec] | None:
        """The destinations a DNS name of the set has now; None if the set has no such name."""
        ...

    def dns_names(self) -> list[NameReading]:
        """Each DNS name the sets use, as last looked up (``siplb.dispatch.names``)."""
        ...

    def cluster(self) -> ClusterReading | None:
        """This member's view of its cluster; None without ``[cluster]``."""
        ...

    def media_view(self) -> MediaView | None:
        """The media engines and their calls; None without ``[media]``."""
        ...

    @property
    def draining(self) -> bool:
        """The whole node is drained (``drain_node``, or SIGTERM): unhealthy, no new calls."""
        ...

    @property
    def joining(self) -> bool:
        """A cluster node not yet in step with the others (no Redis batch yet, or the calls
        in setup of the others not yet heard): unhealthy until it is."""
        ...

    # ---- operator actions ----------------------------------------------------------------
    def find_destination(self, set_name: str, uri: str) -> DestinationSpec: ...
    def set_admin_state(self, set_name: str, uri: str, admin: AdminState, cause: str) -> None: ...
    def set_weight(self, set_name: str, uri: str, weight: int, cause: str) -> None: ...
    def reload_file(self, trigger: str = ...) -> ReloadOutcome: ...
    def ban(self, host: str, seconds: float, reason: str) -> bool: ...
    def unban(self, host: str) -> bool: ...
    def drain_node(self, on: bool, cause: str) -> None: ...


# ---- the destination table ``siplb demo`` draws ---------------------------------------------
@dataclass(frozen=True, slots=True)
class DestinationView:
    set_name: str
    uri: str
    state: str
    cause: str
    weight: int
    priority: int
    active_calls: int
    max_calls: int | None
    probe_latency_ms: float | None


def destinations(core: CoreView) -> list[DestinationView]:
    """Every destination of every set, in the sets' order."""
    return [
        DestinationView(
            spec.name,
            dest.uri,
            str(reading.snapshot.state),
            reading.snapshot.cause,
            dest.weight,
            dest.priority,
            reading.snapshot.active_calls,
            dest.max_calls,
            _mean_ms(reading.latency),
        )
        for spec in core.sets()
        for dest in spec.destinations
        if (reading := core.destination(dest.uri)) is not None
    ]


def _mean_ms(samples: Iterable[float]) -> float | None:
    values = list(samples)
    return 1000 * sum(values) / len(values) if values else None
