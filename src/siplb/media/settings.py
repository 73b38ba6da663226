"""``[media]`` as the rest of siplb sees it: frozen, already checked by ``siplb.config.media``.

Here, in the pure package, so the proxy core (``anchor``, ``flags``, ``on_failure``) and the
engine client (``engines``, ``timeout``, ``ping_interval``...) read one value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Anchor = Literal["always", "nat", "never"]
OnFailure = Literal["forward", "reject"]
DEFAULT_FLAGS = ("replace-origin", "replace-session-connection")


@dataclass(frozen=True, slots=True)
class EngineSpec:
    """One rtpengine's ng control address (UDP) and its share of new calls."""

    host: str  # an IP literal, IPv6 without brackets
    port: int
    weight: int = 1

    @property
    def address(self) -> str:
        """``udp:host:port``, as the config writes it; the engine's name everywhere."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"udp:{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class MediaSettings:
    """Which calls are anchored, on which engines, and what a failure does."""

    engines: tuple[EngineSpec, ...]
    anchor: Anchor = "nat"  # always | only calls with a phone behind NAT | never
    flags: tuple[str, ...] = DEFAULT_FLAGS  # ng options for every offer and answer
    timeout: float = 1.0  # seconds for one engine's reply, retransmitted within it
    ping_interval: float = 5.0  # seconds between pings of each engine
    retry_after: float = 30.0  # a down engine gets new calls again after this, unless a ping
    on_failure: OnFailure = "forward"  # no engine answered: forward unanchored, or 503
    max_calls: int = 100_000  # call-id -> engine entries remembered (oldest forgotten first)
    max_pending: int = 1000  # commands waiting for an engine's reply, at most
    shared: bool = False  # engines share calls (rtpengine --redis): another may answer for one
