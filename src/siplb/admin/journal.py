"""What the balancer did, for operators: a ring of recent events and the counters behind metrics.

The balancer's shell hands every event the proxy core reports to ``Recorder.observe``; reloads
and operator actions are recorded by the shell itself. Counting here (failovers by destination,
drops by reason, reloads by result) costs one dictionary update per event; the Prometheus
exposition reads these counters at scrape time, so no metric object is touched per packet.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass

from siplb.dispatch import StateChanged
from siplb.proxy.actions import CallsExpired, FailedOver, MessageDropped

JOURNAL_SIZE = 500


@dataclass(frozen=True, slots=True)
class Entry:
    """One recent event. ``kind``: state, failover, reload, weight, expired."""

    id: int
    at: float  # seconds since the epoch
    kind: str
    message: str
    uri: str | None = None
    set_name: str | None = None
    old: str | None = None
    new: str | None = None
    cause: str | None = None

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "id": self.id,
            "at": round(self.at, 3),
            "kind": self.kind,
            "message": self.message,
        }
        optional = {
            "uri": self.uri,
            "set": self.set_name,
            "old": self.old,
            "new": self.new,
            "cause": self.cause,
        }
        out.update({key: value for key, value in optional.items() if value is not None})
        return out


class Journal:
    """The last ``size`` entries, numbered from 1 so a reader can ask for what came after."""

    def __init__(self, size: int = JOURNAL_SIZE) -> None:
        self._entries: deque[Entry] = deque(maxlen=size)
        self.last_id = 0

    def add(
        self,
        kind: str,
        message: str,
        at: float,
        *,
        uri: str | None = None,
        set_name: str | None = None,
        old: str | None = None,
        new: str | None = None,
        cause: str | None = None,
    ) -> Entry:
        self.last_id += 1
        entry = Entry(self.last_id, at, kind, message, uri, set_name, old, new, cause)
        self._entries.append(entry)
        return entry

    def after(self, last_seen: int = 0, limit: int = JOURNAL_SIZE) -> list[Entry]:
        """Entries newer than id ``last_seen``, oldest first, at most the ``limit`` newest."""
        if last_seen >= self.last_id or limit <= 0:
            return []
        newer = [entry for entry in self._entries if entry.id > last_seen]
        return newer[-limit:]

    def __len__(self) -> int:
        return len(self._entries)


def drop_category(reason: str) -> str:
    """A bounded label for a drop reason: the fixed text before any detail after a colon."""
    return reason.partition(":")[0].strip() or "unknown"


class Recorder:
    """The journal plus the event counters the metrics read."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.journal = Journal()
        self.failovers: Counter[tuple[str, str]] = Counter()  # (set, uri failed over from)
        self.drops: Counter[str] = Counter()  # drop_category(reason)
        self.reloads: Counter[str] = Counter()  # "ok" | "refused"
        self.auth_refusals = 0
        self.last_reload_at: float | None = None

    def observe(self, event: object, offset: float) -> None:
        """A proxy event; ``offset`` turns the core's clock into epoch seconds."""
        if isinstance(event, MessageDropped):
            self.drops[drop_category(event.reason)] += 1
        elif isinstance(event, StateChanged):
            self.state_changed(event, event.at + offset)
        elif isinstance(event, FailedOver):
            self.failovers[(event.set_name, event.uri)] += 1
            self.journal.add(
                "failover",
                f"call {event.call_id} left {event.uri} ({event.cause})",
                self.clock(),
                uri=event.uri,
                set_name=event.set_name,
                cause=event.cause,
            )
        elif isinstance(event, CallsExpired):
            self.journal.add(
                "expired", f"{event.count} calls expired from the call table", self.clock()
            )

    def state_changed(self, event: StateChanged, at: float) -> None:
        self.journal.add(
            "state",
            f"{event.uri}: {event.old} -> {event.new} ({event.cause})",
            at,
            uri=event.uri,
            old=str(event.old),
            new=str(event.new),
            cause=event.cause,
        )

    def reloaded(self, ok: bool, message: str) -> None:
        self.reloads["ok" if ok else "refused"] += 1
        now = self.clock()
        if ok:
            self.last_reload_at = now
        self.journal.add("reload", message, now)

    def weight_changed(self, set_name: str, uri: str, old: int, new: int, cause: str) -> None:
        self.journal.add(
            "weight",
            f"{uri} in {set_name}: weight {old} -> {new} ({cause})",
            self.clock(),
            uri=uri,
            set_name=set_name,
            old=str(old),
            new=str(new),
            cause=cause,
        )


__all__ = ["JOURNAL_SIZE", "Entry", "Journal", "Recorder", "drop_category"]
