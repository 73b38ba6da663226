"""The admission stage: which requests get a transaction at all (docs/design.md 4, protection first).

A dropped packet costs far less than a forwarded one, so hostile traffic is refused here, before
any state is made. The first step that refuses decides:

``check_source`` (the source alone, before the datagram is even parsed):

1. **Blocklist**: the source is in a network of the blocklist file: dropped silently (known
   hostile, not worth an answer).
2. **Ban**: a source banned until later is dropped silently. A destination or a host in a
   ``trusted`` network is never banned: a PBX sending a burst of calls back is no attacker.

``check_request`` (the parsed request):

3. **ACL**: the first ``[[acl]]`` rule matching the source, the method and the listener's name
   decides; no match allows. A denied request gets ``403`` once (statelessly). ACL rules apply to
   everyone, trusted sources and destinations included.
4. **Trusted**: a destination or a host in a ``trusted`` network skips the steps below: it is
   never rate limited or taken for a scanner.
5. **Scanner signature**: a known tool's User-Agent or a From pattern (``scanner.Signatures``)
   bans the source for ``scanners.ban_time``; the request is dropped, or answered ``403`` with
   ``scanners.action = "reply"``.
6. **Rate**: over one of its per-class budgets (``pike.RateLimiter``) the source is banned for a
   time that doubles for repeat offenders (a decaying score); the request is dropped.

``check`` runs both, for callers that have the request already.

After the request, ``final_answer`` feeds the final status it got back to the scanner watch:
refusals for many users are extension enumeration, REGISTERs refused in a row are password
guessing (``scanner.FailureWatch``); either bans the source for ``scanners.ban_time``.

An ACK is never answered, so a refusal of an ACK is always silent. Every refusal is counted in
``drops`` by its reason; every ban made or lifted is an event in ``events`` (``SourceBanned``,
``BanLifted``), which the shell drains to share bans with the other workers and nodes and to push
them into the kernel (nftables). Hosts are kept under their canonical spelling (``acl.host_key``):
an IPv4 peer seen as ``::ffff:a.b.c.d`` is ``a.b.c.d``.

The admitted path costs a few dict lookups: the source's decisions are cached per host
(``acl.AccessControl``), the ban is a dict entry, the signatures one regex search, the rate one
counter. Nothing here reads a clock: ``now`` comes in, and ``expire`` (once a second) lifts the
bans that ended and forgets idle sources.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from siplb.settings import ProtectionSettings
from siplb.sip import Request

from .acl import AccessControl, host_key
from .pike import BanTable, BanView, RateClass, RateLimiter
from .scanner import FailureWatch, Signatures

# Reasons: the labels of the drop metric and of bans.
BLOCKLIST: Final = "blocklist"
ACL: Final = "acl"
BANNED: Final = "banned"
RATE: Final = "rate"
SCANNER: Final = "scanner"

FORBIDDEN: Final = 403


@dataclass(frozen=True, slots=True)
class Verdict:
    """Why a request is not admitted."""

    reason: str  # a short metric label: BLOCKLIST, ACL, BANNED, RATE, SCANNER
    status: int | None  # answer once statelessly with this status; None: drop silently
    detail: str = ""  # for logs: "User-Agent friendly-scanner"


@dataclass(frozen=True, slots=True)
class SourceBanned:
    """A source was banned (or its ban made longer) until ``until``."""

    host: str
    reason: str  # RATE, SCANNER, "enumeration", "register-failures", or an operator's text
    until: float
    offences: int


@dataclass(frozen=True, slots=True)
class BanLifted:
    """A source's ban ended (expiry) or was lifted (unban, the source became trusted)."""

    host: str


AdmissionEvent = SourceBanned | BanLifted

_BLOCKED: Final = Verdict(BLOCKLIST, None)
_DENIED: Final = Verdict(ACL, FORBIDDEN)
_DENIED_SILENTLY: Final = Verdict(ACL, None)
_BANNED: Final = Verdict(BANNED, None)


class Admission:
    """One proxy's admission stage (pure: ``now`` comes in, nothing is read)."""

    __slots__ = (
        "_acl",
        "_bans",
        "_rate_on",
        "_rates",
        "_scanners_on",
        "_signatures",
        "_watch",
        "drops",
        "events",
        "listener_names",
        "settings",
    )

    def __init__(
        self, settings: ProtectionSettings, *, listener_names: Sequence[str | None], now: float
    ) -> None:
        self.settings = settings
        self.listener_names = tuple(listener_names)  # by listener index, for [[acl]] listeners
        self.events: list[AdmissionEvent] = []
        self.drops: Counter[str] = Counter()
        self._acl = AccessControl(
            acl=settings.acl, blocked=settings.blocked, trusted=settings.trusted
        )
        self._rates = RateLimiter(settings.rate)
        self._signatures = Signatures(settings.scanners)
        self._watch = FailureWatch(settings.scanners, settings.rate.max_sources)
        self._bans = BanTable(2 * settings.rate.max_sources)
        self._rate_on = settings.rate.enabled
        self._scanners_on = settings.scanners.enabled

    # ---- configuration -------------------------------------------------------------------------
    def set_destinations(self, hosts: Iterable[str]) -> None:
        """The hosts (IP literals) of every destination: exempt like trusted networks."""
        if self._acl.set_destinations(hosts):
            self._lift_trusted()

    def reconfigure(self, settings: ProtectionSettings, now: float) -> None:
        """A reload: new ACL, blocklist, trusted networks, budgets, signatures; bans stay
        (except on sources that are now trusted)."""
        self.settings = settings
        self._acl.configure(acl=settings.acl, blocked=settings.blocked, trusted=settings.trusted)
        self._rates.reconfigure(settings.rate)
        self._signatures = Signatures(settings.scanners)
        self._watch.reconfigure(settings.scanners, settings.rate.max_sources)
        self._bans.resize(2 * settings.rate.max_sources)
        self._rate_on = settings.rate.enabled
        self._scanners_on = settings.scanners.enabled
        self._lift_trusted()

    # ---- the hot path --------------------------------------------------------------------------
    def check(self, request: Request, host: str, listener: int, now: float) -> Verdict | None:
        """None to admit a request from ``host`` on listener number ``listener``; else why not:
        ``check_source`` and then ``check_request``."""
        return self.check_source(host, now) or self.check_request(request, host, listener, now)

    def check_request(
        self, request: Request, host: str, listener: int, now: float
    ) -> Verdict | None:
        """The steps that need the parsed request (ACL, scanner, rate), for a request whose
        source ``check_source`` admitted (the proxy core runs that before parsing)."""
        policy = self._acl.policy(host)
        if policy.rules and not policy.allows(request.method, self._listener_name(listener)):
            self.drops[ACL] += 1
            return _DENIED_SILENTLY if request.method == "ACK" else _DENIED
        if policy.trusted:
            return None
        key = policy.key
        if self._scanners_on:
            detail = self._signatures.match(request)
            if detail is not None:
                return self._scanner(request, key, detail, now)
        if self._rate_on:
            method = request.method
            if method == "INVITE":
                rate_class = RateClass.INVITE if request.to_tag is None else RateClass.OTHER
            elif method == "REGISTER":
                rate_class = RateClass.REGISTER
            else:
                rate_class = RateClass.OTHER
            offence = self._rates.count(key, rate_class, now)
            if offence is not None:
                self._ban(key, now + offence.seconds, RATE, offence.offences)
                self.drops[RATE] += 1
                window = self.settings.rate.window
                name = rate_class.name.lower()
                return Verdict(RATE, None, f"{offence.count} {name} requests in {window:g} s")
        return None

    def check_source(self, host: str, now: float) -> Verdict | None:
        """Steps 1, 3 and 4, before parsing: a blocked or banned source (counted), or None.

        A datagram from such a source is dropped without being parsed; ``check_request`` runs
        on the parsed request of any other.
        """
        policy = self._acl.policy(host)
        if policy.blocked:
            self.drops[BLOCKLIST] += 1
            return _BLOCKED
        if policy.trusted:
            return None
        ban = self._bans.get(policy.key)
        if ban is not None and ban.until > now:
            self.drops[BANNED] += 1
            return _BANNED
        return None

    def _scanner(self, request: Request, key: str, detail: str, now: float) -> Verdict:
        scanners = self.settings.scanners
        self._ban(key, now + scanners.ban_time, SCANNER, None)
        self.drops[SCANNER] += 1
        reply = scanners.action == "reply" and request.method != "ACK"
        return Verdict(SCANNER, FORBIDDEN if reply else None, detail)

    def _listener_name(self, listener: int) -> str | None:
        names = self.listener_names
        return names[listener] if 0 <= listener < len(names) else None

    # ---- what happened to admitted requests ----------------------------------------------------
    def final_answer(self, request: Request, host: str, status: int, now: float) -> None:
        """The final status sent back for a request from ``host`` (enumeration, guessing)."""
        if not self._scanners_on:
            return
        policy = self._acl.policy(host)
        if policy.trusted:
            return
        detection = self._watch.final_answer(policy.key, request, status, now)
        if detection is not None:
            self._ban(policy.key, now + self.settings.scanners.ban_time, detection.reason, None)

    # ---- bans ----------------------------------------------------------------------------------
    def is_trusted(self, host: str) -> bool:
        """A destination's host, or a host in a trusted network."""
        return self._acl.policy(host).trusted

    def is_banned(self, host: str, now: float) -> bool:
        return self._bans.is_banned(self._acl.policy(host).key, now)

    def ban(self, host: str, seconds: float, reason: str, now: float) -> bool:
        """Ban ``host`` for ``seconds`` (an operator, another worker or node).

        Emits ``SourceBanned`` and returns True when this is a new ban or makes one longer; a
        trusted host is not banned (False), nor is one already banned at least as long (False,
        no event: a ban shared between workers does not echo back and forth).
        """
        if self._acl.decide(host).trusted:
            return False
        return self._ban(host_key(host), now + seconds, reason, None)

    def unban(self, host: str) -> bool:
        """Lift a ban and forgive the source (its score and failure counts); False if none."""
        key = host_key(host)
        self._rates.forget(key)
        self._watch.forget(key)
        if not self._bans.unban(key):
            return False
        self.events.append(BanLifted(key))
        return True

    def bans(self, now: float) -> list[BanView]:
        """The bans in force, the one ending first first."""
        return self._bans.active(now)

    def expire(self, now: float) -> None:
        """Housekeeping, about once a second: lift ended bans, forget idle sources."""
        self.events.extend(BanLifted(key) for key in self._bans.expire(now))
        self._rates.expire(now)
        self._watch.expire(now)

    def sizes(self) -> dict[str, int]:
        """How many entries each table holds (each is bounded; for metrics and tests)."""
        return {
            "hosts": self._acl.cached,
            "sources": self._rates.tracked,
            "scores": self._rates.scored,
            "watched": self._watch.tracked,
            "bans": len(self._bans),
        }

    def _ban(self, key: str, until: float, reason: str, offences: int | None) -> bool:
        ban = self._bans.ban(key, until, reason, offences)
        if ban is None:
            return False
        self.events.append(SourceBanned(ban.host, ban.reason, ban.until, ban.offences))
        return True

    def _lift_trusted(self) -> None:
        for ban in self._bans:
            if self._acl.decide(ban.host).trusted:
                self._bans.unban(ban.host)
                self.events.append(BanLifted(ban.host))


__all__ = [
    "ACL",
    "BANNED",
    "BLOCKLIST",
    "RATE",
    "SCANNER",
    "Admission",
    "AdmissionEvent",
    "BanLifted",
    "BanView",
    "SourceBanned",
    "Verdict",
]
