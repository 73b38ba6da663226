"""Multi-homing: which listener a request leaves from when several listeners share a transport.

On a host with a public and a private side, a request that arrived on the public address and
goes to a registrar on the private network must leave from the private address (and record both
addresses, RFC 3261 16.6 step 4), or the registrar answers to, and later routes to, the wrong
side. The shell knows the host's routing table; it hands the core a ``lookup(host)`` that names
the local address the kernel would send from, and this table maps that address to a listener.
Replies need nothing of this: they leave from the listener their request arrived on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .actions import Target
from .listeners import Listener

LocalAddressLookup = Callable[[str], str | None]


class SourceRouting:
    def __init__(self, listeners: Sequence[Listener], lookup: LocalAddressLookup) -> None:
        self._lookup = lookup
        self._by_address: dict[tuple[str, str], int] = {}
        kinds: dict[tuple[str, int], int] = {}
        for listener in listeners:
            self._by_address.setdefault((listener.transport, listener.host), listener.index)
            kind = (listener.transport, listener.family)
            kinds[kind] = kinds.get(kind, 0) + 1
        self._several = {kind for kind, count in kinds.items() if count > 1}

    def listener_for(self, target: Target) -> int | None:
        """The listener bound to the address the host routes ``target`` from, when there is a
        choice to make (several listeners of its transport and family); else None."""
        family = 6 if ":" in target.host else 4
        if (target.transport, family) not in self._several:
            return None
        local = self._lookup(target.host)
        return None if local is None else self._by_address.get((target.transport, local))
