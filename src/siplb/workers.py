"""``workers = N``: one balancer process per worker, sharing the UDP listeners.

Each worker is a ``Balancer`` with its own proxy core, event loop and sockets from the parent's
SO_REUSEPORT groups (``siplb.io.workers``). What the workers share:

- **Ownership.** A datagram is handled by the worker that owns its call or transaction; the
  worker that receives another's datagram hands it over on the loopback channel.
- **Calls.** Every worker publishes its live calls per destination in shared memory
  (``siplb.io.shared``); least-calls and ``max_calls`` count the total of all workers.
- **Health.** Worker 0 decides: it alone sends OPTIONS probes, the others send it what their
  traffic shows (passive failures and successes), and it sends every worker the resulting
  states (at once on a change, and every ``SYNC_INTERVAL``), which they follow.
- **Operations.** Worker 0 serves the admin API and the dashboard; a weight change or a reload
  made there is sent to every worker. SIGHUP to the parent reaches every worker.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
import socket
from dataclasses import replace
from pathlib import Path
from typing import Any

from siplb.admin.reloads import ReloadOutcome
from siplb.app import Balancer, tune_gc
from siplb.config import Config, ConfigError, load_config
from siplb.dispatch import State
from siplb.io.driver import log_udp_error
from siplb.io.shared import SharedCallCounts
from siplb.io.udp import Receiver, UdpEndpoint
from siplb.io.workers import (
    CONTROL,
    DATAGRAM,
    Steering,
    WorkerSockets,
    decode_control,
    decode_datagram,
    encode_control,
    encode_datagram,
)
from siplb.proxy.admission import BanLifted, SourceBanned
from siplb.settings import ListenerSettings, ProtectionSettings

log = logging.getLogger("siplb")

LEADER = 0  # the worker that probes, decides health and serves the admin API
SYNC_INTERVAL = 0.1  # how often worker 0 checks its health states for changes to send
RESYNC_EVERY = 10  # ... and sends them anyway every this many checks (a restarted worker)
STATS_INTERVAL = 1.0  # how often a worker sends worker 0 its counters


class WorkerBalancer(Balancer):
    """One worker of ``workers = N``: a ``Balancer`` on the parent's sockets that hands each
    datagram to its owner and shares calls and health with the other workers."""

    def __init__(
        self,
        config: Config,
        *,
        worker: int,
        sockets: WorkerSockets,
        counts: SharedCallCounts,
        config_path: Path | None = None,
    ) -> None:
        super().__init__(config, worker=worker, admin=worker == LEADER, config_path=config_path)
        self.workers = counts.workers
        self.sockets = sockets
        self.counts = counts
        self.probing = worker == LEADER
        self.pushes_bans = worker == LEADER  # one process owns the kernel's ban sets
        self.steering = Steering(config.proxy.node_id, self.workers, worker)
        self.peers = sockets.channel_addresses
        self.handed_over = 0  # datagrams this worker received for another one
        self.taken_over = 0  # datagrams another worker handed to this one
        self.peer_stats: dict[int, dict[str, Any]] = {}  # worker 0: the others' counters
        self._channel: asyncio.DatagramTransport | None = None
        self._synced: list[list[str]] = []
        self._syncs = 0
        self._sync_timer: asyncio.TimerHandle | None = None

    @property
    def leader(self) -> bool:
        return self.worker == LEADER

    # ---- start and stop --------------------------------------------------------------------
    async def start(self) -> None:
        await super().start()
        proxy = self.proxy
        assert proxy is not None
        dispatcher = proxy.dispatcher
        dispatcher.count_calls_with(self.counts.total)
        dispatcher.accounting.on_count = self._publish_count
        if not self.leader:
            dispatcher.health.relay = self._relay_passive
        channel = self.sockets.channels[self.worker]
        transport, _ = await self.loop.create_datagram_endpoint(
            lambda: UdpEndpoint(self._on_channel, log_udp_error), sock=channel
        )
        self._channel = transport
        self._sync_timer = self.loop.call_later(
            SYNC_INTERVAL if self.leader else STATS_INTERVAL, self._tick
        )
        log.info("worker %d of %d started", self.worker, self.workers)

    def _close(self) -> None:
        if self._sync_timer is not None:
            self._sync_timer.cancel()
        if self._channel is not None:
            self._channel.close()
        super()._close()

    async def _open_listener(self, index: int, spec: ListenerSettings) -> int:
        if spec.transport != "udp" and not self.leader:
            return spec.port  # stream listeners are worker 0's; the others only name them
        return await super()._open_listener(index, spec)

    # ---- datagrams: each to its owner -----------------------------------------------------
    def _udp_socket(self, index: int, spec: ListenerSettings) -> socket.socket:
        return self.sockets.udp[index][self.worker]

    def _udp_receiver(self, index: int) -> Receiver:
        steering = self.steering
        me = self.worker
        datagram = self.driver.datagram

        def receive(data: bytes, addr: tuple[str, int]) -> None:
            owner = steering.owner(data)
            if owner == me:
                datagram(index, data, addr)
            else:
                self._hand_over(owner, encode_datagram(index, addr, data))

        return receive

    def _hand_over(self, worker: int, message: bytes) -> None:
        if self._channel is None:
            return  # still starting: the sender retransmits
        self.handed_over += 1
        try:
            self._channel.sendto(message, self.peers[worker])
        except OSError as exc:
            log.debug("hand-over to worker %d failed: %s", worker, exc)

    def _on_channel(self, message: bytes, addr: tuple[str, int]) -> None:
        if not message:
            return
        if message[0] == DATAGRAM:
            if self.proxy is not None:
                self.taken_over += 1
                index, source, data = decode_datagram(message)
                self.driver.datagram(index, data, source)
        elif message[0] == CONTROL:
            try:
                self._on_control(decode_control(message))
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("bad control message from %s: %s", addr, exc)

    def _on_control(self, message: dict[str, Any]) -> None:
        op = message["op"]
        if op == "health":
            self._follow(message["states"])
        elif op == "passive":
            self._passive(message["uri"], bool(message["ok"]), str(message["cause"]))
        elif op == "stats":
            self.peer_stats[int(message["worker"])] = message
        elif op == "weight":
            super().set_weight(message["set"], message["uri"], message["weight"], message["cause"])
        elif op == "reload":
            super().reload_file(message["trigger"])
        elif op == "ban":
            self._peer_ban(str(message["host"]), float(message["seconds"]), str(message["reason"]))
        elif op == "unban":
            self._peer_unban(str(message["host"]))
        else:
            raise ValueError(f"unknown op {op!r}")

    def _send_control(self, to: int, op: str, **fields: Any) -> None:
        if self._channel is not None:
            self._channel.sendto(encode_control(op, **fields), self.peers[to])

    def _broadcast(self, op: str, **fields: Any) -> None:
        for worker in range(self.workers):
            if worker != self.worker:
                self._send_control(worker, op, **fields)

    # ---- bans: one worker's ban is every worker's ------------------------------------------
    def _protection(self, config: Config) -> ProtectionSettings:
        """Each worker counts the requests it owns, about 1/N of a source's (Call-IDs hash
        evenly), so each holds 1/N of every per-source budget."""
        rate = config.protection.rate
        n = self.workers
        share = replace(
            rate,
            invite=max(1, -(-rate.invite // n)),
            register=max(1, -(-rate.register // n)),
            other=max(1, -(-rate.other // n)),
        )
        return replace(config.protection, rate=share)

    def _ban_changed(self, event: SourceBanned | BanLifted) -> None:
        """A ban made here goes to every worker. A lift does not: each worker lets its own copy
        expire, and an operator's unban is sent by ``unban``."""
        super()._ban_changed(event)
        if isinstance(event, SourceBanned):
            seconds = event.until - self.loop.time()
            self._broadcast("ban", host=event.host, seconds=seconds, reason=event.reason)

    def unban(self, host: str) -> bool:
        lifted = super().unban(host)
        self._broadcast("unban", host=host)
        return lifted

    def _peer_ban(self, host: str, seconds: float, reason: str) -> None:
        # a ban this worker already holds as long makes no event, so nothing echoes back
        if self.proxy is not None and seconds > 0:
            self.proxy.ban(host, seconds, reason, self.loop.time())
            self.driver.flush()

    def _peer_unban(self, host: str) -> None:
        if self.proxy is not None:
            self.proxy.unban(host)
            self.driver.flush()

    # ---- calls -----------------------------------------------------------------------------
    def _publish_count(self, uri: str, calls: int) -> None:
        self.counts.publish(self.worker, uri, calls)

    # ---- health: worker 0 decides, the others follow ----------------------------------------
    def _relay_passive(self, uri: str, ok: bool, now: float, cause: str) -> None:
        proxy = self.proxy
        if ok and proxy is not None and proxy.dispatcher.health.state(uri) is State.UP:
            return  # nothing to tell: a success only matters while worker 0 doubts
        self._send_control(LEADER, "passive", uri=uri, ok=ok, cause=cause)

    def _passive(self, uri: str, ok: bool, cause: str) -> None:
        proxy = self.proxy
        assert proxy is not None
        health = proxy.dispatcher.health
        now = self.loop.time()
        event = (
            health.passive_success(uri, now, cause)
            if ok
            else health.passive_failure(uri, now, cause)
        )
        if event is not None:
            self._on_event(event)
            self.driver.flush()
            self._sync()

    def _health_states(self) -> list[list[str]]:
        assert self.proxy is not None
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
            self._broadcast("health", states=states)

    def _follow(self, states: list[list[str]]) -> None:
        proxy = self.proxy
        assert proxy is not None
        health = proxy.dispatcher.health
        now = self.loop.time()
        for uri, state, cause in states:
            if uri in health and health.state(uri) != state:
                note = f"{cause}; worker {self.worker} follows worker {LEADER}"
                event = health.follow(uri, State(state), now, note)
                if event is not None:
                    self._on_event(event)
        self.driver.flush()

    def _tick(self) -> None:
        if self.leader:
            self._syncs += 1
            self._sync(force=self._syncs % RESYNC_EVERY == 0)
            self._sync_timer = self.loop.call_later(SYNC_INTERVAL, self._tick)
        else:
            self._send_control(LEADER, "stats", **self.counters())
            self._sync_timer = self.loop.call_later(STATS_INTERVAL, self._tick)

    def counters(self) -> dict[str, Any]:
        """This worker's traffic counters, as JSON values."""
        traffic = self.core.traffic()
        return {
            "worker": self.worker,
            "stats": dict(traffic.stats),
            "requests": dict(traffic.requests),
            "responses": [[m, k, n] for (m, k), n in traffic.responses.items()],
            "transactions": [traffic.servers, traffic.clients],
            "calls": traffic.calls,
            "handed_over": self.handed_over,
            "taken_over": self.taken_over,
            "drops": dict(traffic.drops) if traffic.drops is not None else {},
            "pending": traffic.pending,
        }

    def worker_counters(self) -> list[dict[str, Any]]:
        """Worker 0's counters and the last ones each other worker sent."""
        rows = {self.worker: self.counters(), **self.peer_stats}
        return [rows[worker] for worker in sorted(rows)]

    # ---- operator actions reach every worker -----------------------------------------------
    def set_weight(self, set_name: str, uri: str, weight: int, cause: str) -> None:
        super().set_weight(set_name, uri, weight, cause)
        self._broadcast("weight", set=set_name, uri=uri, weight=weight, cause=cause)

    def reload_file(self, trigger: str = "SIGHUP") -> ReloadOutcome:
        outcome = super().reload_file(trigger)
        if self.leader and trigger != "SIGHUP" and outcome.ok:  # SIGHUP reached every worker
            self._broadcast("reload", trigger=trigger)
        if self.leader:
            self.loop.call_soon(functools.partial(self._sync, force=True))
        return outcome


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
    balancer = WorkerBalancer(
        config, worker=worker, sockets=sockets, counts=counts, config_path=config_path
    )
    await balancer.start()
    tune_gc()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGHUP, balancer.reload_file, "SIGHUP")
    await stop.wait()
    await balancer.stop()
    return 0
