"""``[protection]`` and ``[[acl]]``: the admission stage's settings, with the blocklist file.

The blocklist is read here, when the config is loaded (and so again at each reload): a line
that is not a network is a problem of the config like any other, reported with its line number,
so a broken list is refused before it replaces a working one.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Any

from siplb.settings import (
    DEFAULT_SCANNER_AGENTS,
    AclRule,
    IPNetwork,
    NftablesSettings,
    ProtectionSettings,
    RateSettings,
    ScannerSettings,
)

from .files import find_file
from .problems import Loc, Problems
from .schema import AclModel, NftablesModel, ProtectionModel, RateModel, ScannersModel
from .values import parse_network

MAX_LINE_PROBLEMS = 10  # bad blocklist lines reported one by one; the rest are counted
_BLOCKLIST: Loc = ("protection", "blocklist")


def build_protection(
    table: dict[str, Any],
    acl_tables: list[dict[str, Any]],
    listener_names: Collection[str] | None,
    problems: Problems,
    base_dir: Path | None,
) -> ProtectionSettings:
    """``[protection]`` and ``[[acl]]``. ``listener_names`` are the names of the ``[[listen]]``
    tables, or None when those are broken (then an ACL's listener names are not checked)."""
    model, _ = problems.validate_partial(ProtectionModel, table, ("protection",))
    if model is None:  # pragma: no cover - every key has a default
        model = ProtectionModel.model_validate({})
    blocklist = find_file(model.blocklist, _BLOCKLIST, problems, base_dir)
    blocked = read_blocklist(blocklist, problems) if blocklist and blocklist.is_file() else ()
    return ProtectionSettings(
        trusted=tuple(model.trusted),
        blocklist=blocklist,
        blocked=blocked,
        rate=_rate(model.rate, problems),
        scanners=_scanners(model.scanners, problems),
        nftables=_nftables(model.nftables, problems),
        passive_methods=model.passive_methods,
        acl=build_acl(acl_tables, listener_names, problems),  # after: problems in file order
    )


def build_acl(
    tables: list[dict[str, Any]], listener_names: Collection[str] | None, problems: Problems
) -> tuple[AclRule, ...]:
    rules: list[AclRule] = []
    for index, table in enumerate(tables):
        loc: Loc = ("acl", index)
        model, broken = problems.validate_partial(AclModel, table, loc)
        if "listen" not in broken and listener_names is not None:
            _check_listener_names(table.get("listen"), listener_names, (*loc, "listen"), problems)
        if model is None:
            continue
        if "source" not in broken and not model.source:
            problems.add(
                (*loc, "source"), 'list at least one network ("0.0.0.0/0", "::/0": any source)'
            )
        if model.listen == []:
            problems.add((*loc, "listen"), "an empty list never matches: remove the key")
        listeners = None if model.listen is None else frozenset(model.listen)
        rules.append(AclRule(model.action, tuple(model.source), model.method, listeners))
    return tuple(rules)


def _check_listener_names(
    names: object, known: Collection[str], loc: Loc, problems: Problems
) -> None:
    if not isinstance(names, list):
        return
    for name in names:
        if isinstance(name, str) and name not in known:
            listed = ", ".join(repr(known_name) for known_name in known)
            problems.add(loc, f"no listener is named {name!r} (names: {listed or 'none'})")


def read_blocklist(path: Path, problems: Problems) -> tuple[IPNetwork, ...]:
    """The networks of the blocklist file at ``path``; its bad lines are problems."""
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        problems.add(_BLOCKLIST, f"cannot read {str(path)!r}: {exc.strerror}")
        return ()
    except UnicodeDecodeError as exc:
        problems.add(_BLOCKLIST, f"{str(path)!r} is not UTF-8 text (bad byte at {exc.start})")
        return ()
    networks, bad = parse_blocklist(text)
    for number, message in bad[:MAX_LINE_PROBLEMS]:
        problems.add(_BLOCKLIST, f"{path.name} line {number}: {message}")
    if len(bad) > MAX_LINE_PROBLEMS:
        problems.add(_BLOCKLIST, f"{path.name}: {len(bad) - MAX_LINE_PROBLEMS} more bad lines")
    return networks


def parse_blocklist(text: str) -> tuple[tuple[IPNetwork, ...], list[tuple[int, str]]]:
    """One network or address per line; ``#`` starts a comment, blank lines are skipped.
    Returns the networks (each once, in file order) and the bad lines (number, reason)."""
    networks: dict[IPNetwork, None] = {}
    bad: list[tuple[int, str]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        entry = line.partition("#")[0].strip()
        if not entry:
            continue
        try:
            networks[parse_network(entry)] = None
        except ValueError as exc:
            bad.append((number, str(exc)))
    return tuple(networks), bad


def _rate(table: dict[str, Any], problems: Problems) -> RateSettings:
    loc: Loc = ("protection", "rate")
    model, broken = problems.validate_partial(RateModel, table, loc)
    if model is None:  # pragma: no cover - every key has a default
        return RateSettings()
    problems.check_order(model, broken, loc, "ban_time", "max_ban_time")
    return RateSettings(**model.model_dump(by_alias=True))


def _scanners(table: dict[str, Any], problems: Problems) -> ScannerSettings:
    model, _ = problems.validate_partial(ScannersModel, table, ("protection", "scanners"))
    if model is None:  # pragma: no cover - every key has a default
        return ScannerSettings()
    agents = DEFAULT_SCANNER_AGENTS if model.user_agents is None else tuple(model.user_agents)
    return ScannerSettings(
        enabled=model.enabled,
        action=model.action,
        user_agents=tuple(dict.fromkeys((*agents, *model.extra_user_agents))),
        from_patterns=tuple(model.from_patterns),
        ban_time=model.ban_time,
        max_failed_users=model.max_failed_users,
        failed_users_window=model.failed_users_window,
        max_register_failures=model.max_register_failures,
    )


def _nftables(table: dict[str, Any], problems: Problems) -> NftablesSettings:
    loc: Loc = ("protection", "nftables")
    model, broken = problems.validate_partial(NftablesModel, table, loc)
    if model is None:  # pragma: no cover - every key has a default
        return NftablesSettings()
    if not broken & {"set4", "set6"} and model.set4 == model.set6:
        problems.add((*loc, "set6"), f"must differ from set4 ({model.set4!r})")
    return NftablesSettings(**model.model_dump())
