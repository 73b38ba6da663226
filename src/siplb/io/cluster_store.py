"""The cluster's state in Redis: key names, Lua scripts, and the steps of a member's batch.

Every key starts with ``siplb:<cluster name>:`` (``P`` below); writes are snapshots, never
increments, so a batch run twice (``RedisLink`` does that after loading scripts) or a member
that re-syncs after Redis came back never doubles a count.

    P members            sorted set  tag -> Redis time (ms) of its last heartbeat
    P member:<tag>       hash        peer, config hash, calls, started, version (TTL)
    P lease:<uri>:<tag>  string      calls <tag> may hold on <uri> (TTL; granted by LEASE)
    P calls:<tag>        hash        uri -> live calls of <tag> (TTL; replaced whole)
    P health             hash        uri -> JSON {state, cause, by, at} (by the URI's owner)
    P admin              hash        "<set>|<uri>" -> JSON {op, value, stamp, by}
    P dialog:<tag>       hash        call-id -> JSON {uri, expires} (TTL)
    P bindings           hash        flow -> JSON {aor, contact, listener, expires, learned_by}

Time is Redis's (``TIME`` inside the scripts), so the members' clocks do not matter. A member
is live while its last heartbeat is less than ``dead_after`` old.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from redis.asyncio.client import Pipeline
from redis.typing import EncodableT, FieldT

from siplb.settings import ClusterSettings

from .redis_link import RedisLink, Step, time_ms

FORGET_MS = 600_000  # a member not heard for 10 minutes leaves the members set

# KEYS: members, member:<tag>. ARGV: tag, ttl_ms, forget_ms, then field, value, ...
# Stamps the member with Redis's time, writes its hash; returns that time (ms).
HEARTBEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[3]))
if #ARGV > 3 then
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[2], unpack(ARGV, 4))
end
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return now
"""

# KEYS: members, lease:<uri>:<tag>. ARGV: lease:<uri>: prefix, tag, cap, want, ttl_ms,
# dead_after_ms. grant(cap, want, others) = max(0, min(want, cap - others)), where others is the
# sum of the leases the OTHER live members hold on the URI, all read in one atomic step: the
# leases of the live members never add up to more than the cap. Returns {grant, others}.
LEASE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local live = redis.call('ZRANGEBYSCORE', KEYS[1], now - tonumber(ARGV[6]), '+inf')
local others = 0
for _, tag in ipairs(live) do
  if tag ~= ARGV[2] then
    local held = redis.call('GET', ARGV[1] .. tag)
    if held then others = others + tonumber(held) end
  end
end
local grant = math.max(0, math.min(tonumber(ARGV[4]), tonumber(ARGV[3]) - others))
redis.call('SET', KEYS[2], grant, 'PX', ARGV[5])
return {grant, others}
"""

# KEYS: a hash. ARGV: ttl_ms (0: none), then field, value, ... Replaces the hash whole.
REPLACE = """
redis.call('DEL', KEYS[1])
if #ARGV > 1 then
  redis.call('HSET', KEYS[1], unpack(ARGV, 2))
  if tonumber(ARGV[1]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
end
return #ARGV - 1
"""


@dataclass(frozen=True, slots=True)
class Members:
    """The members set as read: each tag's last heartbeat and Redis's time, in ms."""

    now_ms: int
    last_seen: Mapping[str, int]

    def live(self, dead_after_ms: int) -> tuple[str, ...]:
        """The tags heard within ``dead_after_ms``, sorted."""
        return tuple(
            sorted(tag for tag, ms in self.last_seen.items() if self.now_ms - ms < dead_after_ms)
        )


@dataclass(frozen=True, slots=True)
class Lease:
    """A grant: the calls a member may hold on a URI, and what the others held then."""

    granted: int
    others: int


class ClusterStore:
    """The steps a member puts in its batches; each returns a ``Step`` for ``RedisLink.run``."""

    def __init__(self, link: RedisLink, settings: ClusterSettings) -> None:
        self.link = link  # where the scripts are registered, and the steps run
        self.prefix = settings.prefix
        self.ttl_ms = round(settings.lease_ttl * 1000)
        self.dead_after_ms = round(settings.dead_after * 1000)
        self._heartbeat = link.register_script(HEARTBEAT).sha
        self._lease = link.register_script(LEASE).sha
        self._replace = link.register_script(REPLACE).sha

    # key names

    @property
    def members_key(self) -> str:
        return f"{self.prefix}members"

    def member_key(self, tag: str) -> str:
        return f"{self.prefix}member:{tag}"

    def lease_key(self, uri: str, tag: str) -> str:
        return f"{self.prefix}lease:{uri}:{tag}"

    def calls_key(self, tag: str) -> str:
        return f"{self.prefix}calls:{tag}"

    def dialogs_key(self, tag: str) -> str:
        return f"{self.prefix}dialog:{tag}"

    @property
    def health_key(self) -> str:
        return f"{self.prefix}health"

    @property
    def admin_key(self) -> str:
        return f"{self.prefix}admin"

    @property
    def bindings_key(self) -> str:
        return f"{self.prefix}bindings"

    # membership

    def heartbeat(self, tag: str, fields: Mapping[str, str | int | float]) -> Step[int]:
        """Stamp ``tag`` live now and replace its ``member:<tag>`` hash with ``fields``;
        reads Redis's time of the stamp (ms)."""
        args = [tag, self.ttl_ms, FORGET_MS, *_pairs(fields)]
        keys = (self.members_key, self.member_key(tag))
        return Step(
            lambda pipe: pipe.evalsha(self._heartbeat, 2, *keys, *args),
            lambda replies: int(replies[0]),
        )

    def leave(self, tag: str, uris: Iterable[str] = ()) -> Step[None]:
        """A draining member removes itself, its counts and its leases on ``uris``."""
        keys = [self.member_key(tag), self.calls_key(tag)]
        keys += [self.lease_key(uri, tag) for uri in uris]

        def build(pipe: Pipeline) -> None:
            pipe.zrem(self.members_key, tag)
            pipe.delete(*keys)

        return Step(build, _none)

    def members(self) -> Step[Members]:
        """Every member's last heartbeat, with Redis's time to judge them by."""

        def build(pipe: Pipeline) -> None:
            pipe.zrange(self.members_key, 0, -1, withscores=True)
            pipe.time()

        return Step(build, _read_members)

    def member_info(self, tags: Iterable[str]) -> Step[dict[str, dict[str, str]]]:
        """The ``member:<tag>`` hashes of ``tags`` (an expired one is left out)."""
        return self._hashes([(tag, self.member_key(tag)) for tag in tags], str)

    # capacity leases and call counts

    def ask_lease(self, uri: str, tag: str, cap: int, want: int) -> Step[Lease]:
        """Ask for ``want`` calls on ``uri`` (cap ``cap``): the grant, also stored as ``tag``'s
        lease (TTL ``lease_ttl``). Asking again with the same ``want`` refreshes it."""
        keys = (self.members_key, self.lease_key(uri, tag))
        args = (self.lease_key(uri, ""), tag, cap, want, self.ttl_ms, self.dead_after_ms)
        return Step(
            lambda pipe: pipe.evalsha(self._lease, 2, *keys, *args),
            lambda replies: Lease(int(replies[0][0]), int(replies[0][1])),
        )

    def publish_calls(self, tag: str, calls: Mapping[str, int]) -> Step[None]:
        """Replace ``tag``'s counts with ``calls`` (uri -> live calls; zeros left out)."""
        fields = {uri: count for uri, count in calls.items() if count > 0}
        return self._replace_step(self.calls_key(tag), fields, self.ttl_ms)

    def read_calls(self, tags: Iterable[str]) -> Step[dict[str, dict[str, int]]]:
        """Each tag's counts (uri -> live calls); a tag whose hash expired is left out."""
        return self._hashes([(tag, self.calls_key(tag)) for tag in tags], int)

    # health, operator actions, dialogs, bindings: JSON values in hashes

    def write_health(self, entries: Mapping[str, Mapping[str, Any]]) -> Step[None]:
        """uri -> {state, cause, by, at}, by the URI's health owner."""
        return self._put(self.health_key, entries)

    def read_health(self) -> Step[dict[str, dict[str, Any]]]:
        return self._read_json(self.health_key)

    def write_admin(self, entries: Mapping[str, Mapping[str, Any]]) -> Step[None]:
        """``admin_field(set, uri)`` -> {op, value, stamp, by}."""
        return self._put(self.admin_key, entries)

    def read_admin(self) -> Step[dict[str, dict[str, Any]]]:
        return self._read_json(self.admin_key)

    def write_dialogs(
        self,
        tag: str,
        put: Mapping[str, Mapping[str, Any]],
        remove: Iterable[str] = (),
        *,
        ttl_ms: int,
    ) -> Step[None]:
        """Add or update ``tag``'s dialogs (call-id -> {uri, expires}), remove ended ones, and
        keep the hash ``ttl_ms`` longer (it outlives a dead member for its calls' BYEs)."""
        return self._put(self.dialogs_key(tag), put, remove, ttl_ms=ttl_ms)

    def read_dialogs(self, tag: str) -> Step[dict[str, dict[str, Any]]]:
        return self._read_json(self.dialogs_key(tag))

    def remove_dialogs(self, tag: str, call_ids: Iterable[str]) -> Step[None]:
        """Remove dialogs of ``tag`` closed elsewhere (a dead member's); its TTL is left alone."""
        return self._put(self.dialogs_key(tag), {}, call_ids)

    def write_bindings(
        self, put: Mapping[str, Mapping[str, Any]], remove: Iterable[str] = ()
    ) -> Step[None]:
        return self._put(self.bindings_key, put, remove)

    def read_bindings(self) -> Step[dict[str, dict[str, Any]]]:
        return self._read_json(self.bindings_key)

    # shared shapes

    def _replace_step(self, key: str, fields: Mapping[str, Any], ttl_ms: int) -> Step[None]:
        args = [ttl_ms, *_pairs(fields)]
        return Step(lambda pipe: pipe.evalsha(self._replace, 1, key, *args), _none)

    def _put(
        self,
        key: str,
        put: Mapping[str, Mapping[str, Any]],
        remove: Iterable[str] = (),
        *,
        ttl_ms: int = 0,
    ) -> Step[None]:
        mapping: dict[FieldT, EncodableT] = {name: _dumps(value) for name, value in put.items()}
        gone = [name for name in remove if name not in mapping]

        def build(pipe: Pipeline) -> None:
            if mapping:
                pipe.hset(key, mapping=mapping)
            if gone:
                pipe.hdel(key, *gone)
            if ttl_ms and (mapping or gone):
                pipe.pexpire(key, ttl_ms)

        return Step(build, _none)

    def _read_json(self, key: str) -> Step[dict[str, dict[str, Any]]]:
        return Step(lambda pipe: pipe.hgetall(key), lambda replies: _loads_all(replies[0]))

    def _hashes(
        self, named: list[tuple[str, str]], value: Callable[[str], Any]
    ) -> Step[dict[str, Any]]:
        def build(pipe: Pipeline) -> None:
            for _, key in named:
                pipe.hgetall(key)

        def read(replies: list[Any]) -> dict[str, Any]:
            return {
                name: {field: value(item) for field, item in reply.items()}
                for (name, _), reply in zip(named, replies, strict=True)
                if reply
            }

        return Step(build, read)


def admin_field(set_name: str, uri: str) -> str:
    """The ``admin`` hash's field for an operator action on ``uri`` in ``set_name``."""
    return f"{set_name}|{uri}"


def _read_members(replies: list[Any]) -> Members:
    entries, now = replies
    return Members(time_ms(now), {tag: int(score) for tag, score in entries})


def _pairs(fields: Mapping[str, Any]) -> list[Any]:
    return [item for pair in fields.items() for item in pair]


def _dumps(value: Mapping[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def _loads_all(reply: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """A hash of JSON objects; a value that is not one is left out (a newer or broken writer)."""
    values: dict[str, dict[str, Any]] = {}
    for name, text in reply.items():
        try:
            value = json.loads(text)
        except ValueError:
            continue
        if isinstance(value, dict):
            values[name] = value
    return values


def _none(replies: list[Any]) -> None:
    return None
