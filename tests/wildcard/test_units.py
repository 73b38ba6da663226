"""The pure parts of wildcard listeners and ICMP failover: the error-queue and ``IP_PKTINFO``
messages (``siplb.io.udp``), which listeners a wildcard becomes (``siplb.proxy.listeners``), the
config's refusals; and, on loopback, a wildcard balancer answering from each address and a dead
destination failed at once by its port unreachable."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct
from pathlib import Path
from typing import Any

import pytest

from siplb.app import Balancer
from siplb.config import ConfigError, load_config, parse_config
from siplb.io.udp import (
    IP_PKTINFO,
    IP_RECVERR,
    IPV6_PKTINFO,
    IPV6_RECVERR,
    Unreachable,
    arrival,
    enable_errors,
    interface_addresses,
    read_errors,
    source_pktinfo,
    unreachable,
)
from siplb.proxy.listeners import (
    Listener,
    LocalNames,
    expand_wildcard,
    same_interface,
    serves,
    wildcard_addresses,
)
from siplb.sip import parse_uri

IP, IPV6 = socket.IPPROTO_IP, socket.IPPROTO_IPV6


def extended_err(origin: int, icmp_type: int, code: int, offender: bytes) -> bytes:
    """A ``sock_extended_err`` (ECONNREFUSED) followed by its offender's sockaddr."""
    return struct.pack("=IBBBBII", 111, origin, icmp_type, code, 0, 0, 0) + offender


def sockaddr_in(host: str) -> bytes:
    return struct.pack("=HH", socket.AF_INET, 0) + socket.inet_aton(host) + bytes(8)


def sockaddr_in6(host: str) -> bytes:
    return (
        struct.pack("=HHI", socket.AF_INET6, 0, 0)
        + socket.inet_pton(socket.AF_INET6, host)
        + bytes(4)
    )


ERROR_CASES = [
    ("v4 port unreachable", [(IP, IP_RECVERR, extended_err(2, 3, 3, sockaddr_in("10.0.0.5")))],
     ("10.0.0.5", 5060), Unreachable("10.0.0.5", 5060)),
    ("v6 port unreachable", [(IPV6, IPV6_RECVERR, extended_err(3, 1, 4, sockaddr_in6("2001:db8::5")))],
     ("2001:db8::5", 5070, 0, 0), Unreachable("2001:db8::5", 5070)),
    ("v4 host unreachable (a router's word)", [(IP, IP_RECVERR, extended_err(2, 3, 1, sockaddr_in("10.0.0.1")))],
     ("10.0.0.5", 5060), None),
    ("v6 admin prohibited", [(IPV6, IPV6_RECVERR, extended_err(3, 1, 1, sockaddr_in6("2001:db8::1")))],
     ("2001:db8::5", 5060, 0, 0), None),
    ("port unreachable from another host", [(IP, IP_RECVERR, extended_err(2, 3, 3, sockaddr_in("10.0.0.9")))],
     ("10.0.0.5", 5060), None),
    ("no offender address", [(IP, IP_RECVERR, extended_err(2, 3, 3, b""))],
     ("10.0.0.5", 5060), Unreachable("10.0.0.5", 5060)),
    ("a local error (origin 1)", [(IP, IP_RECVERR, extended_err(1, 0, 0, b""))],
     ("10.0.0.5", 5060), None),
    ("truncated", [(IP, IP_RECVERR, b"\x6f\x00")], ("10.0.0.5", 5060), None),
    ("no error at all", [(IP, IP_PKTINFO, bytes(12))], ("10.0.0.5", 5060), None),
]  # fmt: skip


@pytest.mark.parametrize(("ancdata", "name", "expected"), [c[1:] for c in ERROR_CASES],
                         ids=[c[0] for c in ERROR_CASES])  # fmt: skip
def test_error_queue_messages(ancdata: Any, name: Any, expected: Unreachable | None) -> None:
    assert unreachable(ancdata, name) == expected


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_a_real_error_queue_message(host: str) -> None:
    """The kernel's own bytes: a datagram to a closed port on loopback, read back."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        enable_errors(sock)
        sock.bind((host, 0))
        with socket.socket(family, socket.SOCK_DGRAM) as closed:
            closed.bind((host, 0))
            port = closed.getsockname()[1]
        sock.sendto(b"x", (host, port))
        sock.settimeout(2.0)
        with pytest.raises(ConnectionRefusedError):
            sock.recv(10)  # the queued error, reported once
        sock.setblocking(False)
        queued = read_errors(sock)
    assert queued.read == 1
    assert queued.unreachable == [Unreachable(host, port)]


ARRIVALS = [
    ([(IP, IP_PKTINFO, struct.pack("=I4s4s", 2, socket.inet_aton("10.0.0.1"),
                                   socket.inet_aton("10.0.0.3")))], "10.0.0.3"),
    ([(IPV6, IPV6_PKTINFO, socket.inet_pton(socket.AF_INET6, "fd00::3") + b"\2\0\0\0")], "fd00::3"),
    ([(IP, IP_RECVERR, bytes(16))], None),
    ([], None),
]  # fmt: skip


@pytest.mark.parametrize(("ancdata", "expected"), ARRIVALS)
def test_arrival_address(ancdata: Any, expected: str | None) -> None:
    assert arrival(ancdata) == expected


@pytest.mark.parametrize("host", ["10.0.0.3", "fd00::3"])
def test_source_pktinfo_names_the_address(host: str) -> None:
    [(level, kind, data)] = source_pktinfo(host)
    if ":" in host:
        assert (level, kind) == (IPV6, IPV6_PKTINFO)
        assert arrival([(level, kind, data)]) == host
    else:  # the source goes in ipi_spec_dst (the middle field)
        assert (level, kind) == (IP, IP_PKTINFO)
        assert socket.inet_ntoa(data[4:8]) == host


# ---- which listeners a wildcard becomes ------------------------------------------------------

HOST = [
    (1, "127.0.0.1"),
    (1, "::1"),
    (2, "10.0.0.1"),
    (2, "10.0.0.2"),
    (2, "fe80::1"),
    (2, "2001:db8::1"),
    (3, "192.0.2.7"),
]


@pytest.mark.parametrize(
    ("wildcard", "expected"),
    [
        ("0.0.0.0", ["10.0.0.1", "10.0.0.2", "192.0.2.7", "127.0.0.1"]),
        ("::", ["2001:db8::1", "::1"]),  # no link-local: a SIP URI has no zone
    ],
)
def test_wildcard_addresses_loopback_last(wildcard: str, expected: list[str]) -> None:
    assert wildcard_addresses(wildcard, HOST) == expected


@pytest.mark.parametrize(
    ("wildcard", "address", "expected"),
    [
        ("0.0.0.0", "10.0.0.9", True),
        ("0.0.0.0", "224.0.0.1", False),
        ("0.0.0.0", "::1", False),
        ("::", "fe80::9", False),
        ("::", "ff02::1", False),
        ("::", "fd00::9", True),
        ("::", "nonsense", False),
    ],
)
def test_which_addresses_a_wildcard_serves(wildcard: str, address: str, expected: bool) -> None:
    assert serves(wildcard, address) is expected


def test_expand_wildcard_keeps_the_index_and_advertise() -> None:
    wildcard = Listener(0, "udp", "0.0.0.0", 5060, "sip.example.com", None)
    first, second = expand_wildcard(wildcard, ["10.0.0.1", "10.0.0.2"], 3)
    assert (first.index, first.host, second.index, second.host) == (0, "10.0.0.1", 3, "10.0.0.2")
    assert first.record_route == second.record_route == b"<sip:sip.example.com:5060;lr>"
    plain = expand_wildcard(Listener(1, "udp", "0.0.0.0", 5060), ["10.0.0.1", "10.0.0.2"], 3)
    assert [lst.via_prefix for lst in plain] == [
        b"SIP/2.0/UDP 10.0.0.1:5060",
        b"SIP/2.0/UDP 10.0.0.2:5060",
    ]
    with pytest.raises(ValueError, match=r"no 0\.0\.0\.0 address"):
        expand_wildcard(wildcard, [], 3)


def test_local_names_learn_a_new_address() -> None:
    names = LocalNames([Listener(0, "udp", "10.0.0.1", 5060)])
    uri = parse_uri(b"sip:10.0.0.9:5060;lr")
    assert names.listener_for(uri) is None
    names.add(Listener(1, "udp", "10.0.0.9", 5060))
    found = names.listener_for(uri)
    assert found is not None
    assert found.index == 1


def test_same_interface_keeps_the_arrival_address_only_on_one_interface() -> None:
    one = [(1, "127.0.0.1"), (2, "10.0.0.1"), (2, "10.0.0.2")]
    assert same_interface(one, 4) == {"127.0.0.1", "10.0.0.1", "10.0.0.2"}
    assert same_interface(HOST, 4) == frozenset()  # interfaces 2 and 3: the route decides
    assert same_interface(HOST, 6) == {"::1", "fe80::1", "2001:db8::1"}


# ---- the config --------------------------------------------------------------------------------

SET = '[[sets]]\nname = "pbx"\ndestinations = [{ uri = "sip:127.0.0.1:5070" }]\n'


def listen(address: str, transport: str = "udp", extra: str = "") -> str:
    return f'[[listen]]\ntransport = "{transport}"\naddress = "{address}"\n{extra}'


def problems(text: str) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    return [(problem.path, problem.message) for problem in info.value.problems]


def test_wildcards_load() -> None:
    config = parse_config(listen("0.0.0.0:5060") + listen("[::]:5060") + SET)
    assert [spec.host for spec in config.listeners] == ["0.0.0.0", "::"]


CONFIG_CASES = [
    ("tcp", listen("0.0.0.0:5060", "tcp"), [("listen[0].address", "is for udp listeners")]),
    ("tls", listen("[::]:5061", "tls", 'cert = "c.pem"\nkey = "k.pem"\n'),
     [("listen[0].address", "is for udp listeners")]),
    ("workers", listen("0.0.0.0:5060") + "[proxy]\nworkers = 4\n",
     [("listen[0].address", "needs [proxy] workers = 1")]),
    ("port taken", listen("0.0.0.0:5060") + listen("10.0.0.1:5060"),
     [("listen[1].address", "port 5060 is taken on every address by listen[0]")]),
]  # fmt: skip


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in CONFIG_CASES],
                         ids=[c[0] for c in CONFIG_CASES])  # fmt: skip
def test_wildcard_config_problems(text: str, expected: list[tuple[str, str]]) -> None:
    found = [item for item in problems(text + SET) if not item[0].endswith(("cert", "key"))]
    assert [path for path, _ in found] == [path for path, _ in expected], found
    for (_, message), (_, text_part) in zip(found, expected, strict=True):
        assert text_part in message


def test_other_ports_and_families_are_free() -> None:
    parse_config(listen("0.0.0.0:5060") + listen("10.0.0.1:5070") + listen("[::1]:5060") + SET)


# ---- on loopback: a wildcard balancer, and a port unreachable --------------------------------


def options(host: str, branch: str, me: tuple[str, int], port: int = 5060) -> bytes:
    return (
        f"OPTIONS sip:{host}:{port} SIP/2.0\r\nVia: SIP/2.0/UDP {me[0]}:{me[1]};branch=z9hG4bK{branch}\r\n"
        f"From: <sip:t@{me[0]}>;tag=1\r\nTo: <sip:{host}>\r\nCall-ID: {branch}\r\n"
        "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()


@pytest.fixture
def dead_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed: a datagram to it gets a port unreachable


async def wildcard_run(tmp_path: Path, dead_port: int) -> dict[str, Any]:
    path = tmp_path / "siplb.toml"
    path.write_text(
        listen("0.0.0.0:0")
        + f'[[sets]]\nname = "pbx"\ndestinations = [{{ uri = "sip:127.0.0.1:{dead_port}" }}]\n'
        + '[health]\ninterval = 10.0\ntimeout = 5.0\n[admin]\nlisten = "127.0.0.1:0"\n'
    )
    balancer = Balancer(load_config(path))
    await balancer.start()
    loop = asyncio.get_running_loop()
    port = balancer.listeners[0].port
    seen: dict[str, Any] = {}
    try:
        for host in ("127.0.0.1", "127.0.0.2", "127.0.0.3"):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.bind(("127.0.0.1", 0))
                sock.settimeout(2.0)
                sock.sendto(options(host, host, sock.getsockname(), port), (host, port))
                reply, source = await loop.run_in_executor(None, sock.recvfrom, 65535)
                seen[host] = (reply.split(b"\r\n")[0], source[0])
        assert balancer.proxy is not None
        started = loop.time()
        while loop.time() - started < 3.0:  # the first probe's port unreachable, before 5 s
            if balancer.proxy.stats["icmp_port_unreachable"]:
                break
            await asyncio.sleep(0.01)
        seen["icmp"] = balancer.proxy.stats["icmp_port_unreachable"]
        seen["probe"] = balancer.proxy.stats["probes_failed"]
        seen["listeners"] = [(lst.index, lst.host) for lst in balancer.listeners]
    finally:
        await balancer.stop(grace=0)
    return seen


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_wildcard_answers_from_each_address_and_hears_port_unreachables(
    loop: str, tmp_path: Path, dead_port: int
) -> None:
    """uvloop too: its readers stop on the first POLLERR (hence ``UdpReader``'s epoll)."""
    if loop == "uvloop":
        import uvloop

        seen = uvloop.run(wildcard_run(tmp_path, dead_port))
    else:
        seen = asyncio.run(wildcard_run(tmp_path, dead_port))
    for host in ("127.0.0.1", "127.0.0.2", "127.0.0.3"):  # 127.0.0.2, .3: found on arrival
        assert seen[host] == (b"SIP/2.0 200 OK", host), seen
    assert {"127.0.0.2", "127.0.0.3"} <= {host for _, host in seen["listeners"]}, seen
    assert seen["icmp"] >= 1, seen  # the probe's port unreachable, long before its timeout
    assert seen["probe"] >= 1, seen


def test_interface_addresses_name_their_interface() -> None:
    found = interface_addresses()
    assert (socket.if_nametoindex("lo"), ipaddress.ip_address("127.0.0.1")) in found
    assert wildcard_addresses("0.0.0.0", [(i, str(ip)) for i, ip in found])[-1] == "127.0.0.1"
