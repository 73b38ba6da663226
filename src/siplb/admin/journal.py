"""What the balancer did, for operators: a ring of recent events and the counters behind metrics.

The balancer's shell hands every event the proxy core reports to ``Recorder.observe``; reloads
and operator actions are recorded by the shell itself. Counting here (failovers by destination,
drops by reason, bans by reason, reloads by result) costs one dictionary update per event; the
Prometheus exposition reads these counters at scrape time, so no metric object is touched per
packet.

A flood must not flood the journal: it is a ring of ``JOURNAL_SIZE`` entries that operators read
for state changes and reloads. So

- a dropped or refused request never gets an entry of its own. Every ``TALLY_WINDOW`` seconds
  at most, one ``refused`` entry per refusal reason gives the count since the last one (``"1234
  requests refused in 10 s: rate"``). The counts come from the proxy's own counters
  (``Recorder.refusals``, read when the journal is read), which also see what makes no event
  (a banned source's datagrams, dropped before parsing);
- the first ``BAN_LINES`` bans and lifts of a window get an entry each, the rest are summed into
  one entry per reason when the window closes (a scan from many addresses makes a few lines);
- the counters by reason (drops, bans) keep at most ``MAX_REASONS`` labels, the rest count as
  "other".

With ``workers = N`` worker 0 keeps the journal. Refusals are already summed over every worker
(``Recorder.refusals``) and a ban made anywhere reaches worker 0's core, which journals it; a
health change is worker 0's decision. What only another worker sees (a failover, expired calls)
it collects in a ``Relay`` and sends worker 0 every ``RELAY_INTERVAL``: at most
``RELAY_LINES`` failovers with an entry each, the rest as one summed entry, and every failover
in the counts by destination, so the journal and ``siplb_failovers_total`` mean what they mean
with one process, and one worker's flood costs the channel one small message per interval.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from siplb.dispatch import StateChanged
from siplb.proxy.actions import CallsExpired, FailedOver, MessageDropped
from siplb.proxy.admission import BanLifted, SourceBanned
from siplb.words import plural

JOURNAL_SIZE = 500
TALLY_WINDOW = 10.0  # seconds summed into one entry per refusal reason, at least
BAN_LINES = 20  # bans (and lifts) with an entry of their own per window; the rest are summed
MAX_REASONS = 50  # distinct labels of a counter by reason; the rest count as "other"
OTHER = "other"
RELAY_INTERVAL = 0.2  # seconds between a worker's batches of events for worker 0's journal
RELAY_LINES = 20  # failovers a batch carries one by one; the rest are summed


@dataclass(frozen=True, slots=True)
class Entry:
    """One recent event. ``kind``: state, failover, reload, weight, expired, ban, unban, refused."""

    id: int
    at: float  # seconds since the epoch
    kind: str
    message: str
    uri: str | None = None
    set_name: str | None = None
    old: str | None = None
    new: str | None = None
    cause: str | None = None
    host: str | None = None  # ban, unban: the source
    count: int | None = None  # refused: how many; ban: the offence, or how many summed
    worker: int | None = None  # workers = N: the worker it happened in, when not worker 0

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
            "host": self.host,
            "count": self.count,
            "worker": self.worker,
        }
        out.update({key: value for key, value in optional.items() if value is not None})
        return out


class Journal:
    """The last ``size`` entries, numbered from 1 so a reader can ask for what came after."""

    def __init__(self, size: int = JOURNAL_SIZE) -> None:
        self._entries: deque[Entry] = deque(maxlen=size)
        self.last_id = 0
        self.before_read: Callable[[], None] | None = None  # the recorder closes its window

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
        host: str | None = None,
        count: int | None = None,
        worker: int | None = None,
    ) -> Entry:
        self.last_id += 1
        entry = Entry(
            self.last_id, at, kind, message, uri, set_name, old, new, cause, host, count, worker
        )
        self._entries.append(entry)
        return entry

    def after(self, last_seen: int = 0, limit: int = JOURNAL_SIZE) -> list[Entry]:
        """Entries newer than id ``last_seen``, oldest first, at most the ``limit`` newest."""
        if self.before_read is not None:
            self.before_read()
        if last_seen >= self.last_id or limit <= 0:
            return []
        newer = [entry for entry in self._entries if entry.id > last_seen]
        return newer[-limit:]

    def __len__(self) -> int:
        return len(self._entries)


def drop_category(reason: str) -> str:
    """A label for a drop reason: the fixed text before any detail after a colon."""
    return reason.partition(":")[0].strip() or "unknown"


class Recorder:
    """The journal plus the event counters the metrics read."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.journal = Journal()
        self.journal.before_read = self.settle
        self.failovers: Counter[tuple[str, str]] = Counter()  # (set, uri failed over from)
        self.drops: Counter[str] = Counter()  # drop_category(reason), MAX_REASONS at most
        self.bans: Counter[str] = Counter()  # bans made or made longer, by reason (capped)
        self.reloads: Counter[str] = Counter()  # "ok" | "refused"
        self.auth_refusals = 0
        self.last_reload_at: float | None = None
        # requests refused so far, by reason: set by the admin server to read the proxy's counters
        self.refusals: Callable[[], Mapping[str, int]] | None = None
        self.window = TALLY_WINDOW
        self._window_start = clock()
        self._refused_seen: Mapping[str, int] = {}
        self._lines = 0  # ban and lift entries in this window
        self._bans_summed: Counter[str] = Counter()  # bans past BAN_LINES, by reason
        self._lifts_summed = 0

    def observe(self, event: object, offset: float) -> None:
        """A proxy event; ``offset`` turns the core's clock into epoch seconds. A
        ``RequestRejected`` needs nothing here: the proxy counts it by reason."""
        if isinstance(event, MessageDropped):
            _count(self.drops, drop_category(event.reason))
        elif isinstance(event, SourceBanned):
            self.banned(event, offset)
        elif isinstance(event, BanLifted):
            self.lifted(event.host)
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
                "expired",
                f"{plural(event.count, 'call')} expired from the call table",
                self.clock(),
            )

    # ---- bans: an entry each, up to BAN_LINES per window ----------------------------------------
    def banned(self, event: SourceBanned, offset: float) -> None:
        _count(self.bans, event.reason)
        now = self.clock()
        self._settle(now)
        if self._lines >= BAN_LINES:
            self._bans_summed[event.reason] += 1
            return
        self._lines += 1
        left = _duration(event.until + offset - now)
        self.journal.add(
            "ban",
            f"{event.host} banned for {left} ({event.reason}, offence {event.offences})",
            now,
            host=event.host,
            cause=event.reason,
            count=event.offences,
        )

    def lifted(self, host: str) -> None:
        now = self.clock()
        self._settle(now)
        if self._lines >= BAN_LINES:
            self._lifts_summed += 1
            return
        self._lines += 1
        self.journal.add("unban", f"ban on {host} lifted", now, host=host)

    # ---- the window: summed refusals and bans -------------------------------------------------
    def settle(self) -> None:
        """Close the window if it is over: one entry per refusal reason whose count grew, and
        the bans and lifts that got no entry of their own. Runs before every journal read."""
        self._settle(self.clock())

    def _settle(self, now: float) -> None:
        span = now - self._window_start
        if span < self.window:
            return
        self._window_start = now
        self._lines = 0
        shown = f"{span:.0f} s"
        if self.refusals is not None:
            counts = dict(self.refusals())
            seen = self._refused_seen
            self._refused_seen = counts
            for reason, count in sorted(counts.items()):
                old = seen.get(reason, 0)
                new = count - old if count >= old else count  # a restarted worker starts at 0
                if new > 0:
                    self.journal.add(
                        "refused",
                        f"{new} {'request' if new == 1 else 'requests'} refused in {shown}: "
                        f"{reason}",
                        now,
                        cause=reason,
                        count=new,
                    )
        for reason, count in sorted(self._bans_summed.items()):
            self.journal.add(
                "ban",
                f"{count} more sources banned in {shown} ({reason})",
                now,
                cause=reason,
                count=count,
            )
        self._bans_summed.clear()
        if self._lifts_summed:
            count = self._lifts_summed
            self._lifts_summed = 0
            self.journal.add("unban", f"{count} more bans lifted in {shown}", now, count=count)

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

    def relayed(self, worker: int, batch: Mapping[str, Any]) -> None:
        """Worker 0: a batch another worker's ``Relay`` sent. Trusts no more than the bounds."""
        now = self.clock()
        for at, call_id, set_name, uri, cause in batch["failovers"][:RELAY_LINES]:
            self.journal.add(
                "failover",
                f"call {call_id} left {uri} ({cause}) in worker {worker}",
                float(at),
                uri=str(uri),
                set_name=str(set_name),
                cause=str(cause),
                worker=worker,
            )
        for set_name, uri, count in batch["counts"][:MAX_REASONS]:
            self.failovers[(str(set_name), str(uri))] += max(0, int(count))
        more = int(batch["more"])
        if more > 0:
            self.journal.add(
                "failover",
                f"{more} more {'failover' if more == 1 else 'failovers'} in worker {worker}",
                now,
                count=more,
                worker=worker,
            )
        expired = int(batch["expired"])
        if expired > 0:
            self.journal.add(
                "expired",
                f"{plural(expired, 'call')} expired from the call table in worker {worker}",
                now,
                count=expired,
                worker=worker,
            )

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


class Relay:
    """A worker's events for worker 0's journal, between two batches: the first
    ``RELAY_LINES`` failovers as they were, every failover counted by (set, destination), expired
    calls summed. ``take`` empties it into one JSON-able batch (``Recorder.relayed``)."""

    def __init__(self, lines: int = RELAY_LINES) -> None:
        self.lines = lines
        self.summed = 0  # failovers sent as a count only, since the start
        self._failovers: list[list[object]] = []  # [at, call_id, set, uri, cause]
        self._counts: Counter[tuple[str, str]] = Counter()
        self._more = 0
        self._expired = 0

    def observe(self, event: object, at: float) -> None:
        """A core event at epoch time ``at``; what worker 0 would not journal is ignored."""
        if isinstance(event, FailedOver):
            key = (event.set_name, event.uri)
            if key not in self._counts and len(self._counts) >= MAX_REASONS:
                key = (OTHER, OTHER)
            self._counts[key] += 1
            if len(self._failovers) < self.lines:
                line = [round(at, 3), event.call_id, event.set_name, event.uri, event.cause]
                self._failovers.append(line)
            else:
                self._more += 1
                self.summed += 1
        elif isinstance(event, CallsExpired):
            self._expired += event.count

    def take(self) -> dict[str, Any] | None:
        """The batch collected since the last one (None: nothing to send), and start anew."""
        if not self._counts and not self._expired:
            return None
        batch: dict[str, Any] = {
            "failovers": self._failovers,
            "counts": [[s, uri, n] for (s, uri), n in self._counts.items()],
            "more": self._more,
            "expired": self._expired,
        }
        self._failovers = []
        self._counts = Counter()
        self._more = 0
        self._expired = 0
        return batch


def _count(counter: Counter[str], label: str) -> None:
    """One more under ``label``; past MAX_REASONS labels, under "other"."""
    if label not in counter and len(counter) >= MAX_REASONS:
        label = OTHER
    counter[label] += 1


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


__all__ = [
    "BAN_LINES",
    "JOURNAL_SIZE",
    "MAX_REASONS",
    "RELAY_INTERVAL",
    "RELAY_LINES",
    "TALLY_WINDOW",
    "Entry",
    "Journal",
    "Recorder",
    "Relay",
    "drop_category",
]
