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

A store that keeps each member's last heartbeat on its own clock (Redis server time) judges
liveness on that clock; its reader feeds the verdicts in: ``heard`` for a member live there,
``gone`` (cause ``SILENT``) for one whose heartbeat is too old, ``left`` for one that removed
itself.
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
