"""``[health] sets`` and ``withdraw_delay`` (when the node as a whole is healthy), and
``[announce]`` (the prefixes ``siplb announce`` has ExaBGP announce while it is).

``[health]`` also holds the destination probes' settings (``schema.HealthModel``): the two keys
of the node's own health are taken out of the table here, and the rest goes on to the probes'
model, so that each key is reported once, by the model it belongs to.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from typing import Annotated, Any

from pydantic import Field, PlainValidator

from siplb.settings import AnnounceSettings, NodeHealthSettings, SetsPolicy

from .problems import Loc, Problems, shown
from .schema import Model, Seconds

NODE_HEALTH_KEYS = ("sets", "withdraw_delay")
MAX_MED = 2**32 - 1  # RFC 4271 5.1.4: MULTI_EXIT_DISC is four octets
_COMMUNITY = re.compile(r"([0-9]{1,5}):([0-9]{1,5})")  # RFC 1997: AS:value, two octets each
_HEALTH: Loc = ("health",)
_ANNOUNCE: Loc = ("announce",)


def _sets_value(value: object) -> str | list[str]:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    raise ValueError(f'must be "any", "every" or a list of set names (got {shown(value)})')


class NodeHealthModel(Model):
    sets: Annotated[str | list[str], PlainValidator(_sets_value)] = "any"
    withdraw_delay: float = Field(1.0, ge=0, le=60)


class AnnounceModel(Model):
    prefixes: list[str]
    next_hop: str = "self"
    interval: Seconds = 0.2
    timeout: Seconds = 0.5
    med: int | None = Field(None, ge=0, le=MAX_MED)
    communities: list[str] = Field(default_factory=list)


def split_health(table: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``[health]`` as (the node's own keys, the destination probes' keys)."""
    node = {key: value for key, value in table.items() if key in NODE_HEALTH_KEYS}
    probes = {key: value for key, value in table.items() if key not in NODE_HEALTH_KEYS}
    return node, probes


def build_node_health(
    table: dict[str, Any], set_names: Sequence[object] | None, problems: Problems
) -> NodeHealthSettings:
    """The node's health policy; ``set_names`` are the sets the file defines (None when
    ``[[sets]]`` is itself broken: names are then not checked)."""
    model, broken = problems.validate_partial(NodeHealthModel, table, _HEALTH)
    if model is None:  # pragma: no cover - every key has a default
        return NodeHealthSettings()
    sets = (
        NodeHealthSettings().sets if "sets" in broken else _policy(model.sets, set_names, problems)
    )
    return NodeHealthSettings(sets=sets, withdraw_delay=model.withdraw_delay)


def _policy(
    value: str | list[str], set_names: Sequence[object] | None, problems: Problems
) -> SetsPolicy:
    loc = (*_HEALTH, "sets")
    if isinstance(value, str):
        if value == "every":
            return "every"
        if value == "any":
            return "any"
        problems.add(loc, f'must be "any", "every" or a list of set names (got {value!r})')
        return "any"
    if not value:
        problems.add(loc, 'an empty list asks nothing: use "any", "every" or name some sets')
    seen: set[str] = set()
    for index, name in enumerate(value):
        if name in seen:
            problems.add((*loc, index), f"set {name!r} is named twice")
        seen.add(name)
        if set_names is not None and name not in set_names:
            known = ", ".join(repr(n) for n in dict.fromkeys(set_names) if isinstance(n, str))
            problems.add((*loc, index), f"unknown set {name!r} (sets: {known or 'none'})")
    return tuple(dict.fromkeys(value))


def build_announce(
    table: dict[str, Any] | None, admin_table: dict[str, Any] | None, problems: Problems
) -> AnnounceSettings | None:
    """``[announce]``, or None when the file has none. ``siplb announce`` asks the node's
    admin API, so the table needs ``[admin]`` too."""
    if table is None:
        return None
    if admin_table is None:
        problems.add(_ANNOUNCE, "needs [admin]: siplb announce checks the node by GET /api/health")
    model, broken = problems.validate_partial(AnnounceModel, table, _ANNOUNCE)
    if model is None:
        return None
    prefixes = () if "prefixes" in broken else _prefixes(model.prefixes, problems)
    next_hop = "self" if "next_hop" in broken else _next_hop(model.next_hop, prefixes, problems)
    if not broken & {"interval", "timeout"} and model.interval + model.timeout > 1.0:
        problems.add(
            (*_ANNOUNCE, "timeout"),
            f"interval + timeout must be at most 1 s (got {model.interval + model.timeout:g}): "
            "a hung node's route has to go within a second",
        )
    communities = () if "communities" in broken else _communities(model.communities, problems)
    return AnnounceSettings(
        prefixes=tuple(str(prefix) for prefix in prefixes),
        next_hop=next_hop,
        interval=model.interval,
        timeout=model.timeout,
        med=model.med,
        communities=communities,
    )


Prefix = ipaddress.IPv4Network | ipaddress.IPv6Network


def _prefixes(values: list[str], problems: Problems) -> tuple[Prefix, ...]:
    loc = (*_ANNOUNCE, "prefixes")
    if not values:
        problems.add(loc, 'needs at least one prefix, like "192.0.2.10/32"')
    found: dict[Prefix, int] = {}
    for index, text in enumerate(values):
        if "/" not in text:
            problems.add((*loc, index), f"must be a prefix with its length, like {text}/32")
            continue
        try:
            prefix = ipaddress.ip_network(text, strict=True)
        except ValueError as exc:
            problems.add((*loc, index), f"not a prefix: {exc}")
            continue
        if prefix in found:
            problems.add((*loc, index), f"same prefix as prefixes[{found[prefix]}]")
        found.setdefault(prefix, index)
    return tuple(found)


def _next_hop(value: str, prefixes: Sequence[Prefix], problems: Problems) -> str:
    if value == "self":
        return value
    loc = (*_ANNOUNCE, "next_hop")
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        problems.add(loc, f'must be "self" or an IP address (got {value!r})')
        return "self"
    if any(prefix.version != address.version for prefix in prefixes):
        problems.add(loc, f"IPv{address.version} next hop for a prefix of the other family")
    return str(address)


def _communities(values: list[str], problems: Problems) -> tuple[str, ...]:
    out = []
    for index, text in enumerate(values):
        match = _COMMUNITY.fullmatch(text)
        if match is None or max(int(match[1]), int(match[2])) > 0xFFFF:
            problems.add(
                (*_ANNOUNCE, "communities", index),
                f"must be AS:value, each 0 to 65535 (got {text!r})",
            )
            continue
        out.append(f"{int(match[1])}:{int(match[2])}")
    return tuple(out)
