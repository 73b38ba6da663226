"""``workers = N``: one balancer process per worker, sharing the UDP listeners.

Each worker is a ``Balancer`` with its own proxy core, event loop and sockets from the parent's
SO_REUSEPORT groups (``siplb.io.workers``), and a ``Worker`` that joins it to the others. The
workers are the first cluster: the members ``node.0`` .. ``node.N-1`` of one node, on the same
ownership rule and the same sealed channel format as nodes. What the workers share:

- **Ownership.** Each core is told the workers as its members; its admission stage hands a
  datagram another worker owns (``HandOver``) to the worker, which sends it on the channel; the
  owner handles it as if it had received it. So a call's INVITE is always counted by its owner.
- **Calls.** Every worker publishes its live calls per destination in shared memory
  (``siplb.io.shared``) every ``CALLS_INTERVAL`` and after each flush that changed them, and
  tells its core the other workers' totals (``told_calls``). ``max_calls`` is shared by capacity
  leases (``siplb.cluster.leases``) granted under the parent's lock (``told_limits``).
- **Backlog.** Each worker's receive queues (its listeners' sockets and its hand-over queue,
  the channel socket) are reported in shared memory every ``BACKLOG_INTERVAL``, and its core is
  told the fullest of the node's (``SharedCallCounts.node_backlog``): a worker that is behind
  holds answers and hand-overs for every worker, so all of them refuse the new calls they own
  until it has caught up. A worker silent for ``BACKLOG_LATE`` counts as full; one silent for
  ``BACKLOG_FORGET`` is forgotten.
- **Health.** Worker 0 decides: it alone sends OPTIONS probes; the others' cores report what
  their traffic shows as ``PassiveObserved`` (worker 0 is every destination's health owner),
  which they send it; it sends every worker the resulting states (at once on a change, and
  every ``SYNC_INTERVAL`` * ``RESYNC_EVERY``), which they follow.
- **Operations.** Worker 0 serves the admin API and the dashboard; a weight change or a reload
  made there is sent to every worker. SIGHUP to the parent reaches every worker. The others send
  worker 0 what its journal needs from them (failovers, expired calls), batched and bounded
  (``siplb.admin.journal.Relay``, every ``RELAY_INTERVAL``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from siplb.admin.journal import RELAY_INTERVAL, Relay
from siplb.admin.reloads import ReloadOutcome
from siplb.app import Balancer, tune_gc, withdraw_then_stop
from siplb.cluster import Member, Ownership
from siplb.cluster.leases import Leases
from siplb.config import Config, ConfigError, load_config
from siplb.dispatch import State
from siplb.io.shared import SharedCallCounts
from siplb.io.systemd import Notifier
from siplb.io.workers import WorkerLink, WorkerSockets
from siplb.proxy.actions import HandOver, PassiveObserved
from siplb.proxy.admission import SourceBanned
from siplb.proxy.core import Proxy

log = logging.getLogger("siplb")

LEADER = 0  # the worker that probes, decides health and serves the admin API
SYNC_INTERVAL = 0.1  # how often worker 0 checks its health states for changes to send
RESYNC_EVERY = 10  # ... and sends them anyway every this many checks (a restarted worker)
STATS_INTERVAL = 1.0  # how often a worker sends worker 0 its counters
CALLS_INTERVAL = 0.05  # how often a worker publishes its calls and reads the others'


class Worker:
    """One worker of ``workers = N``: builds its ``Balancer`` on the parent's sockets and joins
    it to the other workers through a ``WorkerLink`` (``siplb.app.Peers``)."""

    def __init__(
        self,
        config: Config,
        *,
        worker: int,
        sockets: WorkerSockets,
        counts: SharedCallCounts,
        config_path: Path | None = None,
    ) -> None:
        self.worker = worker
        self.workers = counts.workers
        self.counts = counts
        node = config.proxy.node_id
        self.members = [Member(node, w) for w in range(self.workers)]
        self.me = self.members[worker]
        self.leader = worker == LEADER
        self.link = WorkerLink(
            self.me, sockets, on_datagram=self._on_datagram, on_control=self._on_control
        )
        self.balancer = Balancer(
            config,
            worker=worker,
            admin=self.leader,
            config_path=config_path,
            udp_sockets={index: group[worker] for index, group in sockets.udp.items()},
            streams=self.leader,  # stream listeners are worker 0's; the others only name them
            probing=self.leader,
            pushes_bans=self.leader,  # one process owns the kernel's ban sets
            rate_share=self.workers,
            on_handover=self._hand_over,
            after_flush=self._after_flush,
            peers=self,
        )
        self.balancer.driver.node_backlog = self._node_backlog
        self.backlog = 0.0  # this worker's own fill at its last report: listeners, hand-overs
        self.leases = Leases(self.workers)
        self._caps: dict[str, int] = {}
        self.peer_stats: dict[int, dict[str, Any]] = {}  # worker 0: the others' counters
        self.relay = Relay()  # the others: events for worker 0's journal, between batches
        self._published: dict[str, int] = {}
        self._published_size = -1
        self._told: dict[str, int] = {}
        self._limits: dict[str, int] = {}
        self._synced: list[list[str]] = []
        self._syncs = 0
        self._timers: list[asyncio.TimerHandle] = []

    @property
    def proxy(self) -> Proxy:
        proxy = self.balancer.proxy
        assert proxy is not None, "the worker is not started"
        return proxy

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self.balancer.loop

    # ---- start and stop --------------------------------------------------------------------
    async def start(self) -> None:
        balancer = self.balancer
        await balancer.start()
        self.proxy.members_changed(
            Ownership(self.me, self.members), health_owner=self.members[LEADER]
        )
        self._share_calls()  # the first leases, before any call is admitted
        await self.link.start(self.loop)
        self._every(CALLS_INTERVAL, self._share_calls)
        if self.leader:
            self._every(SYNC_INTERVAL, self._sync_tick)
        else:
            self._every(STATS_INTERVAL, self._send_stats)
            self._every(RELAY_INTERVAL, self._send_journal)
        log.info("worker %d of %d started", self.worker, self.workers)

    async def stop(self, signalled: asyncio.Event | None = None) -> None:
        """Stop the balancer (its calls finish, hand-overs still cross), then the channel;
        ``signalled``: after a stop signal, unhealthy first for ``withdraw_delay``, like
        ``siplb run`` (``withdraw_then_stop``)."""
        if signalled is None:
            await self.balancer.stop()
        else:
            await withdraw_then_stop(self.balancer, signalled)
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        self.counts.clear_backlog(self.worker)  # stopped, not behind
        if not self.leader:
            self._send_journal()  # the last batch
        self.link.close()

    def _every(self, interval: float, action: Callable[[], None]) -> None:
        def tick() -> None:
            action()
            self._timers[index] = self.loop.call_later(interval, tick)

        index = len(self._timers)
        self._timers.append(self.loop.call_later(interval, tick))

    # ---- datagrams: each to its owner -----------------------------------------------------
    def _hand_over(self, handover: HandOver) -> None:
        source = handover.source
        self.link.hand_over(
            handover.member.worker, handover.listener, (source.host, source.port), handover.data
        )

    def _on_datagram(self, listener: int, source: tuple[str, int], data: bytes) -> None:
        if self.balancer.proxy is not None and 0 <= listener < len(self.balancer.listeners):
            self.balancer.driver.datagram(listener, data, source)

    # ---- backlog: the fullest queue of the node ---------------------------------------------
    def _node_backlog(self, fill: float, now: float) -> float:
        """Every ``BACKLOG_INTERVAL`` (the driver, with its listeners' ``fill``): add the
        hand-over queue, report it, and return the node's figure for the core."""
        own = max(fill, self.link.backlog())
        self.backlog = own
        self.counts.report_backlog(self.worker, own, now)
        return self.counts.node_backlog(self.worker, own, now)

    # ---- calls: published, told, and capped by leases --------------------------------------
    def _after_flush(self) -> None:
        proxy = self.balancer.proxy
        if proxy is not None and len(proxy.dispatcher.accounting) != self._published_size:
            self._publish_calls()

    def _share_calls(self) -> None:
        """Every ``CALLS_INTERVAL``: the caps (a reload may change them), this worker's calls
        and leases, and the other workers' calls."""
        self._caps = self.balancer.cluster_caps()
        self.leases.set_caps(self._caps)
        self._publish_calls()
        dispatcher = self.proxy.dispatcher
        remote = self.counts.others(self.worker, dispatcher.health)
        if remote != self._told:
            self._told = remote
            dispatcher.told_calls(remote)

    def _publish_calls(self) -> None:
        """Publish this worker's calls; ask for the leases they need, tell the core its limits."""
        dispatcher = self.proxy.dispatcher
        self._published_size = len(dispatcher.accounting)
        calls = dispatcher.local_calls()
        if calls != self._published:
            for uri in self._published.keys() | calls.keys():
                self.counts.publish(self.worker, uri, calls.get(uri, 0))
            self._published = calls
        caps = self._caps
        for uri, want in self.leases.asks(calls).items():
            self.leases.granted(uri, self.counts.grant(self.worker, uri, caps.get(uri, 0), want))
        limits = self.leases.limits()
        if limits != self._limits:
            self._limits = limits
            dispatcher.told_limits(limits)

    # ---- the channel's control messages ------------------------------------------------------
    def _on_control(self, message: dict[str, Any]) -> None:
        op = message["op"]
        if op == "health":
            self._follow(message["states"])
        elif op == "passive":
            self._passive(str(message["uri"]), bool(message["ok"]), str(message["cause"]))
        elif op == "stats":
            self.peer_stats[int(message["worker"])] = message
        elif op == "weight":
            self.balancer.apply_weight(
                message["set"], message["uri"], message["weight"], message["cause"]
            )
        elif op == "reload":
            self.balancer.reload_file(message["trigger"])
        elif op == "ban":
            self._peer_ban(str(message["host"]), float(message["seconds"]), str(message["reason"]))
        elif op == "unban":
            self._peer_unban(str(message["host"]))
        elif op == "journal":
            self.balancer.recorder.relayed(int(message["worker"]), message)
        else:
            raise ValueError(f"unknown op {op!r}")

    # ---- what this worker's balancer reports (``siplb.app.Peers``) -----------------------------
    def event(self, event: object) -> None:
        if isinstance(event, PassiveObserved):  # worker 0 decides every destination's health
            self.link.control(LEADER, "passive", uri=event.uri, ok=event.ok, cause=event.cause)
        elif isinstance(event, SourceBanned):
            # a ban made here goes to every worker; a lift does not: each worker lets its own
            # copy expire, and an operator's unban is sent by ``unbanned``
            seconds = event.until - self.balancer.now()
            self.link.broadcast("ban", host=event.host, seconds=seconds, reason=event.reason)
        if not self.leader:  # worker 0 journals its own (``Balancer._on_event``)
            self.relay.observe(event, self.balancer.wall(self.balancer.now()))

    def weight_changed(self, set_name: str, uri: str, weight: int, cause: str) -> None:
        self.link.broadcast("weight", set=set_name, uri=uri, weight=weight, cause=cause)

    def reloaded(self, trigger: str, outcome: ReloadOutcome) -> None:
        if not self.leader:
            return
        if trigger != "SIGHUP" and outcome.ok:  # SIGHUP reached every worker
            self.link.broadcast("reload", trigger=trigger)
        self.loop.call_soon(functools.partial(self._sync, force=True))

    def unbanned(self, host: str) -> None:
        self.link.broadcast("unban", host=host)

    def counters(self) -> list[dict[str, Any]]:
        """Worker 0's counters and the last ones each other worker sent."""
        rows = {self.worker: self.own_counters(), **self.peer_stats}
        return [rows[worker] for worker in sorted(rows)]

    # ---- bans: one worker's ban is every worker's ------------------------------------------
    def _peer_ban(self, host: str, seconds: float, reason: str) -> None:
        # a ban this worker already holds as long makes no event, so nothing echoes back
        if self.balancer.proxy is not None and seconds > 0:
            self.proxy.ban(host, seconds, reason, self.balancer.now())
            self.balancer.driver.flush()

    def _peer_unban(self, host: str) -> None:
        if self.balancer.proxy is not None:
            self.proxy.unban(host)
            self.balancer.driver.flush()

    # ---- health: worker 0 decides, the others follow ----------------------------------------
    def _passive(self, uri: str, ok: bool, cause: str) -> None:
        if self.proxy.passive(uri, ok, cause, self.balancer.now()) is not None:
            self.balancer.driver.flush()
            self._sync()

    def _health_states(self) -> list[list[str]]:
        dispatcher = self.proxy.dispatcher
        out = []
        for uri in dispatcher.health:
            snap = dispatcher.health.snapshot(uri)
            out.append([uri, str(snap.state), snap.cause])
        return out

    def _sync(self, *, force: bool = False) -> None:
        states = self._health_states()
        if force or states != self._synced:
            self._synced = states
            self.link.broadcast("health", states=states)

    def _sync_tick(self) -> None:
        self._syncs += 1
        self._sync(force=self._syncs % RESYNC_EVERY == 0)

    def _follow(self, states: list[list[str]]) -> None:
        proxy = self.proxy
        health = proxy.dispatcher.health
        now = self.balancer.now()
        for uri, state, cause in states:
            if uri in health and health.state(uri) != state:
                note = f"{cause}; worker {self.worker} follows worker {LEADER}"
                proxy.follow(uri, State(state), now, note)
        self.balancer.driver.flush()

    # ---- counters and journal events ---------------------------------------------------------
    def _send_journal(self) -> None:
        """Every ``RELAY_INTERVAL``: what this worker collected for worker 0's journal."""
        batch = self.relay.take()
        if batch is not None:
            self.link.control(LEADER, "journal", worker=self.worker, **batch)

    def _send_stats(self) -> None:
        self.link.control(LEADER, "stats", **self.own_counters())

    def own_counters(self) -> dict[str, Any]:
        """This worker's traffic counters, as JSON values."""
        traffic = self.balancer.core.traffic()
        link = self.link.stats
        return {
            "worker": self.worker,
            "stats": dict(traffic.stats),
            "requests": dict(traffic.requests),
            "responses": [[m, k, n] for (m, k), n in traffic.responses.items()],
            "transactions": [traffic.servers, traffic.clients],
            "calls": traffic.calls,
            "handed_over": link["handed_over"],
            "taken_over": link["taken_over"],
            "rejected": {k[len("rejected_") :]: n for k, n in link.items() if "rejected_" in k},
            "drops": dict(traffic.drops) if traffic.drops is not None else {},
            "pending": traffic.pending,
            "backlog": round(self.backlog, 4),
        }


async def serve_worker(
    config_path: Path,
    fallback: Config,
    worker: int,
    sockets: WorkerSockets,
    counts: SharedCallCounts,
) -> int:
    """One worker process until SIGTERM; SIGHUP reloads its config file."""
    try:
        config = load_config(config_path)  # a restarted worker reads what reloads installed
    except (ConfigError, OSError) as exc:
        log.error(
            "worker %d: config %s unreadable, starting with the parent's: %s",
            worker,
            config_path,
            exc,
        )
        config = fallback
    member = Worker(config, worker=worker, sockets=sockets, counts=counts, config_path=config_path)
    await member.start()
    tune_gc()
    service = Notifier.from_environment()  # the parent's relay (siplb.io.systemd.NotifyRelay)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGHUP, service.reload, member.balancer.reload_file, "SIGHUP")
    service.ready(f"worker {worker} serving")
    await stop.wait()
    await member.stop(stop)
    return 0
