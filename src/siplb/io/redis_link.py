"""The link to the cluster's Redis: one pipelined batch at a time, never an exception.

A member talks to Redis once per tick (``[cluster] heartbeat``, 200 ms): it sends one batch of
commands (its heartbeat, its counts, its lease asks, the reads it needs) and reads the replies.
Nothing on the packet path waits for this link. Its rules:

- Redis down is an input, not an exception: ``exchange`` returns None when the batch could not
  be run (connection refused or lost, a timeout, a replica that is no longer the primary), and
  the link's ``up`` goes False. The change of state is logged once, each way; ``errors`` counts
  the failed batches and ``reconnects`` the times the link came back.
- Short socket timeouts (``TIMEOUT``) and no retries inside redis-py: a dead Redis costs one
  tick about half a second at most, and the next tick tries again.
- With ``sentinels``, the client is a Sentinel ``master_for(service)``: each new connection
  asks the Sentinels where the primary is, so a failover is followed without a restart. An
  open connection is checked too, once a ``PRIMARY_CHECK``: after a forced failover the old
  primary goes on accepting writes for seconds (a Sentinel waits about 8 s before it makes a
  primary that is alive a replica), writes the cluster would lose; when the Sentinels name
  another primary, the connections are dropped. One to a demoted primary also fails on its
  first write (READONLY) and is dropped.
- Lua scripts are registered once (``register_script``) and run inside batches by their SHA;
  when the server does not know them (a restarted Redis, a promoted replica) they are loaded and
  the batch is run once more. Batches are therefore written to be idempotent: snapshots and
  grants, never increments.

``run(steps)`` builds a batch from ``Step`` values (a builder and a reader of its replies,
see ``siplb.io.cluster_store``) and returns each step's reading.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar, cast

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, ReadOnlyError, RedisError

from siplb.settings import ClusterSettings

log = logging.getLogger("siplb.redis")

TIMEOUT = 0.5  # seconds: connect, and each read or write on the socket
PRIMARY_CHECK = 1.0  # seconds between two questions to the Sentinels: which is the primary?
T_co = TypeVar("T_co", covariant=True)
Build = Callable[[Pipeline], object]  # adds commands to the pipeline (replies come later)


@dataclass(frozen=True, slots=True)
class Step(Generic[T_co]):
    """Commands for one batch (``build`` adds them to the pipeline) and how their replies read
    (``read`` gets exactly the replies of the commands ``build`` added)."""

    build: Build
    read: Callable[[list[Any]], T_co]


class _SentinelPool(Protocol):
    """What is used of redis-py's SentinelConnectionPool (which it leaves untyped)."""

    async def get_master_address(self) -> tuple[str, int]: ...


class RedisLink:
    """The cluster's Redis, from ``[cluster] redis`` or ``sentinels`` + ``service``."""

    def __init__(self, settings: ClusterSettings, *, timeout: float = TIMEOUT) -> None:
        self.settings = settings
        self.timeout = timeout
        self.where = shown_url(settings.redis) if settings.redis else f"Sentinel {settings.service}"
        self.sentinel: Sentinel | None = None
        self.client: Redis = self._client()
        self.up = False
        self.errors = 0  # batches that failed (Redis unreachable, timed out, demoted)
        self.reconnects = 0  # times the link came back after it was down
        self.step_errors = 0  # steps whose commands Redis refused (a bug, or a script error)
        self.last_error = ""
        self._known = False  # whether a state was reported yet
        self._primary_checked = -PRIMARY_CHECK  # monotonic time of the last Sentinel check
        self._scripts: list[AsyncScript] = []

    def _client(self) -> Redis:
        options: dict[str, Any] = {
            "socket_timeout": self.timeout,
            "socket_connect_timeout": self.timeout,
            "retry": Retry(NoBackoff(), 0),  # the next tick is the retry
            "decode_responses": True,  # redis-py parses with hiredis when it is installed
            "client_name": f"siplb-{self.settings.node_id}",
        }
        if self.settings.redis is not None:
            return Redis.from_url(self.settings.redis, **options)
        sentinels = [(address.host, address.port or 0) for address in self.settings.sentinels]
        sentinel_options = {key: options[key] for key in ("socket_timeout", "retry")}
        sentinel_options["socket_connect_timeout"] = self.timeout
        make_sentinel = cast("Callable[..., Sentinel]", Sentinel)  # redis-py leaves it untyped
        self.sentinel = make_sentinel(sentinels, sentinel_kwargs=sentinel_options, **options)
        assert self.settings.service is not None  # the config checked
        return cast("Redis", self.sentinel.master_for(self.settings.service))

    def register_script(self, text: str) -> AsyncScript:
        """A Lua script, to run in batches with ``pipe.evalsha(script.sha, ...)``."""
        script = self.client.register_script(text)
        self._scripts.append(script)
        return script

    async def exchange(self, build: Build) -> list[Any] | None:
        """Run the commands ``build`` adds to a pipeline as one batch; their replies (a refused
        command's reply is its exception), or None when Redis could not be reached."""
        replies = await self._execute(build)
        if replies is not None and any(isinstance(reply, NoScriptError) for reply in replies):
            if not await self._load_scripts():
                return None
            replies = await self._execute(build)
        return replies

    async def run(self, steps: Sequence[Step[Any]]) -> list[Any] | None:
        """Run ``steps`` as one batch: each one's reading (None for a step whose commands
        Redis refused), or None when Redis could not be reached."""
        sizes: list[int] = []

        def build(pipe: Pipeline) -> None:
            sizes.clear()  # the batch may be built twice (scripts loaded in between)
            for step in steps:
                before = len(pipe.command_stack)
                step.build(pipe)
                sizes.append(len(pipe.command_stack) - before)

        replies = await self.exchange(build)
        if replies is None:
            return None
        readings: list[Any] = []
        start = 0
        for step, size in zip(steps, sizes, strict=True):
            part = replies[start : start + size]
            start += size
            readings.append(self._read(step, part))
        return readings

    async def server_time_ms(self) -> int | None:
        """Redis's clock in milliseconds (the members' common clock), or None when down."""
        replies = await self.exchange(lambda pipe: pipe.time())
        if replies is None or isinstance(replies[0], Exception):
            return None
        return time_ms(replies[0])

    async def close(self) -> None:
        await self.client.aclose()
        if self.sentinel is not None:
            for sentinel in self.sentinel.sentinels:
                await sentinel.aclose()

    # the batch itself, and the link's state

    async def _execute(self, build: Build) -> list[Any] | None:
        pipe = self.client.pipeline(transaction=False)
        build(pipe)
        if not pipe.command_stack:
            return []
        try:
            async with asyncio.timeout(2 * self.timeout):
                await self._check_primary()
                replies: list[Any] = await pipe.execute(raise_on_error=False)
        except (RedisError, OSError, TimeoutError) as exc:
            await self._went_down(exc)
            return None
        demoted = next((reply for reply in replies if isinstance(reply, ReadOnlyError)), None)
        if demoted is not None:  # a primary that became a replica: ask the Sentinels again
            await self._went_down(demoted)
            return None
        self._came_up()
        return replies

    async def _check_primary(self) -> None:
        """With Sentinels, once a ``PRIMARY_CHECK``: ask them for the primary; the pool drops
        its connections when that changed."""
        now = time.monotonic()
        if self.sentinel is None or now - self._primary_checked < PRIMARY_CHECK:
            return
        pool = cast("_SentinelPool", self.client.connection_pool)
        await pool.get_master_address()
        self._primary_checked = now

    async def _load_scripts(self) -> bool:
        def build(pipe: Pipeline) -> None:
            for script in self._scripts:
                pipe.script_load(script.script)

        replies = await self._execute(build)
        return replies is not None and not any(isinstance(r, Exception) for r in replies)

    def _read(self, step: Step[Any], replies: list[Any]) -> Any:
        refused = next((reply for reply in replies if isinstance(reply, Exception)), None)
        if refused is not None:
            self.step_errors += 1
            log.error("Redis refused a command: %s", refused)
            return None
        return step.read(replies)

    def _came_up(self) -> None:
        if self.up:
            return
        if self._known:
            self.reconnects += 1
        self.up = self._known = True
        log.info("Redis link up (%s)", self.where)

    async def _went_down(self, exc: BaseException) -> None:
        self.errors += 1
        self.last_error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        with contextlib.suppress(RedisError, OSError):  # half-read connections are useless
            await self.client.connection_pool.disconnect()
        if self.up or not self._known:
            log.warning(
                "Redis link down (%s): %s; balancing on local state until it is back",
                self.where,
                self.last_error,
            )
        self.up = False
        self._known = True


def shown_url(url: str) -> str:
    """A Redis URL fit for a log line: without its user name and password."""
    parts = urllib.parse.urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


def time_ms(reply: Any) -> int:
    """The reply of ``TIME`` (seconds, microseconds) in milliseconds."""
    seconds, micros = reply
    return int(seconds) * 1000 + int(micros) // 1000
