"""Call accounting: the live table of calls per destination (docs/design.md section 3 step 7).

A call enters the table when its INVITE is forwarded to a destination (it then counts against
that destination for least-calls and ``max_calls``), moves when its setup fails over, is marked
answered on a 2xx, confirmed by the ACK of that 2xx, and leaves on BYE, a failed setup, CANCEL
or expiry. A 2xx whose ACK never comes (64*T1, RFC 3261 13.3.1.4) ends the call: a caller that
answers nothing must not hold a destination's ``max_calls`` for ``max_call_age``. The number of calls on a
destination is always the size of its set of live keys, so it can never drift or go negative.
Events about unknown keys are ignored: a BYE may come for a call set up before a restart.

The established dialogs are shared with the other members of a cluster as a diff, never as a
whole table: once something drains ``dialog_changes`` the table journals the keys of calls
confirmed (or touched after confirmation) and of confirmed calls that ended, each in a set of at
most ``JOURNAL_LIMIT`` keys (a key that does not fit is counted in ``journal_overflow`` and left
to its expiry elsewhere), and each drain takes at most ``limit`` keys of each: bounded work per
tick whatever the number of calls. Alone (nothing drains) nothing is journaled.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from itertools import islice
from typing import Final

JOURNAL_LIMIT = 50_000  # keys journaled per set (established, ended) between two drains


class CallEntry:
    """One live call. ``seen`` is the time of the last setup attempt, 2xx or in-dialog activity.

    A plain class (a new one per change, never changed in place): made several times per call,
    which a compiled build does natively."""

    __slots__ = ("acked", "confirmed", "key", "seen", "started", "uri")

    def __init__(
        self,
        key: Hashable,
        uri: str,
        started: float,
        seen: float,
        confirmed: bool = False,  # a 2xx answered the INVITE
        acked: bool = False,  # the 2xx's ACK passed
    ) -> None:
        self.key: Final = key
        self.uri: Final = uri
        self.started: Final = started
        self.seen: Final = seen
        self.confirmed: Final = confirmed
        self.acked: Final = acked

    def _fields(self) -> tuple[Hashable, str, float, float, bool, bool]:
        return (self.key, self.uri, self.started, self.seen, self.confirmed, self.acked)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CallEntry):
            return NotImplemented
        return self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment]  # compared, never hashed

    def __repr__(self) -> str:
        key, uri, started, seen, confirmed, acked = self._fields()
        return (
            f"CallEntry(key={key!r}, uri={uri!r}, started={started!r}, seen={seen!r}, "
            f"confirmed={confirmed!r}, acked={acked!r})"
        )


@dataclass(frozen=True, slots=True)
class Established:
    """A confirmed dialog to publish: its key, destination and when it expires (``now``'s clock)."""

    key: Hashable
    uri: str
    expires: float


@dataclass(frozen=True, slots=True)
class DialogChanges:
    """The dialogs established and ended since the previous drain (at most ``limit`` of each)."""

    established: tuple[Established, ...] = ()
    ended: tuple[Hashable, ...] = ()


class CallAccounting:
    """The live call table; keys are opaque (the proxy uses Call-ID and From tag)."""

    def __init__(self) -> None:
        self._calls: dict[Hashable, CallEntry] = {}
        self._by_uri: dict[str, set[Hashable]] = {}
        self._confirmed_total: dict[str, int] = {}
        self._journaling = False  # set by the first drain of dialog_changes
        self._established: dict[Hashable, None] = {}  # insertion-ordered sets of keys
        self._ended: dict[Hashable, None] = {}
        self.journal_overflow = 0

    def setup_started(self, key: Hashable, uri: str, now: float) -> None:
        """An initial INVITE was forwarded to ``uri``. A known key starts over on ``uri``."""
        self._unlink(key)
        self._link(CallEntry(key, uri, started=now, seen=now))

    def moved(self, key: Hashable, new_uri: str, now: float) -> None:
        """The setup failed over to ``new_uri``."""
        entry = self._calls.get(key)
        if entry is None or entry.confirmed:
            return
        self._unlink(key)
        self._link(CallEntry(entry.key, new_uri, entry.started, now, entry.confirmed, entry.acked))

    def confirmed(self, key: Hashable, now: float) -> None:
        """A 2xx answered the INVITE; a retransmitted 2xx counts once."""
        entry = self._calls.get(key)
        if entry is None or entry.confirmed:
            return
        self._calls[key] = CallEntry(key, entry.uri, entry.started, now, True, entry.acked)
        self._confirmed_total[entry.uri] = self._confirmed_total.get(entry.uri, 0) + 1
        if self._journaling:
            self._ended.pop(key, None)
            self._journal(self._established, key)

    def acked(self, key: Hashable, now: float) -> None:
        """The ACK of the 2xx passed: the dialog is confirmed (RFC 3261 13.2.2.4)."""
        entry = self._calls.get(key)
        if entry is not None and entry.confirmed and not entry.acked:
            self._calls[key] = CallEntry(key, entry.uri, entry.started, now, True, True)

    def touch(self, key: Hashable, now: float) -> None:
        """In-dialog activity (a re-INVITE, an UPDATE) keeps a long call from expiring; after a
        2xx it also shows the dialog is up, as its ACK would."""
        entry = self._calls.get(key)
        if entry is not None:
            confirmed = entry.confirmed
            self._calls[key] = CallEntry(key, entry.uri, entry.started, now, confirmed, confirmed)
            if entry.confirmed and self._journaling:
                self._journal(self._established, key)  # its expiry moved

    def ended(self, key: Hashable) -> CallEntry | None:
        """BYE, failed setup or CANCEL; returns the entry removed, if any."""
        return self._unlink(key)

    def expire(
        self,
        now: float,
        max_age: float,
        setup_timeout: float,
        ack_timeout: float = float("inf"),
    ) -> tuple[CallEntry, ...]:
        """Remove and return calls not seen for ``max_age``, setups older than ``setup_timeout``
        and answered calls whose ACK has not come within ``ack_timeout`` of the 2xx."""
        stale = [
            entry
            for entry in self._calls.values()
            if _stale(entry, now, max_age, setup_timeout, ack_timeout)
        ]
        for entry in stale:
            self._unlink(entry.key)
        return tuple(stale)

    def dialog_changes(self, limit: int, max_age: float) -> DialogChanges:
        """Drain up to ``limit`` established and ``limit`` ended dialogs journaled since the
        previous drain; an established one expires ``max_age`` after it was last seen. The
        first drain starts the journal with every confirmed call."""
        if not self._journaling:
            self._journaling = True
            for entry in self._calls.values():
                if entry.confirmed:
                    self._journal(self._established, entry.key)
        keys = list(islice(self._established, limit))
        ended = tuple(islice(self._ended, limit))
        for key in keys:
            del self._established[key]
        for key in ended:
            del self._ended[key]
        established = tuple(
            Established(key, call.uri, call.seen + max_age)
            for key in keys
            if (call := self._calls.get(key)) is not None
        )
        return DialogChanges(established, ended)

    def _journal(self, keys: dict[Hashable, None], key: Hashable) -> None:
        if key in keys or len(keys) < JOURNAL_LIMIT:
            keys[key] = None
        else:
            self.journal_overflow += 1

    def unconfirmed(self) -> int:
        """Calls answered with a 2xx whose ACK has not passed yet."""
        return sum(1 for entry in self._calls.values() if entry.confirmed and not entry.acked)

    def active(self, uri: str) -> int:
        """Live calls (in setup or confirmed) on ``uri``."""
        keys = self._by_uri.get(uri)
        return 0 if keys is None else len(keys)

    def calls_total(self, uri: str) -> int:
        """Calls ever confirmed on ``uri`` (a counter, for calls per second)."""
        return self._confirmed_total.get(uri, 0)

    def get(self, key: Hashable) -> CallEntry | None:
        return self._calls.get(key)

    def uris(self) -> frozenset[str]:
        """Destinations with at least one live call."""
        return frozenset(self._by_uri)

    def __len__(self) -> int:
        return len(self._calls)

    def __contains__(self, key: object) -> bool:
        return key in self._calls

    def _link(self, entry: CallEntry) -> None:
        self._calls[entry.key] = entry
        keys = self._by_uri.setdefault(entry.uri, set())
        keys.add(entry.key)

    def _unlink(self, key: Hashable) -> CallEntry | None:
        entry = self._calls.pop(key, None)
        if entry is not None:
            if entry.confirmed and self._journaling:
                self._established.pop(key, None)
                self._journal(self._ended, key)
            keys = self._by_uri[entry.uri]
            keys.discard(key)
            if not keys:
                del self._by_uri[entry.uri]
        return entry


def _stale(entry: CallEntry, now: float, max_age: float, setup: float, ack: float) -> bool:
    age = now - entry.seen
    if not entry.confirmed:
        return age > setup
    return age > (max_age if entry.acked else min(ack, max_age))
