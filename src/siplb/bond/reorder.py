"""The optional reorder window of a flow (``reorder = 0.03`` in its config; 0, the default, is
off: media needs none, the phone's jitter buffer reorders).

Rules, for one channel's datagrams as they pass de-duplication:

- The first datagram sets the sequence number expected next. A datagram that is the one
  expected goes straight through, and so do those held behind it that now follow on.
- A datagram ahead of a gap is held, for at most ``window`` seconds from its own arrival: the
  gap may still fill, by arrival or by a parity rebuild. When the oldest held datagram's time
  is up, the gaps below it are skipped and everything held up to it goes out, in sequence.
- At most ``MAX_HELD`` datagrams are held: one more skips the lowest gap at once.
- A datagram whose gap was already skipped goes out at once (late rather than never); so does
  one more than ``MAX_JUMP`` ahead (a restarted peer numbers afresh from its clock).
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_HELD = 64  # datagrams held per channel: 1.3 s of one call's 50/s, far above a window's worth
MAX_JUMP = 1 << 16  # further ahead than this is a new numbering, not a gap


@dataclass(frozen=True, slots=True)
class Released:
    """What the window lets go: payloads in sequence, the gaps given up on, datagrams late."""

    payloads: list[bytes] = field(default_factory=list)
    skipped: int = 0
    late: int = 0


class ReorderWindow:
    def __init__(self, window: float, max_held: int = MAX_HELD) -> None:
        self.window = window
        self.max_held = max_held
        self.expected: int | None = None
        self._held: dict[int, tuple[float, bytes]] = {}

    def push(self, seq: int, payload: bytes, now: float) -> Released:
        """A datagram seen for the first time."""
        expected = self.expected
        if expected is not None and seq > expected + MAX_JUMP:  # numbered afresh
            held = [self._held.pop(seq)[1] for seq in sorted(self._held)]
            self.expected = seq + 1
            return Released([*held, payload], skipped=1)
        if expected is None or seq == expected:
            self.expected = seq + 1
            return Released([payload, *self._follow_on()])
        if seq < expected:
            return Released([payload], late=1)
        self._held[seq] = (now, payload)
        if len(self._held) > self.max_held:
            return self._skip_to(min(self._held))
        return Released()

    def expire(self, now: float) -> Released:
        """Let go of what has waited ``window`` (call at ``deadline()``)."""
        due = [seq for seq, (at, _) in self._held.items() if at + self.window <= now]
        return self._skip_to(max(due)) if due else Released()

    def deadline(self) -> float | None:
        if not self._held:
            return None
        return min(at for at, _ in self._held.values()) + self.window

    def __len__(self) -> int:
        return len(self._held)

    def _skip_to(self, last: int) -> Released:
        """Skip the gaps below ``last``: out go the held datagrams up to it, and on from it."""
        below = sorted(seq for seq in self._held if seq <= last)
        skipped = 0
        expected = self.expected if self.expected is not None else below[0]
        for seq in below:
            skipped += seq > expected
            expected = seq + 1
        payloads = [self._held.pop(seq)[1] for seq in below]
        self.expected = last + 1
        return Released([*payloads, *self._follow_on()], skipped=skipped)

    def _follow_on(self) -> list[bytes]:
        out = []
        expected = self.expected
        while expected is not None and expected in self._held:
            out.append(self._held.pop(expected)[1])
            expected += 1
        self.expected = expected
        return out
