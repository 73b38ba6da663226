"""One member's link to its cluster: heartbeats and shared state through Redis, sealed
datagrams to and from the other members.

Every ``[cluster] heartbeat`` (200 ms) the link runs ONE batch against Redis (``RedisLink``):
its heartbeat, its live calls per destination, its capacity lease asks and refreshes, the
health decisions it owns, operator actions made here, and the reads: the members set, every
member's counts and address, the health and admin hashes. From the replies it tells its
balancer (``ClusterHost``) what changed: the live members (``Ownership``), the calls the others
hold and the calls it may hold (``told_calls``/``told_limits`` of the dispatch core), the health
decisions of destinations it does not probe, and operator actions made elsewhere. Nothing on the
packet path waits for Redis: the batch runs in its own task, and a lease running out asks for a
tick at once instead of waiting for the next one.

Redis down (``RedisLink.up`` False): the member balances on what it last knew. Its leases hold
for ``lease_ttl`` (the store counts them that long); after that each capped destination falls
back to an equal share of its cap among the members last seen live, so the cluster as a whole
stays under the cap without Redis as long as the members agree on who is live. When Redis is
back the next batch publishes whole snapshots again (never increments): no count is doubled.

Established dialogs and NAT bindings ride the same batch, as diffs. The link drains at most
``SHARED_BATCH`` dialogs established and ended (``cluster_dialogs``) and bindings learned and gone
(``cluster_learned``) per tick and writes them to ``dialog:<tag>`` (its TTL past the latest
expiry published, so a dead member's dialogs outlive it) and ``bindings``. A member seen gone
because it fell silent has its dialogs read once; this member keeps those it owns as orphans
(``siplb.cluster.dialogs``), closed by ``close_orphan`` when their BYE comes here. The
``bindings`` hash is read when the live members change and every ``BINDINGS_EVERY`` seconds,
and the balancer is told which bindings to adopt and release (``siplb.cluster.bindings``).
What Redis did not take is sent again with the next batch.

The channel: one UDP socket per member at ``peer`` (the port plus the worker number), frames
sealed with the cluster secret (``siplb.cluster.channel``). ``DATAGRAM`` carries a SIP datagram
to its owner, ``PASSIVE`` a passive health observation to the destination's health owner,
``SETUP`` and ``SETUP_ENDED`` a call in setup to every other member (``siplb.cluster.setups``:
anycast listeners only).

Drained members: a member drained by its operator (or stopping) says so in its heartbeat, as
does a member that just started, for its first ``WARM_TICKS`` batches, and one that does not
hold its shared (anycast) addresses now (the backup of a VRRP pair: the address is on the
other host, so it could not answer from it); the others give it no new calls (``Ownership``
drained), while what it has stays with it. A member seen joining is
sent the calls in setup this member owns as soon as its address is known, before the joiner
takes new calls, so those calls stay where they are.
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
import time
from collections import Counter
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from siplb.cluster import (
    LeaveCause,
    Member,
    MemberJoined,
    MemberLeft,
    Membership,
    Ownership,
    parse_tag,
)
from siplb.cluster.bindings import BindingShare
from siplb.cluster.channel import Opened, Opener, Sealer
from siplb.cluster.dialogs import Orphans, dialog_value
from siplb.cluster.leases import Leases
from siplb.cluster.setups import CallEnded, CallNote, Setup, SetupEnded
from siplb.cluster.view import AdminAction, AdminVerb, ClusterView, HealthDecision, admin_key
from siplb.dispatch.accounting import DialogChanges
from siplb.io.cluster_store import ClusterStore, Lease, Members
from siplb.io.redis_link import RedisLink, Step
from siplb.io.udp import UdpEndpoint, bind_udp, holds_address
from siplb.logs import log_fields
from siplb.proxy.actions import Target
from siplb.proxy.keepalive import BindingChanges, Shared, flow_key, parse_flow
from siplb.settings import ClusterSettings

log = logging.getLogger("siplb.cluster")

DATAGRAM = 1  # payload: listener index (1), source port (2), host length (1), host, datagram
PASSIVE = 2  # payload: JSON {"uri", "ok", "cause"}
SETUP = 3  # payload: siplb.cluster.setups.Setup.encode()
SETUP_ENDED = 4  # payload: SetupEnded.encode()
CALL_ENDED = 5  # payload: CallEnded.encode()
WARM_TICKS = 3  # batches a new member waits (drained) for the others to tell it their setups
WARM_LIMIT = 3.0  # seconds: without Redis that long after start, a member serves alone anyway
_SOURCE = struct.Struct("!BHB")
HEALTH_REPUBLISH = 1.0  # seconds: a health owner writes its decisions again this often
SHARED_BATCH = 2000  # dialogs (and bindings) drained per tick, of each kind
PENDING_LIMIT = 50_000  # dialogs (bindings) waiting for Redis: no more is drained meanwhile
BINDINGS_EVERY = 3.0  # seconds: the bindings hash is read this often (and on member changes)
CHANNEL_BUFFER = 4 * 1024 * 1024


_NOTES: dict[int, type[Setup] | type[SetupEnded] | type[CallEnded]] = {
    SETUP: Setup,
    SETUP_ENDED: SetupEnded,
    CALL_ENDED: CallEnded,
}
_NOTE_KINDS = {kind: code for code, kind in _NOTES.items()}


class ClusterHost(Protocol):
    """What the link needs of its balancer: what to publish, and where to apply what it hears."""

    def cluster_calls(self) -> dict[str, int]: ...  # live calls per destination URI, here
    def cluster_caps(self) -> dict[str, int]: ...  # max_calls per URI that has one
    def cluster_health(self) -> dict[str, tuple[str, str]]: ...  # uri -> (state, cause), here
    def cluster_members(self, ownership: Ownership) -> None: ...
    def cluster_told(self, remote: dict[str, int], limits: dict[str, int]) -> None: ...
    def cluster_follow(self, uri: str, state: str, cause: str) -> None: ...
    def cluster_admin(self, set_name: str, uri: str, verb: str, value: float | None) -> None: ...
    def cluster_datagram(self, listener: int, source: tuple[str, int], data: bytes) -> None: ...
    def cluster_passive(self, uri: str, ok: bool, cause: str) -> None: ...
    def cluster_dialogs(self, limit: int) -> DialogChanges: ...  # accounting.dialog_changes
    def cluster_learned(self, limit: int) -> BindingChanges: ...  # keepalive.changes
    def cluster_bindings(self, adopt: Sequence[Shared], release: Sequence[Target]) -> None: ...
    def cluster_own_setups(self) -> list[Setup]: ...  # the calls in setup this member owns
    def cluster_setup(self, note: CallNote) -> None: ...  # another member's setup, or its end


@dataclass(frozen=True, slots=True)
class MemberView:
    """One member as ``/api/cluster`` shows it."""

    member: Member
    alive: bool
    last_seen: float | None  # seconds ago (this member's clock)
    peer: str
    calls: int
    config_hash: str
    started: float | None


class ClusterLink:
    def __init__(
        self,
        settings: ClusterSettings,
        host: ClusterHost,
        *,
        worker: int = 0,
        config_hash: str = "",
        shared_hosts: Sequence[str] = (),
    ) -> None:
        self.settings = settings
        self.shared_hosts = tuple(shared_hosts)  # anycast listeners' addresses
        self.holds = True  # this host has every one of them now
        self.host = host
        self.me = Member(settings.node_id, worker)
        self.config_hash = config_hash
        self.redis = RedisLink(settings)
        self.store = ClusterStore(self.redis, settings)
        self.membership = Membership(self.me, settings.dead_after)
        self.view = ClusterView(self.membership.ownership())
        self.leases = Leases(1)
        boot = time.time_ns() // 1_000_000
        self.sealer = Sealer(settings.secret, self.me, boot)
        self.opener = Opener(settings.secret)
        self.peer = (settings.peer[0], settings.peer[1] + worker)
        self.started = time.time()
        self._born = time.monotonic()
        self.stats: Counter[str] = Counter()  # handed_over, taken_over, rejected_<reason>, ...
        self.ticks = 0
        self.last_ok: float | None = None  # loop time of the last batch Redis answered
        self.synced = False  # a batch went through since start
        self._peers: dict[Member, tuple[str, int]] = {}
        self._info: dict[Member, dict[str, str]] = {}
        self._health_sent: dict[str, tuple[str, str]] = {}
        self._health_sent_at = 0.0
        self._admin_out: dict[str, dict[str, Any]] = {}
        self._fallback: dict[str, int] | None = None
        self.orphans = Orphans()
        self.bindings = BindingShare()
        self._dialogs = _Pending()  # call-id -> {uri, expires}, or ended
        self._dialogs_until = 0.0  # wall clock: the latest expiry published
        self._orphan_reads: set[Member] = set()
        self._orphans_closed: dict[Member, set[str]] = {}
        self._bindings_out = _Pending()  # flow -> {aor, contact, listener, expires, learned_by}
        self._bindings_read_at = float("-inf")
        self._bindings_version = -1  # the membership version of the last read
        self._kick = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._transport: asyncio.DatagramTransport | None = None
        self._stopping = False
        self.draining = False  # this node is drained: no new calls are given to it
        self._drained: frozenset[Member] = frozenset()  # as last told to the host
        self._greet: set[Member] = set()  # joined; to be told our setups once reachable
        self._ticks_ok = 0

    # ---- start and stop ------------------------------------------------------------------
    async def start(self, *, first_sync: float = 1.0) -> None:
        """Open the channel, run the first batch (up to ``first_sync`` seconds), then tick."""
        loop = asyncio.get_running_loop()
        sock = bind_udp(self.peer[0], self.peer[1], CHANNEL_BUFFER)
        transport, _ = await loop.create_datagram_endpoint(
            lambda: UdpEndpoint(self._on_frame, self._on_channel_error), sock=sock
        )
        self._transport = transport
        try:
            async with asyncio.timeout(first_sync):
                await self._tick()
        except TimeoutError:
            log.warning("cluster: no answer from Redis at start; balancing alone meanwhile")
        self._task = loop.create_task(self._run(), name=f"cluster {self.me.tag}")

    async def stop(self, *, leave: bool = True) -> None:
        """Stop ticking; ``leave``: tell the others now (a drain), not after ``dead_after``."""
        self._stopping = True
        self._kick.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        if leave and self.redis.up:
            await self.redis.run([self.store.leave(self.me.tag, self.host.cluster_caps())])
        if self._transport is not None:
            self._transport.close()
        await self.redis.close()

    def set_draining(self, on: bool) -> None:
        """This node is drained: the others stop giving it new calls (see ``_members``)."""
        self.draining = on
        self.kick()

    def kick(self) -> None:
        """Run the next batch now (a lease is about to run out)."""
        self._kick.set()

    async def _run(self) -> None:
        interval = self.settings.heartbeat
        while not self._stopping:
            try:
                async with asyncio.timeout(interval):
                    await self._kick.wait()
            except TimeoutError:
                pass
            self._kick.clear()
            if self._stopping:
                break
            try:
                await self._tick()
            except Exception:  # a bug here must not stop the heartbeats
                self.stats["tick_errors"] += 1
                log.exception("cluster: tick failed")

    # ---- one batch -----------------------------------------------------------------------
    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        self.ticks += 1
        holds = all(holds_address(host) for host in self.shared_hosts)
        if holds != self.holds:
            self.holds = holds
            verb = "holding" if holds else "not holding"
            log_fields(
                log,
                logging.INFO,
                "cluster: %s the shared address",
                verb,
                always=True,
                event="cluster",
                holds=holds,
            )
        calls = self.host.cluster_calls()
        caps = self.host.cluster_caps()
        self.leases.set_caps(caps)
        asks = self.leases.asks(calls)
        for uri in caps:  # refresh the leases held (their TTL), at what is held
            held = self.leases.lease(uri)
            if uri not in asks and held:
                asks[uri] = held
        known = [m.tag for m in self.membership.live]
        store = self.store
        tag = self.me.tag
        health_out = self._health_to_publish(now)
        admin_out, self._admin_out = self._admin_out, {}
        shared = self._shared_steps(now, time.time())
        steps = [
            store.heartbeat(tag, self._heartbeat_fields(calls)),
            store.members(),
            store.member_info(known),
            store.publish_calls(tag, calls),
            store.read_calls(known),
            store.write_health(health_out),
            store.read_health(),
            store.write_admin(admin_out),
            store.read_admin(),
        ]
        lease_uris = list(asks)
        steps += [store.ask_lease(uri, tag, caps.get(uri, 0), asks[uri]) for uri in lease_uris]
        steps += [step for step, _, _ in shared]
        readings = await self.redis.run(steps)
        now = loop.time()
        if readings is None:
            self._admin_out = {**admin_out, **self._admin_out}  # sent with the next batch
            self._health_sent_at = 0.0
            for _, _, failed in shared:
                failed()
            self._redis_down(now)
            return
        (_, members, infos, _, counts, _, health, _, admin, *rest) = readings
        leases, rest = rest[: len(lease_uris)], rest[len(lease_uris) :]
        self._ticks_ok += 1
        self.last_ok = now
        self.synced = True
        self._fallback = None
        if members is not None:
            self._members(members, infos or {}, now)
        if counts is not None:
            for member_tag, per_uri in counts.items():
                member = parse_tag(member_tag)
                if member is not None and member != self.me:
                    self.view.calls(member, per_uri)
        for uri, lease in zip(lease_uris, leases, strict=True):
            if isinstance(lease, Lease):
                self.leases.granted(uri, lease.granted)
        self._tell()
        if health is not None:
            self._follow(health)
        if admin is not None:
            self._apply_admin(admin)
        wall = time.time()
        for (_, done, _), reading in zip(shared, rest, strict=True):
            done(reading, now, wall)
        self.orphans.expire(wall)
        self.stats["orphans"] = len(self.orphans)

    def _heartbeat_fields(self, calls: Mapping[str, int]) -> dict[str, str | int | float]:
        return {
            "peer": f"{self.peer[0]}:{self.peer[1]}",
            "config": self.config_hash,
            "calls": sum(calls.values()),
            "started": round(self.started, 3),
            "draining": int(self.drained),
        }

    @property
    def drained(self) -> bool:
        """This member takes no new calls: drained, or too new to have heard the setups."""
        return self.draining or self.warming or not self.holds

    @property
    def warming(self) -> bool:
        """Too new: fewer than ``WARM_TICKS`` batches went through since start, and Redis has
        not been missing for ``WARM_LIMIT`` (every node restarted while Redis is down must
        still serve, on what it knows alone)."""
        return self._ticks_ok < WARM_TICKS and time.monotonic() - self._born < WARM_LIMIT

    def _members(self, members: Members, infos: Mapping[str, dict[str, str]], now: float) -> None:
        dead_after_ms = round(self.settings.dead_after * 1000)
        live: dict[Member, float] = {}
        for member_tag in members.live(dead_after_ms):
            member = parse_tag(member_tag)
            if member is not None:
                live[member] = members.last_seen[member_tag] / 1000
        for member_tag, info in infos.items():
            member = parse_tag(member_tag)
            if member is not None:
                self._info[member] = info
                host, _, port = info.get("peer", "").rpartition(":")
                if host and port.isdigit():
                    self._peers[member] = (host, int(port))
        before = self.membership.version
        events: list[MemberJoined | MemberLeft | None] = [
            self.membership.heard(member, now) for member in live
        ]
        for member in self.membership.live:
            if member != self.me and member not in live:
                if member.tag in members.last_seen:  # still listed, heartbeat too old
                    events.append(self.membership.gone(member, now))
                else:  # it removed itself: it left on purpose
                    events.append(self.membership.left(member, now))
        for event in events:
            if event is not None:
                log_fields(log, logging.INFO, "cluster: %s", _describe(event), **_fields(event))
            if isinstance(event, MemberJoined):
                self._greet.add(event.member)
            if isinstance(event, MemberLeft) and event.cause is LeaveCause.SILENT:
                self._orphan_reads.add(event.member)  # its dialogs, read with the next batch
                self.kick()
        self._greet &= set(self.membership.live)
        for member in [m for m in self._greet if m in self._peers]:
            self._greet.discard(member)
            for setup in self.host.cluster_own_setups():
                self._send(member, SETUP, setup.encode())
        # drained: said so, or not yet told our setups (its address unknown), or this member
        drained = {m for m in live if self._info.get(m, {}).get("draining", "0") != "0"}
        drained |= self._greet
        if self.drained:
            drained.add(self.me)
        if self.membership.version != before or drained != self._drained:
            if drained != self._drained:
                names = ", ".join(sorted(m.tag for m in drained)) or "none"
                log_fields(
                    log,
                    logging.INFO,
                    "cluster: members taking no new calls: %s",
                    names,
                    always=True,
                    event="cluster",
                    drained=sorted(m.tag for m in drained),
                )
            self._drained = frozenset(drained)
            ownership = Ownership(self.me, self.membership.live, tuple(self._drained))
            self.view.members_changed(ownership)
            self.leases.members_changed(len(ownership.live))
            for gone in [m for m in self._info if m not in ownership.live]:
                self._info.pop(gone, None)
            self.host.cluster_members(ownership)
            self._health_sent.clear()  # a new share of destinations to publish

    def _tell(self) -> None:
        self.host.cluster_told(self.view.remote_calls(), self.limits())

    def limits(self) -> dict[str, int]:
        """The calls this member may hold on each capped URI, now."""
        return dict(self._fallback) if self._fallback is not None else self.leases.limits()

    def _redis_down(self, now: float) -> None:
        self.stats["redis_down_ticks"] += 1
        if self.last_ok is None or now - self.last_ok < self.settings.lease_ttl:
            return  # leases still count in the store: keep them
        if self._fallback is None:
            members = max(1, len(self.membership.live))
            self._fallback = {uri: cap // members for uri, cap in self.host.cluster_caps().items()}
            self._tell()

    # ---- health: owners publish, the others follow ----------------------------------------
    def decides(self, uri: str) -> bool:
        return self.view.decides(uri)

    def _health_to_publish(self, now: float) -> dict[str, dict[str, Any]]:
        republish = now - self._health_sent_at >= HEALTH_REPUBLISH
        out: dict[str, dict[str, Any]] = {}
        for uri, (state, cause) in self.host.cluster_health().items():
            if not self.view.decides(uri):
                continue
            if republish or self._health_sent.get(uri) != (state, cause):
                self._health_sent[uri] = (state, cause)
                out[uri] = {"state": state, "cause": cause, "by": self.me.tag, "at": time.time()}
        if republish:
            self._health_sent_at = now
        return out

    def _follow(self, entries: Mapping[str, dict[str, Any]]) -> None:
        for uri, entry in entries.items():
            by = parse_tag(str(entry.get("by", "")))
            if by is None or by == self.me:
                continue
            try:
                decision = HealthDecision(
                    str(entry["state"]), str(entry.get("cause", "")), by, float(entry["at"])
                )
            except (KeyError, TypeError, ValueError):
                continue
            followed = self.view.health(uri, decision)
            if followed is not None:
                self.host.cluster_follow(uri, followed.state, f"{followed.cause}; from {by.tag}")

    def passive(self, uri: str, ok: bool, cause: str) -> bool:
        """A passive observation of ``uri``: sent to its health owner; False when that is us."""
        owner = self.view.health_owner(uri)
        if owner == self.me:
            return False
        payload = json.dumps({"uri": uri, "ok": ok, "cause": cause}).encode()
        self._send(owner, PASSIVE, payload)
        return True

    # ---- operator actions: made anywhere, applied everywhere ------------------------------
    def admin(self, set_name: str, uri: str, verb: str, value: float | None = None) -> None:
        """An operator action made on this member: applied here by the caller, published."""
        key = admin_key(set_name, uri)
        action = AdminAction(AdminVerb(verb), value, time.time(), self.me)
        self.view.admin(key, action)
        self._admin_out[key] = {
            "op": verb,
            "value": value,
            "stamp": action.stamp,
            "by": self.me.tag,
        }
        self.kick()

    def _apply_admin(self, entries: Mapping[str, dict[str, Any]]) -> None:
        for key, entry in entries.items():
            by = parse_tag(str(entry.get("by", "")))
            if by is None:
                continue
            try:
                raw = entry.get("value")
                action = AdminAction(
                    AdminVerb(str(entry["op"])),
                    None if raw is None else float(raw),
                    float(entry["stamp"]),
                    by,
                )
            except (KeyError, TypeError, ValueError):
                continue
            newer = self.view.admin(key, action)
            if newer is None or by == self.me:
                continue
            set_name, _, uri = key.partition("|")
            self.host.cluster_admin(set_name, uri, str(newer.verb), newer.value)

    # ---- dialogs and bindings: diffs out, whole reads in ----------------------------------
    def close_orphan(self, call_id: str) -> bool:
        """The BYE of ``call_id`` came here: close it when it is a dead member's dialog this
        member keeps (removed from that member's published dialogs with the next batch)."""
        orphan = self.orphans.close(call_id)
        if orphan is None:
            return False
        self._orphans_closed.setdefault(orphan.member, set()).add(call_id)
        self.stats["orphans"] = len(self.orphans)
        self.stats["orphans_closed"] += 1
        return True

    def _shared_steps(self, now: float, wall: float) -> list[_Shared]:
        """The dialog and binding steps of this batch, each with what to do with its reading
        and what to do when the batch did not go through."""
        self._drain_dialogs(now, wall)
        self._drain_bindings(now, wall)
        out = [self._dialogs_step(wall), self._bindings_step()]
        closed, self._orphans_closed = self._orphans_closed, {}
        out += [self._close_step(member, call_ids) for member, call_ids in closed.items()]
        out += [self._orphan_step(member) for member in sorted(self._orphan_reads)]
        if (
            self.membership.version != self._bindings_version
            or now - self._bindings_read_at >= BINDINGS_EVERY
        ):
            self._bindings_version = self.membership.version
            out.append((self.store.read_bindings(), self._assign_bindings, self._bindings_unread))
        return out

    def _drain_dialogs(self, now: float, wall: float) -> None:
        pending = self._dialogs
        if len(pending) >= PENDING_LIMIT:
            return  # Redis is behind: the accounting journals meanwhile
        changes = self.host.cluster_dialogs(SHARED_BATCH)
        for key in changes.ended:
            pending.remove(_text(key))
        for dialog in changes.established:
            expires = wall + dialog.expires - now
            self._dialogs_until = max(self._dialogs_until, expires)
            pending.put(_text(dialog.key), dialog_value(dialog.uri, expires))

    def _dialogs_step(self, wall: float) -> _Shared:
        put, gone = self._dialogs.take()
        ttl_ms = max(0, round((self._dialogs_until - wall) * 1000)) + self.store.ttl_ms
        step = self.store.write_dialogs(self.me.tag, put, gone, ttl_ms=ttl_ms)
        return step, _nothing, lambda: self._dialogs.restore(put, gone)

    def _orphan_step(self, member: Member) -> _Shared:
        def done(reading: dict[str, dict[str, Any]] | None, now: float, wall: float) -> None:
            self._orphan_reads.discard(member)
            if reading:
                kept = self.orphans.take(member, reading, self.membership.ownership(), wall)
                self.stats["orphans_taken"] += kept
                log.info("cluster: %d of %s's dialogs are closed here now", kept, member.tag)

        return self.store.read_dialogs(member.tag), done, _nothing

    def _close_step(self, member: Member, call_ids: set[str]) -> _Shared:
        def failed() -> None:
            self._orphans_closed.setdefault(member, set()).update(call_ids)

        return self.store.remove_dialogs(member.tag, call_ids), _nothing, failed

    def _drain_bindings(self, now: float, wall: float) -> None:
        pending = self._bindings_out
        if len(pending) >= PENDING_LIMIT:
            return
        changes = self.host.cluster_learned(SHARED_BATCH)
        ownership = self.membership.ownership()
        release: list[Target] = []
        for shared in changes.learned:
            flow = flow_key(shared.flow)
            pending.put(flow, self._binding_value(shared, now, wall))
            if not self.bindings.learned(flow, ownership):
                release.append(shared.flow)  # its owner keeps it open
        for target in changes.gone:
            flow = flow_key(target)
            pending.remove(flow)
            self.bindings.gone(flow)
        if release:
            self.host.cluster_bindings((), release)

    def _binding_value(self, shared: Shared, now: float, wall: float) -> dict[str, Any]:
        return {
            "aor": shared.aor.decode("latin-1"),
            "contact": shared.contact.decode("latin-1"),
            "listener": shared.listener,
            "expires": round(wall + shared.expires_at - now, 3),
            "learned_by": self.me.tag,
        }

    def _bindings_step(self) -> _Shared:
        put, gone = self._bindings_out.take()
        step = self.store.write_bindings(put, gone)
        return step, _nothing, lambda: self._bindings_out.restore(put, gone)

    def _bindings_unread(self) -> None:
        self._bindings_version = -1  # read with the next batch

    def _assign_bindings(
        self, entries: dict[str, dict[str, Any]] | None, now: float, wall: float
    ) -> None:
        if entries is None:
            return
        self._bindings_read_at = now
        shared = {flow: b for flow, entry in entries.items() if (b := _binding(flow, entry))}
        expiries = {flow: b.expires_at for flow, b in shared.items()}
        assignment = self.bindings.assign(expiries, self.membership.ownership(), wall)
        for flow in assignment.expired:
            self._bindings_out.remove(flow)
        adopt = [_on_loop_clock(shared[flow], now, wall) for flow in assignment.adopt]
        release = [target for flow in assignment.release if (target := parse_flow(flow))]
        if adopt or release:
            self.stats["bindings_adopted"] += len(adopt)
            self.stats["bindings_released"] += len(release)
            self.host.cluster_bindings(adopt, release)

    # ---- the channel -----------------------------------------------------------------------
    def hand_over(
        self, member: Member, listener: int, source: tuple[str, int], data: bytes
    ) -> None:
        host = source[0].encode("ascii")
        payload = _SOURCE.pack(listener, source[1], len(host)) + host + data
        self.stats["handed_over"] += 1
        self._send(member, DATAGRAM, payload)

    def tell_setups(self, notes: Sequence[CallNote]) -> None:
        """Calls in setup made or ended here, to every other live member."""
        others = [m for m in self.membership.live if m != self.me]
        for note in notes:
            if isinstance(note, CallEnded):  # a dead member's dialog this member keeps?
                self.close_orphan(note.call_id.decode("latin-1"))
            kind = _NOTE_KINDS[type(note)]
            payload = note.encode()
            self.stats[f"told_{type(note).__name__}"] += 1
            for member in others:
                self._send(member, kind, payload)

    def _send(self, member: Member, kind: int, payload: bytes) -> None:
        address = self._peers.get(member)
        if address is None or self._transport is None:
            self.stats["unreachable"] += 1
            return
        frame = self.sealer.seal(kind, payload, time.time())
        try:
            self._transport.sendto(frame, address)
        except OSError as exc:
            self.stats["send_errors"] += 1
            log.debug("cluster: send to %s failed: %s", member.tag, exc)

    def _on_frame(self, frame: bytes, addr: tuple[str, int]) -> None:
        opened = self.opener.open(frame, time.time())
        if not isinstance(opened, Opened):
            self.stats[f"rejected_{opened.reason.value}"] += 1
            return
        if opened.kind == DATAGRAM:
            self._take_datagram(opened.payload)
        elif opened.kind == PASSIVE:
            self._take_passive(opened.payload)
        elif opened.kind in _NOTES:
            note = _NOTES[opened.kind].decode(opened.payload)
            if note is None:
                self.stats["rejected_malformed"] += 1
                return
            self.stats[f"heard_{type(note).__name__}"] += 1
            self.host.cluster_setup(note)
        else:
            self.stats["rejected_malformed"] += 1

    def _take_datagram(self, payload: bytes) -> None:
        try:
            listener, port, length = _SOURCE.unpack_from(payload)
            start = _SOURCE.size
            host = payload[start : start + length].decode("ascii")
        except (struct.error, UnicodeDecodeError):
            self.stats["rejected_malformed"] += 1
            return
        self.stats["taken_over"] += 1
        self.host.cluster_datagram(listener, (host, port), payload[start + length :])

    def _take_passive(self, payload: bytes) -> None:
        try:
            value = json.loads(payload)
            uri, ok, cause = str(value["uri"]), bool(value["ok"]), str(value["cause"])
        except (ValueError, KeyError, TypeError):
            self.stats["rejected_malformed"] += 1
            return
        self.stats["passive_in"] += 1
        self.host.cluster_passive(uri, ok, cause)

    def _on_channel_error(self, exc: OSError) -> None:
        self.stats["channel_errors"] += 1

    # ---- what the admin API shows ----------------------------------------------------------
    def members(self, now: float) -> list[MemberView]:
        out = []
        live = set(self.membership.live)
        for member in sorted(live | set(self._info)):
            info = self._info.get(member, {})
            heard = self.membership.last_heard(member)
            started = info.get("started")
            out.append(
                MemberView(
                    member=member,
                    alive=member in live,
                    last_seen=0.0
                    if member == self.me
                    else (None if heard is None else now - heard),
                    peer=info.get(
                        "peer", f"{self.peer[0]}:{self.peer[1]}" if member == self.me else ""
                    ),
                    calls=int(info.get("calls", 0) or 0),
                    config_hash=info.get("config", self.config_hash if member == self.me else ""),
                    started=float(started) if started else None,
                )
            )
        return out


# a shared step: the step, what to do with its reading (and the loop and wall clocks), what to
# do when the batch did not go through
_Shared = tuple[Step[Any], Callable[[Any, float, float], None], Callable[[], None]]


class _Pending:
    """Hash fields waiting for the next batch: values to put and names to remove."""

    def __init__(self) -> None:
        self.values: dict[str, dict[str, Any]] = {}
        self.gone: set[str] = set()

    def put(self, name: str, value: dict[str, Any]) -> None:
        self.gone.discard(name)
        self.values[name] = value

    def remove(self, name: str) -> None:
        self.values.pop(name, None)
        self.gone.add(name)

    def take(self) -> tuple[dict[str, dict[str, Any]], set[str]]:
        put, gone = self.values, self.gone
        self.values, self.gone = {}, set()
        return put, gone

    def restore(self, put: dict[str, dict[str, Any]], gone: set[str]) -> None:
        """What a failed batch took, under what was added since (newer wins)."""
        for name in gone:
            if name not in self.values:
                self.gone.add(name)
        for name, value in put.items():
            if name not in self.values and name not in self.gone:
                self.values[name] = value

    def __len__(self) -> int:
        return len(self.values) + len(self.gone)


def _nothing(*_: object) -> None:
    return None


def _text(key: Hashable) -> str:
    """An accounting key (the Call-ID, bytes) as the dialogs hash names it."""
    return key.decode("latin-1") if isinstance(key, bytes) else str(key)


def _binding(flow: str, entry: Mapping[str, Any]) -> Shared | None:
    """A ``bindings`` entry, its expiry on the wall clock; None when it does not read."""
    target = parse_flow(flow)
    if target is None or target.reliable:
        return None
    try:
        return Shared(
            target,
            int(entry["listener"]),
            str(entry["aor"]).encode("latin-1"),
            str(entry["contact"]).encode("latin-1"),
            float(entry["expires"]),
        )
    except (KeyError, TypeError, ValueError, UnicodeEncodeError):
        return None


def _on_loop_clock(shared: Shared, now: float, wall: float) -> Shared:
    return Shared(
        shared.flow, shared.listener, shared.aor, shared.contact, now + shared.expires_at - wall
    )


def _fields(event: MemberJoined | MemberLeft) -> dict[str, object]:
    """A membership change's log fields: ``member``, ``new`` (joined or gone), ``cause``."""
    cause = getattr(event, "cause", None)
    return {
        "always": True,
        "event": "cluster",
        "member": event.member.tag,
        "new": "joined" if cause is None else "gone",
        "cause": None if cause is None else cause.value,
    }


def _describe(event: object) -> str:
    member = getattr(event, "member", None)
    tag = member.tag if isinstance(member, Member) else "?"
    cause = getattr(event, "cause", None)
    if cause is None:
        return f"member {tag} joined"
    return f"member {tag} gone ({cause.value})"
