"""NftBans against the real nft and kernel, each test inside a network namespace of its own.

The code under test runs in the namespace as a small driver process (``DRIVER``) that takes one
JSON command per line and answers with the pusher's state; the test checks the kernel's sets with
``nft -j`` and sends datagrams from addresses on the namespace's loopback. Nothing leaves the
namespace. Needs root and nft: a missing one fails the test with a clear message, never skips it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import select
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from siplb.io.nft import NftBans, changes_script, parse_host, setup_script, timeout_seconds
from siplb.settings import NftablesSettings

TABLE, SET4, SET6 = "siplb", "banned4", "banned6"
BANNED, OTHER, BANNED6 = "127.0.0.20", "127.0.0.21", "2001:db8::20"
_names = itertools.count()

DRIVER = """
import asyncio, json, logging, sys
from siplb.io.nft import NftBans
from siplb.settings import NftablesSettings

records = []
class Keep(logging.Handler):
    def emit(self, record):
        records.append(f"{record.levelname} {record.getMessage()}")
logging.getLogger("siplb").addHandler(Keep())
logging.getLogger("siplb").setLevel(logging.INFO)

async def main():
    options = json.loads(sys.argv[1])
    settings = NftablesSettings(enabled=True, **options.pop("settings"))
    bans = NftBans(settings, **options)
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        command, *args = json.loads(line)
        if command == "start":
            await bans.start()
        elif command == "ban":
            for host in args[0]:
                bans.ban(host, args[1])
        elif command == "unban":
            for host in args[0]:
                bans.unban(host)
        elif command == "apply":  # [host, seconds or None to unban], all before one await
            for host, seconds in args[0]:
                bans.unban(host) if seconds is None else bans.ban(host, seconds)
        elif command == "settle":  # until `args[0]` changes were pushed or refused
            deadline = loop.time() + 5
            while bans.pushed + bans.failed < args[0] and loop.time() < deadline:
                await asyncio.sleep(0.01)
        elif command == "close":
            await bans.close()
        state = {"enabled": bans.enabled, "pushed": bans.pushed, "failed": bans.failed,
                 "dropped": bans.dropped_from_queue, "pending": bans.pending, "logs": records}
        print(json.dumps(state), flush=True)

asyncio.run(main())
"""

PROBE = """
import ipaddress, json, socket, sys
receiver = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
receiver.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
receiver.bind(("::", 0))
port = receiver.getsockname()[1]
def send(source):
    family = socket.AF_INET6 if ":" in source else socket.AF_INET
    target = "::1" if ":" in source else "127.0.0.1"
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        sock.sendto(source.encode(), (target, port))
for source in sys.argv[1:]:
    send(source)
send("127.0.0.1")  # the marker, sent last: when it is in, every earlier datagram is in or dropped
receiver.settimeout(2)
arrived = []
while "127.0.0.1" not in arrived:
    arrived.append(receiver.recv(100).decode())
receiver.setblocking(False)
try:
    while True:
        arrived.append(receiver.recv(100).decode())
except BlockingIOError:
    pass
print(json.dumps(sorted(set(arrived) - {"127.0.0.1"})))
"""


def require_root_and_nft() -> None:
    if os.geteuid() != 0:
        pytest.fail("the nftables tests create network namespaces: run them as root (CI does)")
    for tool, package in {"nft": "nftables", "ip": "iproute2", "setpriv": "util-linux"}.items():
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            pytest.fail(f"`{tool}` (Debian package {package}) is missing; `make test` installs it")


class Namespace:
    """A network namespace with loopback up and the test's addresses on it."""

    def __init__(self) -> None:
        self.name = f"siplb-nft-{os.getpid()}-{next(_names)}"
        subprocess.run(["ip", "netns", "add", self.name], check=True, timeout=10)
        self.run("ip", "link", "set", "lo", "up")
        for address in (BANNED, OTHER):
            self.run("ip", "addr", "add", f"{address}/8", "dev", "lo")
        self.run("ip", "-6", "addr", "add", f"{BANNED6}/128", "dev", "lo", "nodad")

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", self.name, *argv],
            capture_output=True,
            text=True,
            timeout=20,
            check=check,
        )

    def elements(self, name: str = SET4) -> dict[str, int | None]:
        """The set's elements and their timeouts (None: no timeout)."""
        out = self.run("nft", "-j", "list", "set", "inet", TABLE, name).stdout
        found: dict[str, int | None] = {}
        for item in json.loads(out)["nftables"]:
            for element in item.get("set", {}).get("elem", []):
                if isinstance(element, dict):
                    found[element["elem"]["val"]] = element["elem"].get("timeout")
                else:
                    found[element] = None
        return found

    def arrived(self, *sources: str) -> list[str]:
        """Which of ``sources`` got a datagram through to a socket in the namespace."""
        out = self.run(sys.executable, "-c", PROBE, *sources).stdout
        arrived: list[str] = json.loads(out)
        return arrived

    def table_exists(self) -> bool:
        return self.run("nft", "list", "table", "inet", TABLE, check=False).returncode == 0

    def close(self) -> None:
        subprocess.run(["ip", "netns", "del", self.name], check=False, timeout=10)


class Driver:
    """NftBans in a process inside the namespace; ``call`` sends one command, returns the state."""

    def __init__(self, ns: Namespace, prefix: tuple[str, ...] = (), **options: Any) -> None:
        options["settings"] = {"table": TABLE, "set4": SET4, "set6": SET6} | options.get(
            "settings", {}
        )
        argv = [*prefix, sys.executable, "-c", DRIVER, json.dumps(options)]
        self.process = subprocess.Popen(
            ["ip", "netns", "exec", ns.name, *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def call(self, command: str, *args: Any) -> dict[str, Any]:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write(json.dumps([command, *args]) + "\n")
        self.process.stdin.flush()
        ready, _, _ = select.select([self.process.stdout], [], [], 10)
        assert ready, f"the driver did not answer {command!r}"
        state: dict[str, Any] = json.loads(self.process.stdout.readline())
        return state

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def ns() -> Iterator[Namespace]:
    require_root_and_nft()
    namespace = Namespace()
    try:
        yield namespace
    finally:
        namespace.close()


@pytest.fixture
def driver(ns: Namespace) -> Iterator[Callable[..., Driver]]:
    started: list[Driver] = []

    def start(**options: Any) -> Driver:
        started.append(Driver(ns, **options))
        return started[-1]

    try:
        yield start
    finally:
        for one in started:
            one.close()


def wait_for(condition: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


# --- pure helpers -----------------------------------------------------------------------------

HOSTS = [
    ("192.0.2.7", "192.0.2.7"),
    ("2001:db8::1", "2001:db8::1"),
    ("2001:DB8:0::1", "2001:db8::1"),
    ("[2001:db8::1]", "2001:db8::1"),
    ("::ffff:192.0.2.7", "192.0.2.7"),
    ("fe80::1%lo", None),
    ("example.com", None),
    ("192.0.2.7 }; flush ruleset; add element inet t s { 1.1.1.1", None),
    ("", None),
    ("192.0.2.300", None),
]


@pytest.mark.parametrize(("host", "expected"), HOSTS)
def test_only_ip_literals_are_accepted(host: str, expected: str | None) -> None:
    parsed = parse_host(host)
    assert (None if parsed is None else str(parsed)) == expected


TIMEOUTS = [(0.001, 1), (1.0, 1), (1.2, 2), (60, 60), (0, None), (-5, None)]
TIMEOUTS += [(float("nan"), None), (float("inf"), 30 * 86400), (1e12, 30 * 86400)]


@pytest.mark.parametrize(("seconds", "expected"), TIMEOUTS)
def test_timeouts_are_rounded_up_to_whole_seconds(seconds: float, expected: int | None) -> None:
    assert timeout_seconds(seconds) == expected


def test_a_ban_is_add_delete_add_and_an_unban_add_delete() -> None:
    a, b = parse_host("192.0.2.1"), parse_host("192.0.2.2")
    assert a is not None
    assert b is not None
    assert changes_script("t", "s", [(a, 60), (b, None)]).splitlines() == [
        "add element inet t s { 192.0.2.1, 192.0.2.2 }",
        "delete element inet t s { 192.0.2.1, 192.0.2.2 }",
        "add element inet t s { 192.0.2.1 timeout 60s }",
    ]
    assert changes_script("t", "s", []) == ""


def test_the_drop_rule_may_be_limited_to_ports() -> None:
    assert "ip saddr @b4 drop\n" in setup_script("t", "b4", "b6", ())
    limited = setup_script("t", "b4", "b6", (5060, 5061))
    assert "ip saddr @b4 meta l4proto { tcp, udp } th dport { 5060, 5061 } drop" in limited


# --- no nft, no permission --------------------------------------------------------------------


def test_without_nft_it_logs_once_and_stays_off(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> NftBans:
        bans = NftBans(NftablesSettings(enabled=True), nft="/nonexistent/nft")
        await bans.start()
        bans.ban("192.0.2.7", 60)
        await bans.close()
        return bans

    with caplog.at_level(logging.ERROR, logger="siplb.nft"):
        bans = asyncio.run(scenario())
    assert not bans.enabled
    assert (bans.pushed, bans.failed, bans.pending) == (0, 0, 0)
    assert len(caplog.records) == 1
    assert "/nonexistent/nft" in caplog.records[0].getMessage()


BAD_NAMES = [
    (NftablesSettings(enabled=True, table="1abc"), "1abc"),
    (NftablesSettings(enabled=True, set4="b; flush ruleset"), "b; flush ruleset"),
]


@pytest.mark.parametrize(("settings", "name"), BAD_NAMES)
def test_a_name_nft_would_not_parse_keeps_it_off(
    settings: NftablesSettings, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    bans = NftBans(settings, nft="/nonexistent/nft")
    with caplog.at_level(logging.ERROR, logger="siplb.nft"):
        asyncio.run(bans.start())
    assert not bans.enabled
    assert [r.getMessage() for r in caplog.records] == [
        f"nftables: invalid table or set name {name!r}; bans stay in siplb only"
    ]


def test_disabled_in_settings_runs_nothing() -> None:
    async def scenario() -> NftBans:
        bans = NftBans(NftablesSettings(enabled=False), nft="/nonexistent/nft")
        await bans.start()
        bans.ban("192.0.2.7", 60)
        await bans.close()
        return bans

    bans = asyncio.run(scenario())
    assert not bans.enabled
    assert bans.pending == 0


def test_without_cap_net_admin_it_logs_and_stays_off(
    ns: Namespace, driver: Callable[..., Driver]
) -> None:
    pusher = driver(prefix=("setpriv", "--bounding-set=-net_admin"))
    state = pusher.call("start")
    assert not state["enabled"]
    assert any("Operation not permitted" in line for line in state["logs"])
    assert pusher.call("ban", [BANNED], 60)["pending"] == 0
    assert not ns.table_exists()


# --- in the kernel ----------------------------------------------------------------------------


def test_a_ban_drops_the_source_until_it_expires(
    ns: Namespace, driver: Callable[..., Driver]
) -> None:
    pusher = driver()
    assert pusher.call("start")["enabled"]
    assert ns.arrived(BANNED, OTHER, BANNED6) == sorted([BANNED, OTHER, BANNED6])
    pusher.call("ban", [BANNED, BANNED6], 1.2)
    assert pusher.call("settle", 2)["pushed"] == 2
    assert ns.elements(SET4) == {BANNED: 2}
    assert ns.elements(SET6) == {BANNED6: 2}
    assert ns.arrived(BANNED, OTHER, BANNED6) == [OTHER]
    assert wait_for(lambda: not ns.elements(SET4) and not ns.elements(SET6), 4)
    assert ns.arrived(BANNED, OTHER, BANNED6) == sorted([BANNED, OTHER, BANNED6])


def test_a_new_ban_resets_the_timeout_and_unban_lifts_it(
    ns: Namespace, driver: Callable[..., Driver]
) -> None:
    pusher = driver()
    pusher.call("start")
    pusher.call("ban", [BANNED], 50)
    pusher.call("settle", 1)
    assert ns.elements() == {BANNED: 50}
    pusher.call("ban", [BANNED], 600)
    pusher.call("settle", 2)
    assert ns.elements() == {BANNED: 600}
    pusher.call("ban", [BANNED], 7)
    pusher.call("settle", 3)
    assert ns.elements() == {BANNED: 7}
    pusher.call("ban", ["::ffff:" + OTHER, "example.com", "fe80::1%lo"], 30)  # mapped: IPv4
    pusher.call("settle", 4)
    assert ns.elements() == {BANNED: 7, OTHER: 30}
    assert ns.elements(SET6) == {}
    pusher.call("unban", [BANNED, "192.0.2.99"])  # 192.0.2.99 was never banned
    state = pusher.call("settle", 6)
    assert ns.elements() == {OTHER: 30}
    assert ns.arrived(BANNED) == [BANNED]
    assert (state["pushed"], state["failed"]) == (6, 0)


def test_changes_are_batched_and_the_queue_is_bounded(
    ns: Namespace, driver: Callable[..., Driver], tmp_path: Path
) -> None:
    calls = tmp_path / "calls"
    wrapper = tmp_path / "nft"
    nft = shutil.which("nft") or "/usr/sbin/nft"
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> {calls}\nexec {nft} "$@"\n')
    wrapper.chmod(0o755)
    pusher = driver(nft=str(wrapper), max_pending=100, interval=0.2)
    pusher.call("start")
    hosts = [f"10.0.{i // 250}.{i % 250 + 1}" for i in range(150)]
    state = pusher.call("ban", [*hosts, BANNED], 60)  # no await in between: one batch
    assert state["dropped"] == 51
    state = pusher.call("settle", 100)
    assert (state["pushed"], state["failed"], state["pending"]) == (100, 0, 0)
    kept = ns.elements()
    assert len(kept) == 100
    assert BANNED in kept
    assert hosts[0] not in kept  # the oldest changes were dropped
    pusher.call("apply", [[BANNED, None], [OTHER, 60], [OTHER, None]])  # the newest one wins
    assert pusher.call("settle", 102)["pushed"] == 102
    assert BANNED not in ns.elements()
    assert OTHER not in ns.elements()
    assert calls.read_text().splitlines() == ["-f -"] * 3  # set-up, then two batches


def test_close_removes_the_table_and_its_drop_rule(
    ns: Namespace, driver: Callable[..., Driver]
) -> None:
    pusher = driver(ports=[5060])
    pusher.call("start")
    assert "dport 5060" in ns.run("nft", "list", "table", "inet", TABLE).stdout
    pusher.call("ban", [BANNED], 60)
    pusher.call("settle", 1)
    assert ns.arrived(BANNED) == [BANNED]  # the probe's port is not 5060
    state = pusher.call("close")
    assert not state["enabled"]
    assert not ns.table_exists()


def test_start_is_idempotent_over_a_table_left_behind(
    ns: Namespace, driver: Callable[..., Driver]
) -> None:
    first = driver()
    first.call("start")
    first.close()  # exits without close(): as after a crash
    second = driver()
    assert second.call("start")["enabled"]
    chain = ns.run("nft", "list", "chain", "inet", TABLE, "prerouting").stdout
    assert chain.count("drop") == 2


def test_without_create_it_needs_the_sets(ns: Namespace, driver: Callable[..., Driver]) -> None:
    pusher = driver(settings={"create": False})
    state = pusher.call("start")
    assert not state["enabled"]
    assert any(f"set inet {TABLE} {SET4}: missing" in line for line in state["logs"])

    ns.run("nft", "add", "table", "inet", TABLE)
    ns.run("nft", "add", "set", "inet", TABLE, SET4, "{ type ipv4_addr; flags timeout; }")
    ns.run("nft", "add", "set", "inet", TABLE, SET6, "{ type ipv6_addr; }")
    state = driver(settings={"create": False}).call("start")
    assert not state["enabled"]
    assert any(f"{SET6} must be `type ipv6_addr; flags timeout;`" in x for x in state["logs"])

    ns.run("nft", "delete", "set", "inet", TABLE, SET6)
    ns.run("nft", "add", "set", "inet", TABLE, SET6, "{ type ipv6_addr; flags timeout; }")
    pusher = driver(settings={"create": False})
    assert pusher.call("start")["enabled"]
    pusher.call("ban", [BANNED], 60)
    pusher.call("close")  # pushes what is pending, keeps the operator's table
    assert ns.elements() == {BANNED: 60}
