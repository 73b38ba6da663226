"""A sliding window of numbers already seen: the replay window of sealed packets (over packet
numbers) and the de-duplication window of each channel (over datagram sequence numbers).

A number is new when it is above the highest seen, or within ``size`` below it and not seen
yet; anything older than the window is refused (it might be a replay, or a copy that comes
too late to matter). The window is an integer used as a bit set: bit ``i`` is ``highest - i``.
"""

from __future__ import annotations


class SeenWindow:
    def __init__(self, size: int = 1024) -> None:
        self.size = size
        self.highest = -1
        self._bits = 0
        self._mask = (1 << size) - 1

    def check(self, number: int) -> bool:
        """True when ``number`` has not been seen (and is not too old); records nothing."""
        if number > self.highest:
            return True
        offset = self.highest - number
        return offset < self.size and not (self._bits >> offset) & 1

    def record(self, number: int) -> None:
        if number > self.highest:
            shift = number - self.highest
            kept = (self._bits << shift) & self._mask if shift < self.size else 0
            self._bits = kept | 1
            self.highest = number
        else:
            self._bits |= 1 << (self.highest - number)

    def accept(self, number: int) -> bool:
        """``check`` then ``record``: True the first time ``number`` is seen."""
        if not self.check(number):
            return False
        self.record(number)
        return True
