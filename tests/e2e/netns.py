"""Network namespaces for the NAT and multi-homing tests: created by the test, removed in its
``finally`` (``NetLab.close``), never touching the host's own interfaces.

    with NetLab("nat") as lab:                 # namespaces are named <prefix><pid>-<name>
        lab.namespace("phone")
        lab.link(("phone", "10.10.1.2/24"), ("router", "10.10.1.1/24"))
        lab.route("phone", "default", via="10.10.1.1")
        lab.run("router", "iptables", "-t", "nat", ...)
        lab.spawn("phone", name, argv, cwd=...) -> ManagedProcess   (stopped by close())
        lab.udp_request("kam", data, ("10.20.0.10", 5060)) -> (reply, source) | None

Needs root (network namespaces, veth pairs, iptables): ``require_root()`` fails the test with a
clear message otherwise, never skips it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import pytest

from .harness import ManagedProcess, StopStep

STOP = (StopStep(15, 5.0), StopStep(9, 2.0))
TOOLS = {"ip": "iproute2", "iptables": "iptables"}

_UDP_REQUEST = """
import json, socket, sys
data, host, port, wait = bytes.fromhex(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
    sock.bind(("0.0.0.0", 0))
    sock.settimeout(wait)
    sock.sendto(data, (host, port))
    try:
        reply, source = sock.recvfrom(65535)
    except (TimeoutError, ConnectionRefusedError):
        print("null")
    else:
        print(json.dumps([reply.hex(), source[0], source[1]]))
"""


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.fail(
            "the NAT and multi-homing tests create network namespaces, veth pairs and iptables "
            "rules: run them as root (CI does)",
            pytrace=False,
        )
    for tool, package in TOOLS.items():
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            pytest.fail(f"`{tool}` (Debian package {package}) is missing; `make test` installs it")


class NetLab:
    def __init__(self, prefix: str) -> None:
        self.prefix = f"{prefix}{os.getpid() % 100000}"
        self.namespaces: list[str] = []
        self.processes: list[ManagedProcess] = []
        self._links = 0

    def __enter__(self) -> NetLab:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def ns(self, name: str) -> str:
        return f"{self.prefix}-{name}"

    def _ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", *args], capture_output=True, text=True, timeout=10, check=check
        )

    def namespace(self, name: str) -> None:
        ns = self.ns(name)
        self._ip("netns", "add", ns)
        self.namespaces.append(ns)
        self.run(name, "ip", "link", "set", "lo", "up")

    def link(self, a: tuple[str, str], b: tuple[str, str]) -> tuple[str, str]:
        """A veth pair between namespaces a[0] and b[0] with addresses a[1], b[1]; the names."""
        self._links += 1
        ends = (f"v{self.prefix}{self._links}a", f"v{self.prefix}{self._links}b")
        self._ip("link", "add", ends[0], "type", "veth", "peer", "name", ends[1])
        for end, (name, address) in zip(ends, (a, b), strict=True):
            self._ip("link", "set", end, "netns", self.ns(name))
            self.run(name, "ip", "addr", "add", address, "dev", end)
            self.run(name, "ip", "link", "set", end, "up")
        return ends

    def route(self, name: str, prefix: str, *, via: str) -> None:
        self.run(name, "ip", "route", "add", prefix, "via", via)

    def run(self, name: str, *argv: str) -> str:
        done = subprocess.run(
            ["ip", "netns", "exec", self.ns(name), *argv],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} in {name}: {done.stderr.strip()}")
        return done.stdout

    def spawn(self, name: str, label: str, argv: Sequence[str], *, cwd: Path) -> ManagedProcess:
        process = ManagedProcess(label, ["ip", "netns", "exec", self.ns(name), *argv], cwd=cwd)
        self.processes.append(process)
        return process

    def udp_request(
        self, name: str, data: bytes, target: tuple[str, int], *, wait: float = 1.0
    ) -> tuple[bytes, str] | None:
        """Send one datagram from namespace ``name``; the first reply and its source address."""
        out = self.run(
            name,
            sys.executable,
            "-c",
            _UDP_REQUEST,
            data.hex(),
            target[0],
            str(target[1]),
            str(wait),
        )
        found = json.loads(out)
        return None if found is None else (bytes.fromhex(found[0]), found[1])

    def close(self) -> None:
        """Stop every process started here, then remove the namespaces (and so their veths)."""
        for process in self.processes:
            process.stop(STOP)
        for ns in reversed(self.namespaces):
            self._ip("netns", "del", ns, check=False)
        self.namespaces.clear()
