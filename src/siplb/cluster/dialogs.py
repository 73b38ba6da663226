"""Established dialogs of members that died: who closes them, and until when they are kept.

Every member publishes its confirmed dialogs (Call-ID -> destination URI and expiry), so that
when it dies the survivors know its calls. The rules, on the wall clock ``now`` (the expiries
are shared between hosts):
- when a member is seen gone because it fell silent (not when it left on purpose: a drained
  member ended or handed over its calls), each survivor reads that member's dialogs once and
  keeps, as orphans, those whose Call-ID it owns now (``Ownership.owner_of_key``): the BYE of
  such a call reaches its Call-ID's owner, so exactly one survivor keeps each;
- an orphan does not count against any cap: the dead member's calls stop counting when its
  published counts expire; an orphan only lets a survivor close the call when its BYE comes;
- an orphan is kept until its expiry or until it is closed (``close``), whichever comes first;
  a dialog already expired when read is not kept;
- at most ``limit`` orphans are kept; more are counted in ``refused``, never stored.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from siplb.cluster.member import Member
from siplb.cluster.ownership import Ownership

ORPHAN_LIMIT = 100_000


@dataclass(frozen=True, slots=True)
class Orphan:
    """A dialog of a dead member that this member closes when its BYE comes."""

    call_id: str
    uri: str
    expires: float  # wall clock
    member: Member  # the dead member that held it


class Orphans:
    """The orphans this member keeps (see the module's rules)."""

    def __init__(self, limit: int = ORPHAN_LIMIT) -> None:
        self.limit = limit
        self.refused = 0
        self._by_call: dict[str, Orphan] = {}
        self._expiries: list[tuple[float, str]] = []  # a heap; closed entries linger until due

    def take(
        self,
        dead: Member,
        dialogs: Mapping[str, Mapping[str, Any]],
        ownership: Ownership,
        now: float,
    ) -> int:
        """``dead``'s dialogs as read (call-id -> {uri, expires}): keep the ones this member
        owns and that have not expired; returns how many were kept."""
        kept = 0
        for call_id, dialog in dialogs.items():
            orphan = _orphan(call_id, dialog, dead)
            if orphan is None or orphan.expires <= now:
                continue
            if ownership.owner_of_key(call_id.encode("latin-1")) != ownership.me:
                continue
            if call_id not in self._by_call and len(self._by_call) >= self.limit:
                self.refused += 1
                continue
            self._by_call[call_id] = orphan
            heapq.heappush(self._expiries, (orphan.expires, call_id))
            kept += 1
        return kept

    def close(self, call_id: str) -> Orphan | None:
        """The BYE of ``call_id`` came here: the orphan closed, or None when it is not one."""
        return self._by_call.pop(call_id, None)

    def expire(self, now: float) -> int:
        """Drop the orphans whose expiry has passed; returns how many."""
        dropped = 0
        heap = self._expiries
        while heap and heap[0][0] <= now:
            expires, call_id = heapq.heappop(heap)
            orphan = self._by_call.get(call_id)
            if orphan is not None and orphan.expires == expires:
                del self._by_call[call_id]
                dropped += 1
        if len(heap) > 2 * len(self._by_call) + 64:  # many closed: rebuild the heap
            self._expiries = [(o.expires, o.call_id) for o in self._by_call.values()]
            heapq.heapify(self._expiries)
        return dropped

    def get(self, call_id: str) -> Orphan | None:
        return self._by_call.get(call_id)

    def per_uri(self) -> dict[str, int]:
        """Orphans per destination URI (shown, never counted against a cap)."""
        return dict(Counter(orphan.uri for orphan in self._by_call.values()))

    def __len__(self) -> int:
        return len(self._by_call)

    def __contains__(self, call_id: object) -> bool:
        return call_id in self._by_call


def dialog_value(uri: str, expires: float) -> dict[str, Any]:
    """What a member publishes for one of its dialogs."""
    return {"uri": uri, "expires": round(expires, 3)}


def _orphan(call_id: str, dialog: Mapping[str, Any], dead: Member) -> Orphan | None:
    try:
        return Orphan(call_id, str(dialog["uri"]), float(dialog["expires"]), dead)
    except (KeyError, TypeError, ValueError):
        return None
