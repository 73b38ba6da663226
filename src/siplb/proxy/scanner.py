"""Scanners: known tools by their signature, and the traces of guessing in the final answers.

Three kinds of evidence, each ending in a ban of ``ScannerSettings.ban_time``:

- **Signature** (``Signatures``): the User-Agent holds one of ``user_agents`` (a substring, any
  case: SIPVicious's ``friendly-scanner``, ``sipcli`` ...), or the From header's value matches one
  of ``from_patterns``. The agents are one compiled alternation searched in the lower-cased
  User-Agent, so the test costs one regex search whatever the number of signatures; the few
  User-Agent values real devices send are each searched once (``AGENT_CACHE_SIZE`` remembered).
- **Extension enumeration** (``FailureWatch``): a tool looking for accounts (``svwar``) sends
  INVITE, REGISTER, OPTIONS, SUBSCRIBE or MESSAGE to one user after another and reads the refusals.
  A final answer 401, 403, 404, 407, 484 or 485 to one of those methods records the To user for the
  source; more than ``max_failed_users`` distinct users within ``failed_users_window`` seconds is
  enumeration. A 2xx for a user takes it off the list: it exists and its owner authenticated, so
  thirty phones behind one NAT that are each challenged (401) and then registered are not taken
  for a scanner.
- **REGISTER failures in a row** (``FailureWatch``): password guessing (``svcrack``). A REGISTER
  refused with 403 or 404, or challenged again (401, 407) although it carried credentials
  (Authorization or Proxy-Authorization), is a failure; the first challenge of a REGISTER without
  credentials is the normal digest exchange (RFC 3261 22.2) and is not. ``max_register_failures``
  failures in a row is guessing; a 2xx ends the run. A run with no failure for ``RUN_MEMORY``
  seconds is forgotten.

Bounds: at most ``max_sources`` sources are watched for each kind (the oldest forgotten first),
a source's user list never holds more than ``max_failed_users + 1`` users, each user is kept to
``USER_MAX_BYTES``. The admission stage never feeds trusted sources or destinations here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from siplb.settings import ScannerSettings
from siplb.sip import ParseError, Request, SipUri

from .pike import trim

RUN_MEMORY: Final = 3600.0
USER_MAX_BYTES: Final = 64
AGENT_CACHE_SIZE: Final = 4096  # User-Agent values whose verdict is remembered

# Methods that reveal whether a user exists, and the refusals that tell (RFC 3261 21.4).
ENUMERATED_METHODS: Final = frozenset({"INVITE", "REGISTER", "OPTIONS", "SUBSCRIBE", "MESSAGE"})
REFUSALS: Final = frozenset({401, 403, 404, 407, 484, 485})
REGISTER_REFUSALS: Final = frozenset({403, 404})
CHALLENGES: Final = frozenset({401, 407})

ENUMERATION = "enumeration"
REGISTER_FAILURES = "register-failures"


@dataclass(frozen=True, slots=True)
class Detection:
    """Evidence of guessing from one source: ban it."""

    reason: str  # ENUMERATION or REGISTER_FAILURES
    detail: str


class Signatures:
    """``user_agents`` and ``from_patterns`` of the settings, compiled once."""

    __slots__ = ("_agents", "_from_patterns", "_names", "_verdicts")

    def __init__(self, settings: ScannerSettings) -> None:
        agents = [a for a in settings.user_agents if a]
        self._names = {a.lower().encode(): a for a in agents}
        self._agents = (
            re.compile(b"|".join(re.escape(a) for a in sorted(self._names, key=len, reverse=True)))
            if agents
            else None
        )
        self._from_patterns = settings.from_patterns
        self._verdicts: dict[bytes, str] = {}  # User-Agent value -> its match, or ""

    def match(self, request: Request) -> str | None:
        """Why the request comes from a scanner (``User-Agent sipvicious``), or None."""
        agents = self._agents
        if agents is not None:
            agent = request.get(b"user-agent")
            if agent is not None:
                verdicts = self._verdicts
                detail = verdicts.get(agent)
                if detail is None:
                    found = agents.search(agent.lower())
                    detail = "" if found is None else f"User-Agent {self._names[found.group()]}"
                    trim(verdicts, AGENT_CACHE_SIZE - 1)
                    verdicts[agent] = detail
                if detail:
                    return detail
        if self._from_patterns:
            value = request.get(b"from")
            if value is not None:
                text = value.decode("utf-8", "replace")
                for pattern in self._from_patterns:
                    if pattern.search(text):
                        return f"From {pattern.pattern}"
        return None


def to_user(request: Request) -> bytes | None:
    """The user part of the To URI (unescaped, cut to ``USER_MAX_BYTES``); a tel: URI whole."""
    try:
        addr = request.name_addr(b"to")
        if addr is None:
            return None
        uri = addr.parsed_uri()
        user = uri.user_unescaped if isinstance(uri, SipUri) else uri.raw
    except ParseError:
        return None
    return None if user is None else user[:USER_MAX_BYTES]


class FailureWatch:
    """Enumeration and REGISTER failures per source, fed with final answers."""

    __slots__ = ("_failed", "_runs", "max_sources", "settings")

    def __init__(self, settings: ScannerSettings, max_sources: int) -> None:
        self.settings = settings
        self.max_sources = max_sources
        # source -> {To user: time of its last refusal}, both in order of last refusal
        self._failed: dict[str, dict[bytes, float]] = {}
        # source -> (REGISTER failures in a row, time of the last one), in order of the last one
        self._runs: dict[str, tuple[int, float]] = {}

    def reconfigure(self, settings: ScannerSettings, max_sources: int) -> None:
        self.settings = settings
        self.max_sources = max_sources
        trim(self._failed, max_sources)
        trim(self._runs, max_sources)

    def final_answer(self, key: str, request: Request, status: int, now: float) -> Detection | None:
        """The final status sent back for a request from ``key``; evidence, if this completes it."""
        method = request.method
        if 200 <= status < 300:
            self._succeeded(key, request, method)
            return None
        if status not in REFUSALS or method not in ENUMERATED_METHODS:
            return None
        detection = None
        if method == "REGISTER" and (
            status in REGISTER_REFUSALS
            or (
                status in CHALLENGES
                and (request.has(b"authorization") or request.has(b"proxy-authorization"))
            )
        ):
            detection = self._register_failed(key, now)
        user = to_user(request)
        if user is not None:
            detection = self._user_refused(key, user, now) or detection
        return detection

    def forget(self, key: str) -> None:
        """Forgive a source (an operator's unban)."""
        self._failed.pop(key, None)
        self._runs.pop(key, None)

    def expire(self, now: float) -> None:
        """Forget user lists older than the window and runs older than ``RUN_MEMORY``."""
        failed = self._failed
        horizon = now - self.settings.failed_users_window
        while failed:
            key = next(iter(failed))
            if next(reversed(failed[key].values())) > horizon:
                break
            del failed[key]
        runs = self._runs
        horizon = now - RUN_MEMORY
        while runs:
            key = next(iter(runs))
            if runs[key][1] > horizon:
                break
            del runs[key]

    @property
    def tracked(self) -> int:
        """Sources watched (either kind)."""
        return len(self._failed.keys() | self._runs.keys())

    def _succeeded(self, key: str, request: Request, method: str) -> None:
        if method == "REGISTER":
            self._runs.pop(key, None)
        users = self._failed.get(key)
        if users is not None and method in ENUMERATED_METHODS:
            user = to_user(request)
            if user is not None and users.pop(user, None) is not None and not users:
                del self._failed[key]

    def _register_failed(self, key: str, now: float) -> Detection | None:
        runs = self._runs
        old = runs.pop(key, None)
        count = 1 if old is None else old[0] + 1
        if count >= self.settings.max_register_failures:
            return Detection(REGISTER_FAILURES, f"{count} REGISTERs refused in a row")
        trim(runs, self.max_sources - 1)
        runs[key] = (count, now)
        return None

    def _user_refused(self, key: str, user: bytes, now: float) -> Detection | None:
        failed = self._failed
        users = failed.pop(key, None)
        if users is None:
            trim(failed, self.max_sources - 1)
            users = {}
        horizon = now - self.settings.failed_users_window
        while users:
            first = next(iter(users))
            if users[first] > horizon:
                break
            del users[first]
        users.pop(user, None)
        users[user] = now
        if len(users) > self.settings.max_failed_users:
            window = self.settings.failed_users_window
            return Detection(ENUMERATION, f"{len(users)} users refused within {window:g} s")
        failed[key] = users
        return None


__all__ = [
    "AGENT_CACHE_SIZE",
    "CHALLENGES",
    "ENUMERATED_METHODS",
    "ENUMERATION",
    "REFUSALS",
    "REGISTER_FAILURES",
    "REGISTER_REFUSALS",
    "RUN_MEMORY",
    "USER_MAX_BYTES",
    "Detection",
    "FailureWatch",
    "Signatures",
    "to_user",
]
