"""Source decisions of the admission stage (siplb.proxy.acl): networks, ACL rules, the cache."""

from __future__ import annotations

from ipaddress import ip_network

import pytest

from siplb.proxy.acl import AccessControl, HostPolicy, NetworkSet, host_key, parse_host
from siplb.settings import AclRule, IPNetwork


def nets(*specs: str) -> tuple[IPNetwork, ...]:
    return tuple(ip_network(spec) for spec in specs)


# (host string, canonical key, whether it is an IP literal)
HOST_CASES = [
    pytest.param("192.0.2.1", "192.0.2.1", True, id="ipv4"),
    pytest.param("2001:DB8:0::1", "2001:db8::1", True, id="ipv6 canonical"),
    pytest.param("::ffff:192.0.2.1", "192.0.2.1", True, id="ipv4-mapped"),
    pytest.param("::FFFF:c000:0201", "192.0.2.1", True, id="ipv4-mapped in hex"),
    pytest.param("[2001:db8::1]", "2001:db8::1", True, id="brackets"),
    pytest.param("fe80::1%eth0", "fe80::1%eth0", True, id="scope id"),
    pytest.param("example.com", "example.com", False, id="a name"),
    pytest.param("", "", False, id="empty"),
    pytest.param("300.1.1.1", "300.1.1.1", False, id="octet too large"),
    pytest.param("1.2.3.4/24", "1.2.3.4/24", False, id="a network"),
    pytest.param("[", "[", False, id="a bracket"),
    pytest.param("\x00\xff", "\x00\xff", False, id="garbage"),
]


@pytest.mark.parametrize(("host", "key", "is_ip"), HOST_CASES)
def test_host_key_is_canonical_and_never_raises(host: str, key: str, is_ip: bool) -> None:
    assert host_key(host) == key
    assert (parse_host(host) is not None) is is_ip


# (networks, address, inside)
NETWORK_CASES = [
    pytest.param(("10.0.0.0/8",), "10.255.1.2", True, id="inside /8"),
    pytest.param(("10.0.0.0/8",), "11.0.0.1", False, id="outside /8"),
    pytest.param(("192.0.2.7/32",), "192.0.2.7", True, id="a host"),
    pytest.param(("192.0.2.7/32",), "192.0.2.8", False, id="next to a host"),
    pytest.param(("0.0.0.0/0",), "203.0.113.9", True, id="everything v4"),
    pytest.param(("0.0.0.0/0",), "2001:db8::1", False, id="v4 networks hold no v6"),
    pytest.param(("::/0",), "192.0.2.1", False, id="v6 networks hold no v4"),
    pytest.param(("2001:db8::/32",), "2001:db8:ffff::1", True, id="inside v6 /32"),
    pytest.param(("2001:db8::/32",), "2001:db9::1", False, id="outside v6 /32"),
    pytest.param(("10.0.0.0/8", "192.0.2.0/24", "2001:db8::/48"), "192.0.2.200", True, id="many"),
    pytest.param((), "192.0.2.1", False, id="none"),
]


@pytest.mark.parametrize(("networks", "address", "inside"), NETWORK_CASES)
def test_network_set_matches_like_ipaddress(
    networks: tuple[str, ...], address: str, inside: bool
) -> None:
    parsed = parse_host(address)
    assert parsed is not None
    assert (parsed in NetworkSet(nets(*networks))) is inside
    assert any(parsed in net for net in nets(*networks)) is inside


def test_a_large_blocklist() -> None:
    blocklist = NetworkSet(ip_network(f"10.{i // 256}.{i % 256}.0/24") for i in range(5000))
    inside, outside = parse_host("10.19.135.9"), parse_host("10.200.0.1")
    assert inside is not None
    assert outside is not None
    assert inside in blocklist
    assert outside not in blocklist


RULES = (
    AclRule("deny", nets("10.0.0.0/8"), methods=frozenset({"REGISTER"})),
    AclRule("allow", nets("10.1.0.0/16"), listeners=frozenset({"internal"})),
    AclRule("deny", nets("10.1.0.0/16")),
    AclRule("allow", nets("0.0.0.0/0"), methods=frozenset({"OPTIONS"})),
    AclRule("deny", nets("198.51.100.0/24"), listeners=frozenset({"public"})),
)

# (host, method, listener name, allowed): the first matching rule decides, no match allows
ACL_CASES = [
    pytest.param("10.1.2.3", "REGISTER", "internal", False, id="first rule by method"),
    pytest.param("10.1.2.3", "INVITE", "internal", True, id="second rule by listener"),
    pytest.param("10.1.2.3", "INVITE", "public", False, id="third rule, other listener"),
    pytest.param("10.1.2.3", "INVITE", None, False, id="unnamed listener skips listener rules"),
    pytest.param("10.1.2.3", "OPTIONS", "public", False, id="earlier deny wins over later allow"),
    pytest.param("10.2.0.1", "INVITE", "public", True, id="no rule for the method"),
    pytest.param("10.2.0.1", "REGISTER", "public", False, id="outer network by method"),
    pytest.param("198.51.100.9", "INVITE", "public", False, id="deny on one listener"),
    pytest.param("198.51.100.9", "INVITE", "internal", True, id="allowed on another"),
    pytest.param("198.51.100.9", "OPTIONS", "public", True, id="allow before the deny"),
    pytest.param("::ffff:10.1.2.3", "REGISTER", "internal", False, id="ipv4-mapped"),
    pytest.param("2001:db8::1", "REGISTER", "public", True, id="v6 in no rule"),
    pytest.param("not-an-ip", "REGISTER", "public", True, id="a name is in no network"),
]


@pytest.mark.parametrize(("host", "method", "listener", "allowed"), ACL_CASES)
def test_acl_first_match_by_method_and_listener(
    host: str, method: str, listener: str | None, allowed: bool
) -> None:
    control = AccessControl(acl=RULES)
    assert control.policy(host).allows(method, listener) is allowed


# (host, blocked, trusted)
SOURCE_CASES = [
    pytest.param("203.0.113.9", True, False, id="blocked"),
    pytest.param("::ffff:203.0.113.9", True, False, id="blocked, ipv4-mapped"),
    pytest.param("172.16.5.5", False, True, id="trusted network"),
    pytest.param("192.0.2.10", False, True, id="a destination"),
    pytest.param("::ffff:192.0.2.10", False, True, id="a destination, ipv4-mapped"),
    pytest.param("2001:db8::10", False, True, id="a v6 destination, other spelling"),
    pytest.param("192.0.2.11", False, False, id="neither"),
    pytest.param("pbx.example.com", False, True, id="a destination given by name"),
    pytest.param("other.example.com", False, False, id="another name"),
]


@pytest.mark.parametrize(("host", "blocked", "trusted"), SOURCE_CASES)
def test_blocked_and_trusted_sources(host: str, blocked: bool, trusted: bool) -> None:
    control = AccessControl(
        blocked=nets("203.0.113.0/24"),
        trusted=nets("172.16.0.0/12"),
        destinations=["192.0.2.10", "2001:DB8:0:0::10", "pbx.example.com"],
    )
    policy = control.policy(host)
    assert (policy.blocked, policy.trusted) == (blocked, trusted)


def test_the_cache_is_bounded_and_pushes_out_the_oldest() -> None:
    control = AccessControl(cache_size=100)
    first = control.policy("10.0.0.0")
    for i in range(1, 1000):
        control.policy(f"10.0.{i // 256}.{i % 256}")
        assert control.cached <= 100
    newest = control.policy("10.0.3.231")
    assert control.policy("10.0.3.231") is newest  # still cached: the same object
    assert control.policy("10.0.0.0") is not first  # pushed out long ago: decided afresh
    assert control.cached == 100


def test_a_cached_decision_is_reused_until_the_rules_change() -> None:
    control = AccessControl(acl=(AclRule("deny", nets("10.0.0.0/8")),))
    first = control.policy("10.0.0.1")
    assert control.policy("10.0.0.1") is first
    assert not first.allows("INVITE", None)
    control.configure(acl=(), blocked=nets("10.0.0.0/8"), trusted=())
    assert control.policy("10.0.0.1") == HostPolicy("10.0.0.1", blocked=True)


def test_new_destinations_clear_the_cache_only_when_they_change() -> None:
    control = AccessControl(destinations=["192.0.2.1"])
    assert control.policy("192.0.2.1").trusted
    assert not control.set_destinations(["192.0.2.1"])
    assert control.cached == 1
    assert control.set_destinations(["192.0.2.2"])
    assert control.cached == 0
    assert not control.policy("192.0.2.1").trusted
    assert control.policy("192.0.2.2").trusted
