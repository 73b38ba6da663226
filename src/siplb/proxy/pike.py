"""Per-source request rates and bans, in the manner of Kamailio's pike module.

**Rates.** Each source gets a sampling window of ``window`` seconds, opened by its first request
after the previous one ended; inside it the requests are counted per class, each against its own
budget (``RateSettings``):

- ``invite``: initial INVITEs (no To tag), the requests that cost a destination the most;
- ``register``: REGISTERs, which a registrar must authenticate;
- ``other``: everything else, ACK, CANCEL and in-dialog requests included.

A request over its class's budget is an **offence**: the source is banned, and its requests are
dropped until the ban ends (the admission stage checks the ban before counting, so a banned
source costs no counting).

**Ban length: a decaying score.** Each source that offended has a score, the number of its
offences, halving every ``score_half_life`` seconds from the end of its last ban (a banned source
has no chance to behave, so its ban does not wear its score down). An offence bans for
``ban_time * 2**round(score)`` (the score before this offence, rounded half up), at most
``max_ban_time``, then adds one to the score. A source that offends once an hour (about six
half-lives by default) has a score near zero each time and is banned for ``ban_time``; one that
offends again as soon as its ban ends climbs: 60 s, 120 s, 240 s ... up to ``max_ban_time``. The
exponent is rounded so that ban lengths are whole doublings an operator can read; the score is
capped just past where the ban reaches ``max_ban_time``, so it decays in bounded time.

**Bounds.** A spray of spoofed sources must not grow memory: at most ``max_sources`` windows and
``max_sources`` scores are kept, the oldest pushed out first, and ``expire`` forgets windows that
ended and scores that decayed below ``FORGOTTEN_SCORE``. Both tables are dicts kept in order of
last use (an entry is moved to the end when it is renewed), so forgetting is a walk from the front
that stops at the first live entry (for scores an approximation: a long ban ends later than a
short one that follows it; what it leaves is pushed out by the bound or a later walk). ``BanTable`` holds at most ``2 * max_sources`` bans; past that
the ban that would end first is dropped.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterator
from dataclasses import dataclass
from enum import IntEnum
from typing import Final, TypeVar

from siplb.settings import RateSettings

FORGOTTEN_SCORE: Final = 1 / 64  # six half-lives after a single ban ended

_K = TypeVar("_K")
_V = TypeVar("_V")


class RateClass(IntEnum):
    """The budget a request counts against."""

    INVITE = 0  # initial INVITE (no To tag)
    REGISTER = 1
    OTHER = 2


@dataclass(frozen=True, slots=True)
class BanView:
    """One ban as the admin API and the shell see it."""

    host: str
    reason: str
    until: float
    offences: int


@dataclass(frozen=True, slots=True)
class Offence:
    """A source went over a budget: ban it for ``seconds``."""

    rate_class: RateClass
    count: int
    seconds: float
    offences: int  # this one included


class _Window:
    __slots__ = ("counts", "start")

    def __init__(self, start: float) -> None:
        self.start = start
        self.counts = [0, 0, 0]


class _Score:
    __slots__ = ("at", "offences", "value")

    def __init__(self, value: float, at: float, offences: int) -> None:
        self.value = value
        self.at = at
        self.offences = offences


class RateLimiter:
    """Counts requests per source and class; reports offences (see the module docstring)."""

    __slots__ = ("_budgets", "_max_score", "_scores", "_windows", "settings")

    def __init__(self, settings: RateSettings) -> None:
        self._windows: dict[str, _Window] = {}
        self._scores: dict[str, _Score] = {}
        self.settings = settings
        self._budgets = (settings.invite, settings.register, settings.other)
        self._max_score = 0.0
        self.reconfigure(settings)

    def reconfigure(self, settings: RateSettings) -> None:
        """New budgets; counts and scores are kept (trimmed if ``max_sources`` shrank)."""
        self.settings = settings
        self._budgets = (settings.invite, settings.register, settings.other)
        ratio = settings.max_ban_time / settings.ban_time if settings.ban_time > 0 else 1.0
        self._max_score = math.log2(max(ratio, 1.0)) + 1.0
        trim(self._windows, settings.max_sources)
        trim(self._scores, settings.max_sources)

    def count(self, key: str, rate_class: RateClass, now: float) -> Offence | None:
        """One request from ``key``; an offence if it is over its class's budget."""
        window = self._windows.get(key)
        if window is None or now - window.start >= self.settings.window:
            window = self._open(key, now)
        counts = window.counts
        count = counts[rate_class] + 1
        counts[rate_class] = count
        if count <= self._budgets[rate_class]:
            return None
        return self._offend(key, rate_class, count, now)

    def _open(self, key: str, now: float) -> _Window:
        windows = self._windows
        if windows.pop(key, None) is None:
            trim(windows, self.settings.max_sources - 1)
        window = windows[key] = _Window(now)
        return window

    def _offend(self, key: str, rate_class: RateClass, count: int, now: float) -> Offence:
        settings = self.settings
        score = self.score(key, now)
        seconds = min(settings.max_ban_time, settings.ban_time * 2 ** int(score + 0.5))
        scores = self._scores
        old = scores.pop(key, None)
        if old is None:
            trim(scores, settings.max_sources - 1)
        offences = 1 if old is None else old.offences + 1
        # The score decays from the end of the ban: while banned a source cannot behave.
        scores[key] = _Score(min(score + 1.0, self._max_score), now + seconds, offences)
        # The ban stops the counting; a fresh window starts when it ends.
        self._windows.pop(key, None)
        return Offence(rate_class, count, seconds, offences)

    def score(self, key: str, now: float) -> float:
        """The decayed score of ``key`` now (0 for a source that never offended)."""
        entry = self._scores.get(key)
        if entry is None:
            return 0.0
        return _decayed(entry, now, self.settings.score_half_life)

    def forget(self, key: str) -> None:
        """Forgive a source (an operator's unban): its window and its score go."""
        self._windows.pop(key, None)
        self._scores.pop(key, None)

    def expire(self, now: float) -> None:
        """Forget windows that ended and scores that decayed away (housekeeping)."""
        windows = self._windows
        horizon = now - self.settings.window
        while windows:
            key = next(iter(windows))
            if windows[key].start > horizon:
                break
            del windows[key]
        scores = self._scores
        half_life = self.settings.score_half_life
        while scores:
            key = next(iter(scores))
            if _decayed(scores[key], now, half_life) >= FORGOTTEN_SCORE:
                break
            del scores[key]

    @property
    def tracked(self) -> int:
        """Sources with an open window."""
        return len(self._windows)

    @property
    def scored(self) -> int:
        """Sources with a score."""
        return len(self._scores)


def _decayed(entry: _Score, now: float, half_life: float) -> float:
    if half_life <= 0:
        return 0.0
    return entry.value * math.exp2(-max(0.0, now - entry.at) / half_life)


def trim(table: dict[_K, _V], size: int) -> None:
    """Drop the oldest entries of an insertion-ordered table until it holds at most ``size``."""
    while table and len(table) > size:
        del table[next(iter(table))]


# A ban ending less than this after the one held is the same ban, not a longer one. Workers
# share a ban as seconds left; each hop adds its transit time, so without this a shared ban
# would echo between workers forever, a little longer each time, and an echo still in flight
# would ban the source again after an operator lifted the ban.
BAN_SLACK = 0.5


class BanTable:
    """Bans by host key, with their ends in a heap so that lifting them costs no scan."""

    __slots__ = ("_bans", "_ends", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self._bans: dict[str, BanView] = {}
        self._ends: list[tuple[float, str]] = []  # (until, key); stale entries skipped

    def get(self, key: str) -> BanView | None:
        return self._bans.get(key)

    def is_banned(self, key: str, now: float) -> bool:
        ban = self._bans.get(key)
        return ban is not None and ban.until > now

    def ban(
        self, key: str, until: float, reason: str, offences: int | None = None
    ) -> BanView | None:
        """Ban ``key`` until then; the new ban, or None if it already was banned as long (within ``BAN_SLACK``).

        ``offences`` None counts one more than the ban in force, if any.
        """
        old = self._bans.get(key)
        if old is not None and old.until + BAN_SLACK >= until:
            return None
        if offences is None:
            offences = 1 if old is None else old.offences + 1
        if old is None:
            while len(self._bans) >= self.size > 0:
                self._evict()
        ban = self._bans[key] = BanView(key, reason, until, offences)
        self._push(until, key)
        return ban

    def unban(self, key: str) -> bool:
        return self._bans.pop(key, None) is not None

    def resize(self, size: int) -> None:
        """A new bound; the bans that would end first go if there are too many."""
        self.size = size
        while len(self._bans) > size > 0:
            self._evict()

    def expire(self, now: float) -> list[str]:
        """Lift the bans that ended by ``now``; their keys."""
        lifted: list[str] = []
        ends = self._ends
        bans = self._bans
        while ends and ends[0][0] <= now:
            until, key = heapq.heappop(ends)
            ban = bans.get(key)
            if ban is not None and ban.until == until:
                del bans[key]
                lifted.append(key)
        return lifted

    def active(self, now: float) -> list[BanView]:
        """The bans in force, the one ending first first."""
        return sorted((b for b in self._bans.values() if b.until > now), key=_until)

    def __len__(self) -> int:
        return len(self._bans)

    def __iter__(self) -> Iterator[BanView]:
        return iter(list(self._bans.values()))

    def _push(self, until: float, key: str) -> None:
        ends = self._ends
        heapq.heappush(ends, (until, key))
        if len(ends) > 2 * len(self._bans) + 64:  # too many stale entries: rebuild
            self._ends = [(b.until, k) for k, b in self._bans.items()]
            heapq.heapify(self._ends)

    def _evict(self) -> None:
        """Drop the ban that would end first (the table is full)."""
        ends = self._ends
        while ends:
            until, key = heapq.heappop(ends)
            ban = self._bans.get(key)
            if ban is not None and ban.until == until:
                del self._bans[key]
                return
        self._bans.pop(next(iter(self._bans)))  # pragma: no cover - the heap covers every ban


def _until(ban: BanView) -> float:
    return ban.until


__all__ = [
    "FORGOTTEN_SCORE",
    "BanTable",
    "BanView",
    "Offence",
    "RateClass",
    "RateLimiter",
    "trim",
]
