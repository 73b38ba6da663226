"""``[media]``: media anchoring on rtpengines, steered over their ng control protocol.

    [media]
    engines = ["udp:10.0.0.21:2223", "udp:10.0.0.22:2223"]   # or tables, with a weight:
    # engines = [{ address = "udp:10.0.0.21:2223", weight = 2 }, "udp:10.0.0.22:2223"]
    anchor = "nat"          # "always" | "nat" | "never"
    flags = ["replace-origin", "replace-session-connection", "ICE=remove"]
    timeout = 1.0           # seconds for one engine's reply (sent again at half of it)
    ping_interval = 5.0
    retry_after = 30.0      # a down engine gets new calls again after this (or a ping's answer)
    on_failure = "forward"  # "forward" | "reject"
    shared = false          # the engines share their calls through Redis (rtpengine --redis)
    max_calls = 100000
    max_pending = 1000

An engine is an IP address and a port (``udp:`` in front is optional; the ng protocol over UDP
is the only one spoken): no DNS name, so loading the config never waits for a resolver.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, PlainValidator

from siplb.media.ng import check_option
from siplb.media.settings import DEFAULT_FLAGS, EngineSpec, MediaSettings

from .problems import Loc, Problems
from .schema import Model, Seconds
from .values import parse_peer_address

_LOC: Loc = ("media",)
MAX_ENGINES = 64
MAX_WEIGHT = 1000


def parse_engine_address(value: Any) -> tuple[str, int]:
    """``udp:IP:port`` or ``IP:port`` (``[IPv6]:port``) as (ip, port)."""
    if not isinstance(value, str):
        raise ValueError("expected a string")
    text = value.removeprefix("udp:")
    if text.split(":", 1)[0] in ("tcp", "tls", "ws", "http"):
        raise ValueError(f'engines speak ng over UDP: write "udp:IP:port" (got {value!r})')
    try:
        return parse_peer_address(text)
    except ValueError as exc:
        raise ValueError(f'{exc}; an engine is "udp:IP:port", like "udp:10.0.0.21:2223"') from None


EngineAddress = Annotated[tuple[str, int], PlainValidator(parse_engine_address)]


class EngineModel(Model):
    """One engine written as a table."""

    address: EngineAddress
    weight: int = Field(1, ge=1, le=MAX_WEIGHT)


class MediaModel(Model):
    engines: list[Any] = Field(default_factory=list)  # strings or EngineModel tables
    anchor: Literal["always", "nat", "never"] = "nat"
    flags: list[str] = Field(default_factory=lambda: list(DEFAULT_FLAGS))
    timeout: Seconds = 1.0
    ping_interval: Seconds = 5.0
    retry_after: Seconds = 30.0
    on_failure: Literal["forward", "reject"] = "forward"
    shared: bool = False
    max_calls: int = Field(100_000, ge=1, le=10_000_000)
    max_pending: int = Field(1000, ge=1, le=100_000)


def build_media(table: dict[str, Any] | None, problems: Problems) -> MediaSettings | None:
    """``[media]``, or None when the file has none (no call is anchored)."""
    if table is None:
        return None
    model, broken = problems.validate_partial(MediaModel, table, _LOC)
    if model is None:
        return None
    engines = _engines(model.engines, problems) if "engines" not in broken else ()
    if "flags" not in broken:
        _check_flags(model.flags, problems)
    if model.timeout > 30:
        problems.add((*_LOC, "timeout"), "at most 30 seconds: a call's setup waits for it")
    return MediaSettings(
        engines=engines,
        anchor=model.anchor,
        flags=tuple(model.flags),
        timeout=model.timeout,
        ping_interval=model.ping_interval,
        retry_after=model.retry_after,
        on_failure=model.on_failure,
        max_calls=model.max_calls,
        max_pending=model.max_pending,
        shared=model.shared,
    )


def _engines(items: list[Any], problems: Problems) -> tuple[EngineSpec, ...]:
    loc: Loc = (*_LOC, "engines")
    if not items:
        problems.add(loc, 'at least one engine, like engines = ["udp:127.0.0.1:2223"]')
    if len(items) > MAX_ENGINES:
        problems.add(loc, f"at most {MAX_ENGINES} engines")
    specs: list[EngineSpec] = []
    for index, item in enumerate(items):
        spec = _engine(item, (*loc, index), problems)
        if spec is None:
            continue
        if any(other.address == spec.address for other in specs):
            problems.add((*loc, index), f"{spec.address} is listed twice")
            continue
        specs.append(spec)
    return tuple(specs)


def _engine(item: Any, loc: Loc, problems: Problems) -> EngineSpec | None:
    if isinstance(item, dict):
        model = problems.validate(EngineModel, item, loc)
        return None if model is None else EngineSpec(*model.address, weight=model.weight)
    try:
        host, port = parse_engine_address(item)
    except ValueError as exc:
        problems.add(loc, str(exc))
        return None
    return EngineSpec(host, port)


def _check_flags(flags: list[str], problems: Problems) -> None:
    for index, flag in enumerate(flags):
        problem = check_option(flag)
        if problem is not None:
            problems.add((*_LOC, "flags", index), f"{problem} (got {flag!r})")
