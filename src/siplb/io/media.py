"""``MediaControl``: runs the proxy core's media asks against the rtpengines of ``[media]``.

The core parks a message and emits a ``MediaAsk``; the driver runs ``handle(ask)`` in a task and
hands the result back with ``Proxy.media_done``. Here:

- an offer tries the engines in the table's order (``siplb.media.engines``) until one answers
  ``ok``: a timeout or an error reply moves on to the next, so a dead engine costs one timeout
  (less when its port answers ICMP unreachable) and later offers skip it;
- an answer or a delete goes to the engine that took the call's offer (with ``shared``
  engines, the others follow when it fails); a delete forgets the call;
- every engine is pinged every ``ping_interval``, so one that dies between calls is known down,
  and one that comes back is used again, without a call paying for it.

Nothing raises: a failure is ``None``, counted, and the state changes it causes are logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from siplb.media import ng
from siplb.media.asks import ANSWER, DELETE, OFFER, MediaAsk
from siplb.media.engines import EngineTable, MediaView, StateChanged
from siplb.media.ng import Command, Reply
from siplb.media.settings import MediaSettings

from .rtpengine import NgClient, ping_forever

log = logging.getLogger("siplb.media")
NO_ENGINE = "no_engine"  # asks failed with no engine to try (all down, none due for a retry)
FAILED = "failed"  # asks no engine did
BAD_ASK = "bad_ask"  # asks that make no command (no Call-ID): refused, counted
UNKNOWN_CALL = "Unknown call-id"  # rtpengine's error-reason for a call it does not have


def command_for(ask: MediaAsk) -> Command:
    """The ng command an ask becomes."""
    if ask.op == OFFER:
        return ng.offer(
            ask.call_id,
            ask.from_tag,
            ask.sdp,
            to_tag=ask.to_tag,
            via_branch=ask.via_branch,
            options=ask.flags,
            direction=ask.direction,
        )
    if ask.op == ANSWER:
        return ng.answer(
            ask.call_id,
            ask.from_tag,
            ask.to_tag,
            ask.sdp,
            via_branch=ask.via_branch,
            options=ask.flags,
        )
    if ask.op == DELETE:
        return ng.delete(ask.call_id, ask.from_tag, ask.to_tag)
    raise ValueError(f"unknown media op {ask.op!r}")


class MediaControl:
    """The engines of ``[media]``: their sockets, pings, and the call -> engine table."""

    def __init__(self, settings: MediaSettings, *, cookie_prefix: str | None = None) -> None:
        self.settings = settings
        self.client = NgClient(
            timeout=settings.timeout, max_pending=settings.max_pending, cookie_prefix=cookie_prefix
        )
        self.table: EngineTable | None = None  # made at start: it reads the loop's clock
        self._pings: dict[str, asyncio.Task[None]] = {}
        self._reloads: set[asyncio.Task[None]] = set()
        self._reloading = asyncio.Lock()  # one reload at a time (two SIGHUPs in a row)

    def _table(self) -> EngineTable:
        if self.table is None:
            raise RuntimeError("MediaControl.start() first")
        return self.table

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.table = EngineTable(
            self.settings.engines,
            retry_after=self.settings.retry_after,
            max_calls=self.settings.max_calls,
            now=loop.time(),
        )
        await self._open_engines()

    async def close(self) -> None:
        for task in list(self._reloads):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for address in list(self._pings):
            await self._stop_pings(address)
        self.client.close()

    def reconfigure(self, settings: MediaSettings) -> None:
        """``reload`` from synchronous code (the config reload path), in a task of its own."""
        task = asyncio.get_running_loop().create_task(self.reload(settings), name="media reload")
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    async def reload(self, settings: MediaSettings) -> None:
        """A new ``[media]`` (SIGHUP): engines added get sockets and pings, removed ones lose
        them and their calls; kept ones keep their state."""
        async with self._reloading:
            await self._reload(settings)

    async def _reload(self, settings: MediaSettings) -> None:
        table, old = self._table(), self.settings
        self.settings = settings
        self.client.timeout = settings.timeout
        self.client.max_pending = settings.max_pending
        table.retry_after = settings.retry_after
        table.max_calls = settings.max_calls
        removed = table.update(settings.engines, asyncio.get_running_loop().time())
        for address in removed:
            await self._stop_pings(address)
            self.client.close_engine(address)
        if settings.ping_interval != old.ping_interval:  # restart every engine's pings
            for address in list(self._pings):
                await self._stop_pings(address)
        await self._open_engines()

    async def _open_engines(self) -> None:
        for spec in self.settings.engines:
            if await self.client.open(spec) and spec.address not in self._pings:
                self._pings[spec.address] = asyncio.create_task(
                    ping_forever(
                        self.client,
                        spec.address,
                        interval=self.settings.ping_interval,
                        report=self._pinged,
                    ),
                    name=f"media ping {spec.address}",
                )

    async def _stop_pings(self, address: str) -> None:
        task = self._pings.pop(address, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _pinged(self, address: str, reply: Reply | None) -> None:
        table, now = self._table(), asyncio.get_running_loop().time()
        if reply is None:
            self._changed(table.timed_out(address, "ping", now))
        elif reply.ok:
            self._changed(table.succeeded(address, "ping", now))
        else:
            self._changed(table.refused(address, "ping", now, reply.error_reason))

    # ---- the asks ---------------------------------------------------------------------------
    async def handle(self, ask: MediaAsk) -> bytes | None:
        """The engine's SDP for an offer or answer, ``b""`` for a delete done, None when no
        engine did it."""
        table, loop = self._table(), asyncio.get_running_loop()
        try:
            command = command_for(ask)
        except ValueError:  # no Call-ID, or an op we do not know: nothing to send
            self.client.stats[BAD_ASK] += 1
            return None
        targets = table.targets(ask.op, ask.call_id, loop.time(), shared=self.settings.shared)
        if not targets:
            self.client.stats[NO_ENGINE] += 1
            if ask.op == DELETE:
                table.forget(ask.call_id)
            return None
        for address in targets:
            result = await self._try(address, ask, command)
            if result is not None:
                return result
        self.client.stats[FAILED] += 1
        if ask.op == DELETE:
            table.forget(ask.call_id)  # the call is over for SIP: nothing would delete it later
        return None

    async def _try(self, address: str, ask: MediaAsk, command: Command) -> bytes | None:
        """One engine's go at ``ask``: its result, or None (the caller tries the next)."""
        table, loop = self._table(), asyncio.get_running_loop()
        # the latency by time.monotonic(): uvloop's loop.time() is libuv's millisecond clock,
        # cached once per loop turn, too coarse for a sub-millisecond round trip
        started = time.monotonic()
        reply = await self.client.request(address, command)
        latency, now = time.monotonic() - started, loop.time()
        if reply is None:
            self._changed(table.timed_out(address, ask.op, now))
            return None
        if not reply.ok or (ask.op != DELETE and not reply.sdp):
            reason = reply.error_reason or reply.result if not reply.ok else "no SDP in the reply"
            # an engine asked about a call we never gave it (the answer of a call offered
            # elsewhere looks for its engine) did nothing wrong
            fault = reason != UNKNOWN_CALL or table.engine_of(ask.call_id) == address
            self._changed(table.refused(address, ask.op, now, reason, fault=fault))
            if fault:
                log.info(
                    "media engine %s refused %s of %s: %s", address, ask.op, ask.call_id, reason
                )
            return None
        timed = latency if ask.op == OFFER else None
        self._changed(table.succeeded(address, ask.op, now, timed))
        if ask.op == DELETE:
            table.forget(ask.call_id)
            return b""
        table.bind(ask.call_id, address)
        return reply.sdp

    def _changed(self, change: StateChanged | None) -> None:
        if change is None:
            return
        level = logging.WARNING if change.new == "down" else logging.INFO
        log.log(level, "media engine %s is %s (%s)", change.address, change.new, change.reason)

    # ---- readings ---------------------------------------------------------------------------
    def view(self) -> MediaView:
        table = self._table()
        return MediaView(
            engines=table.readings(),
            calls=table.calls,
            forgotten=table.forgotten,
            pending=self.client.pending,
            counters=tuple(sorted(self.client.stats.items())),
        )
