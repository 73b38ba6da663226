"""What the members publish, merged into one member's view of the cluster.

Every member publishes snapshots (never increments, so a lost or repeated write doubles
nothing); every member reads them all and merges them by these rules:
- **calls**: member m's live calls per URI; ``remote_calls()`` sums the LIVE members other than
  this one. A member that leaves drops out at once (``members_changed``), without waiting for
  its keys to expire in the store; counts from a member that is not live are ignored (a live
  member publishes again every tick).
- **health**: each URI's health is decided by its owner, ``ownership.owner_of_key(uri)`` (the
  member that probes it and hears the passive observations); every other member follows the
  owner's decision and ignores the rest. Among the owner's decisions the newest ``at`` wins;
  when the owner changes, the new owner's first decision is taken whatever its ``at`` (its
  clock, not comparable with the old owner's).
- **admin**: operator actions (drain, disable, enable, weight) on ``"<set>|<uri>"`` made on any
  member: the last writer wins, by ``(stamp, by)``, so every member ends on the same action.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from siplb.cluster.member import Member
from siplb.cluster.ownership import Ownership


@dataclass(frozen=True, slots=True)
class HealthDecision:
    """The health owner ``by`` decided ``state`` (a ``dispatch.State`` value) at ``at``."""

    state: str
    cause: str
    by: Member
    at: float


class AdminVerb(StrEnum):
    DRAIN = "drain"
    DISABLE = "disable"
    ENABLE = "enable"
    WEIGHT = "weight"


@dataclass(frozen=True, slots=True)
class AdminAction:
    """An operator's action on ``"<set>|<uri>"``, made on member ``by`` at ``stamp``."""

    verb: AdminVerb
    value: float | None
    stamp: float
    by: Member


def admin_key(set_name: str, uri: str) -> str:
    return f"{set_name}|{uri}"


class ClusterView:
    """One member's merge of what every member published (see the module's rules)."""

    def __init__(self, ownership: Ownership) -> None:
        self.ownership = ownership
        self._calls: dict[Member, dict[str, int]] = {}
        self._health: dict[str, HealthDecision] = {}
        self._admin: dict[str, AdminAction] = {}

    @property
    def me(self) -> Member:
        return self.ownership.me

    def members_changed(self, ownership: Ownership) -> None:
        """The live members changed: a member gone drops out of the counts at once."""
        self.ownership = ownership
        live = set(ownership.live)
        for member in [m for m in self._calls if m not in live]:
            del self._calls[member]

    def calls(self, member: Member, counts: Mapping[str, int]) -> None:
        """``member`` published its live calls per URI (a whole snapshot)."""
        if member in self.ownership.live:
            self._calls[member] = {uri: n for uri, n in counts.items() if n > 0}

    def remote_calls(self, me: Member | None = None) -> dict[str, int]:
        """Live calls per URI held by the live members other than ``me`` (default: this one)."""
        me = self.me if me is None else me
        total: dict[str, int] = {}
        for member, counts in self._calls.items():
            if member != me:
                for uri, n in counts.items():
                    total[uri] = total.get(uri, 0) + n
        return total

    def health_owner(self, uri: str) -> Member:
        return self.ownership.owner_of_key(uri.encode())

    def decides(self, uri: str) -> bool:
        """Whether this member decides ``uri``'s health (else it follows its owner)."""
        return self.health_owner(uri) == self.me

    def health(self, uri: str, decision: HealthDecision) -> HealthDecision | None:
        """A published decision; returned when this member must follow it, else ``None``."""
        if decision.by != self.health_owner(uri):
            return None
        current = self._health.get(uri)
        if current is not None and current.by == decision.by and decision.at <= current.at:
            return None
        self._health[uri] = decision
        return decision

    def followed(self, uri: str) -> HealthDecision | None:
        return self._health.get(uri)

    def admin(self, key: str, action: AdminAction) -> AdminAction | None:
        """A published operator action; returned when it is newer than any seen for ``key``."""
        current = self._admin.get(key)
        if current is not None and (action.stamp, action.by) <= (current.stamp, current.by):
            return None
        self._admin[key] = action
        return action

    def admin_actions(self) -> dict[str, AdminAction]:
        return dict(self._admin)
