"""The route lab's pieces: namespaces joined by a switch (``RouteLab``), BIRD 2 as the upstream
router (``Bird``), ExaBGP's config and settings for a node, and waiting with a deadline.

    with RouteLab("rt") as lab:
        lab.namespace("router"); lab.namespace("node"); lab.switch("sw")
        lab.port("sw", "router", "10.0.1.1/24")
        cut = lab.port("sw", "node", "10.0.1.2/24")   # the node's end: set it down to cut it
        bird = Bird.start(lab, "router", workdir, router_id=..., neighbors={"node1": ...})
        bird.has_route("10.99.0.1/32")

The switch is a bridge in a namespace of its own, so that cutting a node's link leaves the
router's interface up: the router learns of a dead node the way it would behind a real switch,
from the BGP hold timer, not from its own carrier.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from e2e.harness import ManagedProcess
from e2e.netns import NetLab

BIRD = "/usr/sbin/bird"
BIRDC = "/usr/sbin/birdc"
EXABGP = "/usr/sbin/exabgp"
TOOLS = {BIRD: "bird2", BIRDC: "bird2", EXABGP: "exabgp"}
HOLD_TIME = 3  # seconds, on both sides (BGP's smallest non-zero hold time, RFC 4271 4.2)
ROUTER_AS, NODE_AS = 65000, 65001

# ExaBGP 4.2 as root in a namespace: no privilege drop, no named pipes for its CLI (nothing
# here uses it), acks on the process's stdin (siplb announce reads them), logs on stdout.
EXABGP_ENV = {
    "exabgp_daemon_user": "root",
    "exabgp_daemon_drop": "false",
    "exabgp_daemon_daemonize": "false",
    "exabgp_api_cli": "false",
    "exabgp_api_ack": "true",
    "exabgp_log_destination": "stdout",
    "exabgp_log_level": "INFO",
}


def require_tools() -> None:
    for path, package in TOOLS.items():
        if not Path(path).exists():
            pytest.fail(f"{path} (Debian package {package}) is missing; `make test` installs it")


def wait_until(
    condition: Callable[[], bool], deadline: float, what: str, step: float = 0.01
) -> float:
    """Poll ``condition`` until it holds; the seconds it took. Fails after ``deadline`` s."""
    start = time.monotonic()
    while True:
        if condition():
            return time.monotonic() - start
        if time.monotonic() - start > deadline:
            pytest.fail(f"{what}: not within {deadline} s")
        time.sleep(step)


class RouteLab(NetLab):
    """``NetLab`` with a switch: a bridge in a namespace of its own."""

    def __init__(self, prefix: str) -> None:
        super().__init__(prefix)
        self._ports = 0

    def switch(self, name: str) -> None:
        self.namespace(name)
        self.run(name, "ip", "link", "add", "br0", "type", "bridge")
        self.run(name, "ip", "link", "set", "br0", "up")

    def port(self, switch: str, name: str, address: str) -> str:
        """A veth from namespace ``name`` (with ``address``) to a port of ``switch``; the name
        of the end in ``name``."""
        self._ports += 1
        end, port = f"p{self.prefix}{self._ports}n", f"p{self.prefix}{self._ports}s"
        subprocess.run(
            ["ip", "link", "add", end, "type", "veth", "peer", "name", port],
            check=True,
            capture_output=True,
            timeout=10,
        )
        subprocess.run(["ip", "link", "set", end, "netns", self.ns(name)], check=True, timeout=10)
        subprocess.run(
            ["ip", "link", "set", port, "netns", self.ns(switch)], check=True, timeout=10
        )
        self.run(switch, "ip", "link", "set", port, "master", "br0")
        self.run(switch, "ip", "link", "set", port, "up")
        self.run(name, "ip", "addr", "add", address, "dev", end)
        self.run(name, "ip", "link", "set", end, "up")
        return end

    def spawn_env(
        self, name: str, label: str, argv: list[str], env: Mapping[str, str], *, cwd: Path
    ) -> ManagedProcess:
        """``spawn`` with variables added to the environment."""
        settings = [f"{key}={value}" for key, value in env.items()]
        return self.spawn(name, label, ["env", *settings, *argv], cwd=cwd)


# ---- BIRD ------------------------------------------------------------------------------------
def bird_config(router_id: str, neighbors: Mapping[str, str]) -> str:
    """The router's BIRD 2 config: a session per node (name -> address), the nodes' host
    routes imported, ECMP into the namespace's kernel table (as examples/anycast/bird.conf)."""
    sessions = "\n".join(
        f"protocol bgp {name} from node {{ neighbor {address} as {NODE_AS}; }}"
        for name, address in neighbors.items()
    )
    return f"""\
router id {router_id};
log stderr all;
protocol device {{ }}
protocol kernel {{
    ipv4 {{ export where source = RTS_BGP; }};
    merge paths on;
}}
template bgp node {{
    local {router_id} as {ROUTER_AS};
    hold time {HOLD_TIME};
    keepalive time 1;
    connect retry time 1;
    error wait time 1, 2;
    ipv4 {{ import where net ~ [ 10.99.0.0/24{{32,32}} ]; export none; }};
}}
{sessions}
"""


@dataclass
class Bird:
    process: ManagedProcess
    socket: Path

    @classmethod
    def start(
        cls,
        lab: NetLab,
        name: str,
        workdir: Path,
        router_id: str,
        neighbors: Mapping[str, str],
        *,
        text: str | None = None,
    ) -> Bird:
        """BIRD in namespace ``name``, with ``bird_config`` (or the config ``text``)."""
        config = workdir / "bird.conf"
        config.write_text(bird_config(router_id, neighbors) if text is None else text)
        socket, pid = workdir / "bird.ctl", workdir / "bird.pid"
        argv = [BIRD, "-f", "-c", str(config), "-s", str(socket), "-P", str(pid)]
        bird = cls(lab.spawn(name, "bird", argv, cwd=workdir), socket)
        wait_until(socket.exists, 5.0, "BIRD's control socket")
        return bird

    def show(self, *args: str) -> str:
        """``birdc show ...``: the control socket is a file, so no namespace is needed."""
        done = subprocess.run(
            [BIRDC, "-s", str(self.socket), "show", *args],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        return done.stdout

    def has_route(self, prefix: str) -> bool:
        return f"{prefix} " in self.show("route", "for", prefix)


# ---- ExaBGP -----------------------------------------------------------------------------------
def exabgp_config(node_config: Path, router: str, local: str) -> str:
    """A node's ExaBGP config (as examples/anycast/exabgp.conf), running ``siplb announce``
    with this interpreter."""
    return f"""\
process siplb {{
    run {sys.executable} -m siplb announce --config {node_config};
    encoder text;
}}
neighbor {router} {{
    router-id {local};
    local-address {local};
    local-as {NODE_AS};
    peer-as {ROUTER_AS};
    hold-time {HOLD_TIME};
    family {{ ipv4 unicast; }}
    api {{ processes [ siplb ]; }}
}}
"""
