"""Routes announced by health, for real: BIRD 2 as the upstream router in one namespace, a node
in another running ``siplb`` (with a destination that answers its probes) and ExaBGP, which runs
``siplb announce``; a switch between them. Each scenario is timed from its cause to the route
leaving (or reaching) BIRD's table; ``pytest -s`` prints the figures.

- the route appears once the node is healthy;
- ``siplb node drain`` withdraws it, ``siplb node resume`` brings it back;
- SIGTERM withdraws it before ``siplb`` exits, and ``siplb`` still answers meanwhile
  (``[health] withdraw_delay``);
- ``siplb`` hung (SIGSTOP) or killed (SIGKILL): withdrawn in under a second;
- the node's link cut (the host dead, as the router sees it): dropped by the BGP hold timer.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e.harness import ManagedProcess, options_request
from e2e.netns import require_root

from .routing import (
    EXABGP,
    EXABGP_ENV,
    HOLD_TIME,
    Bird,
    RouteLab,
    exabgp_config,
    require_tools,
    wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

HERE = Path(__file__).resolve().parent
ROUTER, NODE = "10.0.1.1", "10.0.1.2"
PREFIX = "10.99.0.1/32"
WITHDRAW_WITHIN = 1.0  # seconds: siplb dead or hung -> route gone (the promise)
HOLD_MARGIN = 1.0  # seconds past the hold time for the router to act on its expiry


def node_config() -> str:
    return f"""\
[[listen]]
address = "{NODE}:5060"

[[sets]]
name = "pbx"
destinations = [{{ uri = "sip:{NODE}:5070" }}]

[health]
interval = 0.5
timeout = 0.25
withdraw_delay = 1.0

[proxy]
grace_period = 0.2

[admin]
listen = "127.0.0.1:8080"
token = "route-lab-token"

[announce]
prefixes = ["{PREFIX}"]
interval = 0.1
timeout = 0.3
"""


class Node:
    """The node namespace's processes and commands."""

    def __init__(self, lab: RouteLab, workdir: Path) -> None:
        self.lab = lab
        self.workdir = workdir
        self.config = workdir / "node.toml"
        self.config.write_text(node_config())
        self.siplb: ManagedProcess | None = None
        self.runs = 0

    def siplb_command(self, *args: str) -> int:
        argv = ["ip", "netns", "exec", self.lab.ns("node"), sys.executable, "-m", "siplb"]
        done = subprocess.run(
            [*argv, *args, "-c", str(self.config)], capture_output=True, text=True, timeout=10
        )
        return done.returncode

    def start_siplb(self) -> None:
        self.runs += 1
        argv = [sys.executable, "-m", "siplb", "run", "-c", str(self.config)]
        self.siplb = self.lab.spawn("node", f"siplb{self.runs}", argv, cwd=self.workdir)
        wait_until(lambda: self.siplb_command("health") == 0, 10.0, "siplb healthy", step=0.05)


@pytest.fixture
def lab() -> Iterator[RouteLab]:
    require_root()
    require_tools()
    with RouteLab("rt") as lab:
        yield lab


def test_routes_follow_the_node_health(lab: RouteLab, tmp_path: Path) -> None:
    for name in ("router", "node"):
        lab.namespace(name)
    lab.switch("sw")
    lab.port("sw", "router", f"{ROUTER}/24")
    node_link = lab.port("sw", "node", f"{NODE}/24")
    lab.run("node", "ip", "addr", "add", PREFIX, "dev", "lo")  # the anycast address

    bird = Bird.start(lab, "router", tmp_path, ROUTER, {"node1": NODE})
    lab.spawn(
        "node",
        "responder",
        [sys.executable, str(HERE / "responder.py"), NODE, "5070"],
        cwd=tmp_path,
    )
    node = Node(lab, tmp_path)
    node.start_siplb()
    exabgp_conf = tmp_path / "exabgp.conf"
    exabgp_conf.write_text(exabgp_config(node.config, ROUTER, NODE))
    lab.spawn_env("node", "exabgp", [EXABGP, str(exabgp_conf)], EXABGP_ENV, cwd=tmp_path)

    def present() -> bool:
        return bird.has_route(PREFIX)

    def absent() -> bool:
        return not bird.has_route(PREFIX)

    took = wait_until(present, 20.0, "route announced")
    print(f"\nroute lab: route in BIRD {took:.2f} s after ExaBGP started (BGP session included)")

    # (c) an operator's drain, then resume
    start = time.monotonic()
    assert node.siplb_command("node", "drain") == 0
    wait_until(absent, 5.0, "route withdrawn after drain")
    drained = time.monotonic() - start
    assert node.siplb_command("health") == 1
    start = time.monotonic()
    assert node.siplb_command("node", "resume") == 0
    wait_until(present, 5.0, "route back after resume")
    resumed = time.monotonic() - start
    print(
        f"route lab: drain -> withdrawn {drained * 1000:.0f} ms; resume -> back {resumed * 1000:.0f} ms"
    )

    # (d) SIGTERM: withdrawn while siplb still serves, before it exits
    assert node.siplb is not None
    start = time.monotonic()
    node.siplb.signal(signal.SIGTERM)
    gone = wait_until(absent, 5.0, "route withdrawn after SIGTERM")
    assert node.siplb.poll() is None, "siplb exited before its route was withdrawn"
    ping = options_request((NODE, 5060), (ROUTER, 5099), call_id="sigterm-ping", branch="sigterm")
    answer = lab.udp_request("router", ping, (NODE, 5060), wait=0.5)
    assert answer is not None, "siplb did not answer during withdraw_delay"
    assert answer[0].startswith(b"SIP/2.0 200")
    assert node.siplb.poll() is None, "siplb exited within withdraw_delay"
    exited = wait_until(
        lambda: node.siplb is not None and node.siplb.poll() is not None, 10.0, "siplb exits"
    )
    assert node.siplb.returncode == 0
    print(
        f"route lab: SIGTERM -> withdrawn {gone * 1000:.0f} ms, siplb exited "
        f"{(gone + exited) * 1000:.0f} ms (withdraw_delay 1.0 s, then the grace period)"
    )
    node.start_siplb()
    wait_until(present, 5.0, "route back after restart")

    # siplb hung (SIGSTOP): its health checks time out, the route must go within a second
    start = time.monotonic()
    node.siplb.signal(signal.SIGSTOP)
    hung = wait_until(absent, 5.0, "route withdrawn after SIGSTOP")
    node.siplb.signal(signal.SIGCONT)
    print(f"route lab: siplb hung (SIGSTOP) -> withdrawn from BIRD in {hung * 1000:.0f} ms")
    assert hung < WITHDRAW_WITHIN
    wait_until(present, 5.0, "route back after SIGCONT")

    # (b) siplb killed outright: the route must go within a second
    start = time.monotonic()
    node.siplb.signal(signal.SIGKILL)
    killed = wait_until(absent, 5.0, "route withdrawn after SIGKILL")
    print(f"route lab: siplb SIGKILL -> withdrawn from BIRD in {killed * 1000:.0f} ms")
    assert killed < WITHDRAW_WITHIN
    node.start_siplb()
    wait_until(present, 5.0, "route back after restart")

    # (e) the node's link cut: the router hears nothing more; its hold timer ends the session
    start = time.monotonic()
    lab.run("node", "ip", "link", "set", node_link, "down")
    dead = wait_until(absent, HOLD_TIME + 5.0, "route dropped after the link cut")
    print(f"route lab: link cut -> route dropped by BIRD in {dead:.2f} s (hold time {HOLD_TIME} s)")
    assert dead < HOLD_TIME + HOLD_MARGIN
