"""Cluster members and who is live among them.

A member is one balancer process: worker ``worker`` of node ``node``; its tag ``node.worker``
is what a siplb Via branch and a node-to-node frame carry. Workers of one host are members of
one node; nodes are members on other hosts. The same rules hold at both levels.

Membership rules (``Membership``), all on this member's clock ``now``:
- a member is live from the first heartbeat heard from it (``heard``) until it says it leaves
  (``left``, cause ``LEFT``) or is not heard for more than ``dead_after`` (``expire``, cause
  ``SILENT``); a member that comes back joins again;
- this member (``me``) is always live: it never expires and never leaves its own view;
- every change of the live set bumps ``version``, and each change is returned as an event
  (``MemberJoined``, ``MemberLeft``), never logged here.

A store that keeps each member's last heartbeat on its own clock (Redis server time) is read
with ``observe(snapshot, now)``: stamps of different clocks are never compared with ``now``.
A member counts as heard at ``now`` when its stamp has advanced since the previous snapshot, so
a member whose stamp stays still for ``dead_after`` of OUR clock is gone; a member missing from
the snapshot removed itself (``LEFT``). A snapshot is the whole list: a ``Membership`` is fed
either by ``heard`` or by ``observe``, not both. A member seen for the first time joins only when its
stamp is within ``dead_after`` of the newest stamp in the snapshot (the store's clock against
itself); an older one is a dead member's leftover and joins once its stamp moves.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

from siplb.cluster.member import Member, parse_tag
from siplb.cluster.ownership import Ownership

__all__ = [
    "LeaveCause",
    "Member",
    "MemberEvent",
    "MemberJoined",
    "MemberLeft",
    "Membership",
    "parse_tag",
]


class LeaveCause(Enum):
    SILENT = "silent"  # not heard for dead_after
    LEFT = "left"  # said it leaves (a drain), or removed itself from the store


@dataclass(frozen=True, slots=True)
class MemberJoined:
    member: Member
    now: float


@dataclass(frozen=True, slots=True)
class MemberLeft:
    member: Member
    now: float
    cause: LeaveCause


MemberEvent = MemberJoined | MemberLeft


class Membership:
    """The live members as ``me`` hears them (see the module's rules)."""

    def __init__(self, me: Member, dead_after: float) -> None:
        self.me = me
        self.dead_after = dead_after
        self.version = 0
        self._heard: dict[Member, float] = {me: float("-inf")}  # live member -> last heard
        self._info: dict[Member, Mapping[str, object]] = {}
        self._stamps: dict[Member, float] = {}  # store stamp last seen by observe()
        self._live: tuple[Member, ...] = (me,)
        self._ownership: Ownership | None = None

    @property
    def live(self) -> tuple[Member, ...]:
        """The live members, sorted, ``me`` included."""
        return self._live

    def last_heard(self, member: Member) -> float | None:
        """When ``member`` was last heard (our clock); ``None`` when it is not live."""
        return self._heard.get(member) if member != self.me else None

    def info(self, member: Member) -> Mapping[str, object] | None:
        """What ``member`` said about itself with its last heartbeat."""
        return self._info.get(member)

    def heard(
        self, member: Member, now: float, info: Mapping[str, object] | None = None
    ) -> MemberJoined | None:
        """A heartbeat from ``member``; ``MemberJoined`` when it was not live."""
        if info is not None:
            self._info[member] = info
        if member == self.me:
            return None
        joined = member not in self._heard
        self._heard[member] = now
        if not joined:
            return None
        self._changed()
        return MemberJoined(member, now)

    def left(self, member: Member, now: float) -> MemberLeft | None:
        """``member`` says it leaves; ``MemberLeft`` when it was live."""
        return self._remove(member, now, LeaveCause.LEFT)

    def gone(self, member: Member, now: float) -> MemberLeft | None:
        """``member`` fell silent (the store says its heartbeat is too old)."""
        return self._remove(member, now, LeaveCause.SILENT)

    def expire(self, now: float) -> list[MemberLeft]:
        """Members not heard for more than ``dead_after``: gone."""
        limit = now - self.dead_after
        silent = [m for m, at in self._heard.items() if at < limit and m != self.me]
        return [e for m in silent if (e := self._remove(m, now, LeaveCause.SILENT)) is not None]

    def observe(self, snapshot: Mapping[Member, float], now: float) -> list[MemberEvent]:
        """A poll of the store: every member's last heartbeat stamp on the store's clock."""
        events: list[MemberEvent] = []
        newest = max(snapshot.values(), default=0.0)
        for member, stamp in snapshot.items():
            before = self._stamps.get(member)
            self._stamps[member] = stamp
            fresh = stamp > before if before is not None else newest - stamp <= self.dead_after
            if fresh and (joined := self.heard(member, now)) is not None:
                events.append(joined)
        for member in [m for m in self._stamps if m not in snapshot]:
            del self._stamps[member]
        gone = [m for m in self._heard if m not in snapshot and m != self.me]
        events.extend(e for m in gone if (e := self.left(m, now)) is not None)
        events.extend(self.expire(now))
        return events

    def ownership(self) -> Ownership:
        """Who owns what among the current live members (the same object until they change)."""
        if self._ownership is None:
            self._ownership = Ownership(self.me, self._live)
        return self._ownership

    def _remove(self, member: Member, now: float, cause: LeaveCause) -> MemberLeft | None:
        if member == self.me or self._heard.pop(member, None) is None:
            return None
        self._info.pop(member, None)
        self._changed()
        return MemberLeft(member, now, cause)

    def _changed(self) -> None:
        self.version += 1
        self._live = tuple(sorted(self._heard))
        self._ownership = None
