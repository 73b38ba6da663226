"""Admission of new calls under overload: refuse early and cheaply instead of failing late.

Past its capacity a proxy that accepts every INVITE falls behind on all of them: its receive
queue grows, answers wait in it past ``failover_timeout``, every call fails over (doubling the
work), and those timeouts, which are the proxy's own doing, mark healthy destinations down. Then
every call fails for seconds. The guard stops that spiral at the door:

- **Behind**: the shell reports how full its receive buffers are (``report_backlog``, a fraction
  of the buffer). From ``backlog_high`` on, new calls get ``503`` with ``Retry-After`` before any
  other work (no ``100 Trying``, no destination chosen); below half of it they are admitted again.
- **Call rate**: with ``max_call_rate`` set, a token bucket (one second of burst) admits at most
  that many new calls per second.
- **Our fault, not theirs**: while behind, and for ``excuse_window`` seconds after, a destination's
  silence (a timeout) is not held against its health: the answer may be sitting in our queue.

Only initial INVITEs are refused; in-dialog requests, CANCEL, ACK and responses always flow, so
calls already set up are not hurt by the overload of new ones (RFC 3261 21.5.4, RFC 6357 3).
"""

from __future__ import annotations

from .actions import OverloadChanged

BEHIND = "overloaded"
RATE = "call rate limit"


class OverloadGuard:
    """One proxy's admission state (pure: ``now`` comes in, nothing is read)."""

    __slots__ = (
        "_behind_until",
        "_bucket_at",
        "_tokens",
        "backlog",
        "backlog_high",
        "excuse_window",
        "max_call_rate",
        "overloaded",
        "refused",
    )

    def __init__(
        self,
        *,
        max_call_rate: float,
        backlog_high: float,
        excuse_window: float,
        now: float,
    ) -> None:
        self.max_call_rate = max_call_rate  # 0: no limit
        self.backlog_high = backlog_high  # 0: never behind
        self.excuse_window = excuse_window
        self.overloaded = False
        self.backlog = 0.0
        self.refused = 0
        self._tokens = max(1.0, max_call_rate)
        self._bucket_at = now
        self._behind_until = float("-inf")

    def report_backlog(self, fill: float, now: float) -> OverloadChanged | None:
        """The shell's receive buffers are ``fill`` full (0-1); a change of state, if any."""
        self.backlog = fill
        high = self.backlog_high
        if high <= 0:
            return None
        if self.overloaded:
            self._behind_until = now + self.excuse_window
            if fill <= high / 2:
                self.overloaded = False
                return OverloadChanged(False, fill)
            return None
        if fill >= high:
            self.overloaded = True
            self._behind_until = now + self.excuse_window
            return OverloadChanged(True, fill)
        return None

    def admit(self, now: float) -> str | None:
        """A new call arrives: None to take it, else why it is refused."""
        if self.overloaded:
            self.refused += 1
            return BEHIND
        rate = self.max_call_rate
        if rate <= 0:
            return None
        tokens = min(max(1.0, rate), self._tokens + (now - self._bucket_at) * rate)
        self._bucket_at = now
        if tokens < 1.0:
            self._tokens = tokens
            self.refused += 1
            return RATE
        self._tokens = tokens - 1.0
        return None

    def excuses_timeouts(self, now: float) -> bool:
        """Whether a destination's silence now may be our own backlog's doing."""
        return self.overloaded or now <= self._behind_until


__all__ = ["BEHIND", "RATE", "OverloadChanged", "OverloadGuard"]
