"""Logging to stderr, for people (``human``) or for log shippers (``json``, one object a line),
and ``RefusalLog``, which keeps what a peer can repeat (refusals, faults) to one line in a while."""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass

LOG_EVERY = 10.0  # seconds between two log lines of one (reason, source)
LOG_SOURCES = 1024  # (reason, source) pairs remembered; past that, new sources share one line
OTHER_SOURCES = "other sources"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(level: str = "info", fmt: str = "human") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


# ---- rate-limited log lines: what a peer can repeat costs a counter, not a line --------------
@dataclass(slots=True)
class _Window:
    until: float
    left_out: int = 0


class RefusalLog:
    """Decides which refusals get a log line: at most one per (reason, source) every ``every``
    seconds; the first after a quiet spell carries the count of those left out before it.

        left_out = refusal_log.admit("wrong token", "192.0.2.7", now)
        if left_out is not None: log it, adding "and {left_out} more" when left_out > 0
    """

    def __init__(self, every: float = LOG_EVERY, capacity: int = LOG_SOURCES) -> None:
        self.every = every
        self.capacity = capacity
        self._windows: dict[tuple[str, str], _Window] = {}

    def admit(self, reason: str, source: str, now: float) -> int | None:
        """None: leave this line out. Else write it: ``left_out`` lines were left out before."""
        key = (reason, source)
        if key not in self._windows and len(self._windows) >= self.capacity:
            self._forget(now)
            if len(self._windows) >= self.capacity:
                key = (reason, OTHER_SOURCES)
        window = self._windows.get(key)
        if window is not None and now < window.until:
            window.left_out += 1
            return None
        self._windows[key] = _Window(now + self.every)
        return window.left_out if window is not None else 0

    def _forget(self, now: float) -> None:
        """Drop the windows that are over and owe no count."""
        self._windows = {
            key: window
            for key, window in self._windows.items()
            if now < window.until or window.left_out
        }
