"""Capacity leases: ``max_calls`` held across members with no check-then-act race.

A destination URI with cap C is shared by leases: member m holds a lease L_m and admits a new
call on the URI only while its own live calls are below L_m. The store grants leases one at a
time, atomically (Redis: one Lua script; the workers of one host: shared memory under the
parent's lock), by ``grant(cap, want, others)``, ``others`` being the sum of the other live
members' leases. Each grant keeps the sum of leases at most C, and each member's calls stay
below its lease, so the calls on the URI across the cluster never exceed C, however calls
arrive. The price: a member may refuse a call while another member holds spare lease; the
headroom keeps that rare and the give-back returns unused lease.

``Leases`` is one member's side (pure, told everything):
- ``want = min(cap, active + headroom)``, ``headroom = max(1, ceil(cap / (4 * members)))``;
- a URI is asked for again when ``active + 1 >= lease`` (about to run out) or when the lease
  exceeds ``want`` by more than ``2 * headroom`` (give back);
- a give-back lowers the lease used for admission AT ONCE (to ``want``, which is above the live
  calls), before the store hears of it: the lease admitted against is never above the one the
  store counts for this member;
- alone (one member, or no cluster) the lease is the cap, as without a cluster; joining a
  cluster, a URI admits no new call until its first grant (one tick).
"""

from __future__ import annotations

from collections.abc import Mapping
from math import ceil


def grant(cap: int, want: int, others: int) -> int:
    """The lease a member gets: what it wants, within what the others leave of the cap."""
    return max(0, min(want, cap - others))


def headroom(cap: int, members: int) -> int:
    """How many calls beyond its live ones a member asks for."""
    return max(1, ceil(cap / (4 * max(1, members))))


class Leases:
    """One member's capacity leases (see the module's rules)."""

    def __init__(self, members: int = 1) -> None:
        self.members = max(1, members)
        self._caps: dict[str, int] = {}
        self._leases: dict[str, int] = {}
        self._released: set[str] = set()  # URIs whose cap went: give the lease back

    @property
    def alone(self) -> bool:
        return self.members == 1

    def set_caps(self, caps: Mapping[str, int]) -> None:
        """The ``max_calls`` of every URI that has one."""
        gone = set(self._caps) - set(caps)
        self._caps = dict(caps)
        for uri in gone:
            if self._leases.pop(uri, None) is not None:
                self._released.add(uri)
        self._released -= set(caps)

    def members_changed(self, members: int) -> None:
        """The number of live members (this one included) changed."""
        members = max(1, members)
        if members == 1 or self.alone:
            self._leases.clear()  # alone: the cap; newly in a cluster: nothing until granted
            self._released.clear()
        self.members = members

    def asks(self, active: Mapping[str, int]) -> dict[str, int]:
        """What to ask the store for: URI -> want, only for URIs that need a new grant or give
        some back (0 for a URI whose cap went). ``active`` holds this member's live calls."""
        if self.alone:
            return {}
        out = dict.fromkeys(self._released, 0)
        self._released.clear()
        for uri, cap in self._caps.items():
            calls = active.get(uri, 0)
            room = headroom(cap, self.members)
            want = min(cap, calls + room)
            lease = self._leases.get(uri, 0)
            if lease > want + 2 * room:
                self._leases[uri] = want  # give back now; the store learns it next
                out[uri] = want
            elif calls + 1 >= lease:
                out[uri] = want
        return out

    def granted(self, uri: str, amount: int) -> None:
        """The store granted ``amount`` on ``uri`` (the lease it now counts for this member)."""
        if uri in self._caps and not self.alone:
            self._leases[uri] = max(0, amount)

    def lease(self, uri: str) -> int | None:
        """The calls this member may hold on ``uri``; ``None`` for a URI without a cap."""
        cap = self._caps.get(uri)
        if cap is None:
            return None
        return cap if self.alone else self._leases.get(uri, 0)

    def limits(self) -> dict[str, int]:
        """URI -> calls this member may hold (``Dispatcher.told_limits``)."""
        if self.alone:
            return dict(self._caps)
        return {uri: self._leases.get(uri, 0) for uri in self._caps}
