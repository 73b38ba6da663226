"""``holds_address``: whether an address is on this host now, from the kernel's own list
(rtnetlink), so that a node of a VRRP pair knows whether it holds the shared address."""

from __future__ import annotations

import ipaddress
import socket

from siplb.io.udp import holds_address, local_addresses


def test_loopback_is_held_and_a_documentation_address_is_not() -> None:
    assert holds_address("127.0.0.1")
    assert not holds_address("198.51.100.77")  # TEST-NET-2: on no host
    assert not holds_address("not an address")


def test_the_list_matches_what_the_kernel_routes_from() -> None:
    found = local_addresses()
    assert ipaddress.ip_address("127.0.0.1") in found
    # the address the kernel picks to reach loopback's neighbour is one of ours
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("127.0.0.1", 9))
        assert ipaddress.ip_address(probe.getsockname()[0]) in found
