"""What ``siplb announce`` tells ExaBGP: the service prefixes announced while the node is
healthy, withdrawn the moment it is not (pure: the program around it is ``siplb.io.exabgp``).

ExaBGP (4.2) runs ``siplb announce`` as a process of its process API with the text encoder:
each line the program writes to its stdout is a command (``announce route 192.0.2.10/32
next-hop self``, ``withdraw route ...``), and with ``exabgp.api.ack`` ExaBGP answers each on
the program's stdin (``done`` or ``error``), where its other messages arrive too.

Rules, in one place:

- Every ``interval`` the program asks the node (``GET /api/health``, at most ``timeout``). A
  check is *healthy* only when the node answers 200. A 503, no answer in time (siplb hung), a
  refused connection (siplb dead) or any other failure is *unhealthy*.
- Healthy while the prefixes are not announced: announce them. Unhealthy while they are:
  withdraw them, at once (one failed check is enough: a route to a dead node is a black hole,
  while a node briefly out of the ECMP group costs nothing). Anything else: no command.
- The program starts with nothing announced. ExaBGP keeps what the program announced across
  BGP session resets, so nothing is sent again then.

Worst case from the node's death to the withdraw command: ``interval + timeout`` (a check that
started just before it), which the config keeps under a second.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from siplb.settings import AnnounceSettings


class Verdict(StrEnum):
    """How one check ended."""

    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"  # the node answered 503
    TIMEOUT = "no answer in time"
    REFUSED = "connection refused"
    FAILED = "check failed"  # any other error (a reset, a 401, a body that is not the API's)


@dataclass(frozen=True, slots=True)
class Check:
    verdict: Verdict
    detail: str = ""  # the node's reasons, or the error


def route_attributes(settings: AnnounceSettings) -> str:
    """The attributes of every announced route, in ExaBGP's text syntax."""
    parts = [f"next-hop {settings.next_hop}"]
    if settings.med is not None:
        parts.append(f"med {settings.med}")
    if settings.communities:
        parts.append(f"community [{' '.join(settings.communities)}]")
    return " ".join(parts)


def announce_commands(settings: AnnounceSettings) -> list[str]:
    attributes = route_attributes(settings)
    return [f"announce route {prefix} {attributes}" for prefix in settings.prefixes]


def withdraw_commands(settings: AnnounceSettings) -> list[str]:
    return [f"withdraw route {prefix} next-hop {settings.next_hop}" for prefix in settings.prefixes]


class Announcer:
    """The state machine of the rules above: ``checked`` takes each check's result and returns
    the commands to write (often none)."""

    def __init__(self, settings: AnnounceSettings) -> None:
        self.settings = settings
        self.announced = False

    def checked(self, check: Check) -> list[str]:
        healthy = check.verdict is Verdict.HEALTHY
        if healthy == self.announced:
            return []
        self.announced = healthy
        if healthy:
            return announce_commands(self.settings)
        return withdraw_commands(self.settings)
