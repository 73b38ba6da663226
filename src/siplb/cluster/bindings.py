"""NAT bindings shared by the members: which member keeps each one open.

Every member publishes the bindings its registrar front end learns (flow -> {aor, contact,
listener, expires, learned_by}); the rules, on the wall clock ``now``:
- each live binding is kept open by exactly one live member: the owner of its flow name
  (``Ownership.owner_of_key``), whichever member learned it; a member that learns a binding it
  does not own releases it at once, and the owner adopts it at its next read;
- a binding whose expiry has passed is live nowhere: whoever keeps it releases it, and its owner
  removes it from the shared table;
- a member reads the shared table when the live members change and every few seconds; each
  read is the whole table, so what it keeps follows the table whatever it missed.
``BindingShare`` remembers what this member keeps and turns a read into what changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from siplb.cluster.ownership import Ownership


@dataclass(frozen=True, slots=True)
class Assignment:
    """What a read of the shared table changes here, by flow name."""

    adopt: tuple[str, ...] = ()  # keep these open from now on
    release: tuple[str, ...] = ()  # stop keeping these open
    expired: tuple[str, ...] = ()  # owned here and expired: remove them from the table


class BindingShare:
    """The flows this member keeps open (see the module's rules)."""

    def __init__(self) -> None:
        self.kept: set[str] = set()

    def learned(self, flow: str, ownership: Ownership) -> bool:
        """This member learned ``flow``'s binding; False when it must release it (not its own)."""
        if ownership.owns_key(flow.encode("latin-1")):
            self.kept.add(flow)
            return True
        self.kept.discard(flow)
        return False

    def gone(self, flow: str) -> None:
        """``flow``'s binding ended here (unregistered, expired, connection lost)."""
        self.kept.discard(flow)

    def assign(self, expiries: Mapping[str, float], ownership: Ownership, now: float) -> Assignment:
        """A read of the shared table (flow -> expiry): what to adopt, release and remove."""
        adopt: list[str] = []
        release: list[str] = []
        expired: list[str] = []
        live: set[str] = set()
        for flow, expires in expiries.items():
            owned = ownership.owns_key(flow.encode("latin-1"))
            if expires <= now:
                if owned:
                    expired.append(flow)
                continue
            live.add(flow)
            if owned and flow not in self.kept:
                adopt.append(flow)
            elif not owned and flow in self.kept:
                release.append(flow)
        release += [flow for flow in self.kept if flow not in live]
        self.kept.difference_update(release)
        self.kept.update(adopt)
        return Assignment(tuple(sorted(adopt)), tuple(sorted(release)), tuple(sorted(expired)))
