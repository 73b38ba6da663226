"""Who a source is: blocked, trusted, and which ``[[acl]]`` rules may apply to it.

Every decision of the admission stage that depends on the source's address alone is made once
per host and cached, so the per-packet path costs one dict lookup instead of parsing an address
and scanning networks:

- **Blocked**: the host is in a network of the blocklist file (``ProtectionSettings.blocked``).
- **Trusted**: the host is a destination (``set_destinations``) or in a ``trusted`` network.
- **ACL rules**: the ``[[acl]]`` rules whose ``sources`` hold the host, in configuration order.
  The method and the listener are per request, so ``HostPolicy.allows`` finishes the decision:
  the first of those rules whose ``methods`` and ``listeners`` (each None = any) match decides,
  and no match allows.
- **Key**: the host's canonical spelling, under which bans and rates are kept. A dual-stack
  socket reports IPv4 peers as ``::ffff:a.b.c.d``; such a host is the IPv4 address, so it matches
  IPv4 networks and shares its ban with ``a.b.c.d``.

A host that is not an IP literal (no peer address should be, but the shell is not trusted to
check) is in no network; its key is the string itself. Nothing here raises for it.

Networks are matched by masking rather than by scanning: ``NetworkSet`` keeps, per address
family and prefix length, the set of network numbers, so a lookup costs one set probe per
distinct prefix length (a few for a real blocklist), whatever the number of networks.

The cache holds at most ``CACHE_SIZE`` hosts; a new host pushes out the oldest one (a spray of
spoofed sources cannot grow it). It is emptied whenever the rules or the destinations change.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Final

from siplb.settings import AclRule, IPAddress, IPNetwork

from .pike import trim

CACHE_SIZE: Final = 65536


def parse_host(host: str) -> IPAddress | None:
    """The address of a host string (IPv4-mapped IPv6 as IPv4), or None if it is no IP literal."""
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        address = ip_address(host)
    except ValueError:
        return None
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def host_key(host: str) -> str:
    """The canonical spelling of a host: bans and rates are kept under it."""
    address = parse_host(host)
    return host if address is None else str(address)


class NetworkSet:
    """Networks of both families, tested by one set probe per distinct prefix length."""

    __slots__ = ("_v4", "_v6")

    def __init__(self, networks: Iterable[IPNetwork]) -> None:
        v4: dict[int, set[int]] = {}
        v6: dict[int, set[int]] = {}
        for net in networks:
            table, bits = (v4, 32) if net.version == 4 else (v6, 128)
            shift = bits - net.prefixlen
            table.setdefault(shift, set()).add(int(net.network_address) >> shift)
        # Longest prefixes first: they are the most numerous in a blocklist.
        self._v4 = tuple(sorted((s, frozenset(n)) for s, n in v4.items()))
        self._v6 = tuple(sorted((s, frozenset(n)) for s, n in v6.items()))

    def __contains__(self, address: IPAddress) -> bool:
        value = int(address)
        table = self._v4 if isinstance(address, IPv4Address) else self._v6
        return any(value >> shift in numbers for shift, numbers in table)


@dataclass(frozen=True, slots=True)
class CompiledRule:
    """An ``AclRule`` with its networks ready for matching."""

    rule: AclRule
    sources: NetworkSet


@dataclass(frozen=True, slots=True)
class HostPolicy:
    """What the source address alone decides (see the module docstring)."""

    key: str
    blocked: bool = False
    trusted: bool = False
    rules: tuple[AclRule, ...] = ()  # the ACL rules whose sources hold the host, in order

    def allows(self, method: str, listener: str | None) -> bool:
        """The first of ``rules`` matching the method and the listener's name decides."""
        for rule in self.rules:
            if rule.methods is not None and method not in rule.methods:
                continue
            if rule.listeners is not None and (listener is None or listener not in rule.listeners):
                continue
            return rule.action == "allow"
        return True


class AccessControl:
    """Blocklist, trusted networks, destinations and ACL rules, decided per host and cached."""

    __slots__ = ("_blocked", "_cache", "_cache_size", "_destinations", "_rules", "_trusted")

    def __init__(
        self,
        *,
        acl: Iterable[AclRule] = (),
        blocked: Iterable[IPNetwork] = (),
        trusted: Iterable[IPNetwork] = (),
        destinations: Iterable[str] = (),
        cache_size: int = CACHE_SIZE,
    ) -> None:
        self._cache: dict[str, HostPolicy] = {}
        self._cache_size = cache_size
        self._rules: tuple[CompiledRule, ...] = ()
        self._blocked = NetworkSet(())
        self._trusted = NetworkSet(())
        self._destinations: frozenset[str] = frozenset()
        self.configure(acl=acl, blocked=blocked, trusted=trusted)
        self.set_destinations(destinations)

    def configure(
        self,
        *,
        acl: Iterable[AclRule],
        blocked: Iterable[IPNetwork],
        trusted: Iterable[IPNetwork],
    ) -> None:
        """New rules (a reload): every cached decision is forgotten."""
        self._rules = tuple(CompiledRule(rule, NetworkSet(rule.sources)) for rule in acl)
        self._blocked = NetworkSet(blocked)
        self._trusted = NetworkSet(trusted)
        self._cache.clear()

    def set_destinations(self, hosts: Iterable[str]) -> bool:
        """The hosts of every destination (IP literals), exempt like trusted networks.

        True if that changed anything (then every cached decision is forgotten).
        """
        destinations = frozenset(host_key(host) for host in hosts)
        if destinations == self._destinations:
            return False
        self._destinations = destinations
        self._cache.clear()
        return True

    def policy(self, host: str) -> HostPolicy:
        """The cached decision for ``host`` (the hot path: one dict lookup once seen)."""
        policy = self._cache.get(host)
        if policy is None:
            policy = self.decide(host)
            trim(self._cache, self._cache_size - 1)  # the oldest entry goes
            self._cache[host] = policy
        return policy

    @property
    def cached(self) -> int:
        """How many hosts have a cached decision."""
        return len(self._cache)

    def decide(self, host: str) -> HostPolicy:
        """The decision for ``host``, made afresh and not cached (rare callers: bans, reloads)."""
        address = parse_host(host)
        if address is None:
            return HostPolicy(host, trusted=host in self._destinations)
        key = str(address)
        return HostPolicy(
            key,
            blocked=address in self._blocked,
            trusted=key in self._destinations or address in self._trusted,
            rules=tuple(c.rule for c in self._rules if address in c.sources),
        )


__all__ = [
    "CACHE_SIZE",
    "AccessControl",
    "CompiledRule",
    "HostPolicy",
    "NetworkSet",
    "host_key",
    "parse_host",
]
