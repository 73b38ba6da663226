"""The anycast lab: three siplb nodes sharing one address behind a router that sprays packets.

    client 10.1.0.2 ──┐                      ┌── n1 10.3.1.2 (lo: 10.99.0.1)
                      ├── router ────────────┼── n2 10.3.2.2 (lo: 10.99.0.1)
    backend 10.2.0.2 ─┘  (BIRD, nftables)    └── n3 10.3.3.2 (lo: 10.99.0.1)

The backend namespace runs the PBXs (SIPp callees on 10.2.0.2:5070 and :5071) and Redis
(10.2.0.2:6379); the client namespace runs the SIPp caller. Every node has the anycast address
on its loopback and runs ``siplb`` with an anycast listener on it, a unicast listener on its
own address (probes), and its channel on its own address; with ``bgp=True`` each node also runs
ExaBGP with ``siplb announce`` and the router runs BIRD, whose routes decide where packets go.

Per-packet spraying (what OpenSIPS's users tested with): in the router an nftables rule marks
each packet to the anycast address with ``numgen inc mod 3`` (mark 1..3), and ``ip rule``
sends mark N through table 100+N, which holds the route to node N while node N announces it;
a mark whose table has no route falls through to the main table (ECMP over the nodes still
announced). So consecutive packets of one call (INVITE, ACK, BYE, the PBX's 180 and 200) land
on different nodes. Traffic stays inside the namespaces; ``close()`` removes them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from e2e.cluster import wait_for as wait_until
from e2e.harness import ManagedProcess
from e2e.netns import require_root

from .routing import (
    EXABGP,
    EXABGP_ENV,
    HOLD_TIME,
    NODE_AS,
    ROUTER_AS,
    Bird,
    RouteLab,
    exabgp_config,
    require_tools,
)

ANYCAST = "10.99.0.1"
SIP_PORT = 5060
CLIENT = "10.1.0.2"
BACKEND = "10.2.0.2"
REDIS_PORT = 6379
PBX_PORTS = (5070, 5071)
CHANNEL_PORT = 7000
ADMIN = "127.0.0.1:8080"
TOKEN = "anycast-lab-admin-token"
SECRET = "anycast-lab-cluster-secret-0123456789abcdef"
SCENARIOS = Path(__file__).parent / "scenarios"

_API = """
import json, sys, urllib.request, urllib.error
method, url, token, body = sys.argv[1:5]
request = urllib.request.Request(url, method=method, data=body.encode() if body else None,
    headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
try:
    with urllib.request.urlopen(request, timeout=3) as reply:
        print(json.dumps([reply.status, json.loads(reply.read() or b"null")]))
except urllib.error.HTTPError as exc:
    print(json.dumps([exc.code, json.loads(exc.read() or b"null")]))
"""


def node_address(index: int) -> str:
    return f"10.3.{index}.2"


def router_address(index: int) -> str:
    return f"10.3.{index}.1"


class AnycastLab:
    def __init__(self, workdir: Path, *, nodes: int = 3, bgp: bool = False) -> None:
        require_root()
        if bgp:
            require_tools()
        for tool in ("nft", "redis-server", "sipp"):
            if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
                raise AssertionError(f"`{tool}` is missing; `make test` installs it")
        self.workdir = workdir
        self.count = nodes
        self.net = RouteLab("ac")
        self.bgp = bgp
        self.bird: Bird | None = None
        self.exabgp: dict[int, ManagedProcess] = {}
        self.nodes: dict[int, ManagedProcess] = {}
        self.configs: dict[int, Path] = {}
        self.router_ifaces: dict[int, str] = {}
        self.node_ifaces: dict[int, str] = {}
        self.announced: set[int] = set()  # static routes: the nodes the router sends to

    # ---- the network --------------------------------------------------------------------------
    def build(self) -> None:
        net = self.net
        for name in ("router", "client", "backend", *(f"n{i}" for i in self.indexes)):
            net.namespace(name)
        net.link(("client", f"{CLIENT}/24"), ("router", "10.1.0.1/24"))
        net.link(("backend", f"{BACKEND}/24"), ("router", "10.2.0.1/24"))
        net.route("client", "default", via="10.1.0.1")
        net.route("backend", "default", via="10.2.0.1")
        for i in self.indexes:
            node_end, router_end = net.link(
                (f"n{i}", f"{node_address(i)}/24"), ("router", f"{router_address(i)}/24")
            )
            self.node_ifaces[i], self.router_ifaces[i] = node_end, router_end
            net.route(f"n{i}", "default", via=router_address(i))
            net.run(f"n{i}", "ip", "addr", "add", f"{ANYCAST}/32", "dev", "lo")
        for key in ("net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0"):
            net.run("router", "sysctl", "-qw", key)
        net.run("router", "sysctl", "-qw", "net.ipv4.conf.default.rp_filter=0")
        self._spray()
        if self.bgp:
            birddir = self.workdir / "bird"
            birddir.mkdir(exist_ok=True)
            neighbors = {f"n{i}": node_address(i) for i in self.indexes}
            self.bird = Bird.start(
                net, "router", birddir, router_address(1), neighbors, text=self._bird_config()
            )

    def _bird_config(self) -> str:
        """BIRD as in examples/anycast/bird.conf (ECMP in the main table), plus one table per
        node exported to kernel table 100+N for the per-packet spraying."""
        parts = [
            f"router id {router_address(1)};",
            "log stderr all;",
            "protocol device { }",
            "protocol kernel { ipv4 { export where source = RTS_BGP; }; merge paths on; }",
        ]
        for i in self.indexes:
            parts += [
                f"ipv4 table t{i};",
                f"protocol kernel k{i} {{ kernel table {100 + i}; "
                f"ipv4 {{ table t{i}; export where source = RTS_BGP; }}; }}",
                f"protocol bgp n{i} {{ local {router_address(i)} as {ROUTER_AS}; "
                f"neighbor {node_address(i)} as {NODE_AS}; hold time {HOLD_TIME}; "
                "keepalive time 1; connect retry time 1; error wait time 1, 2; "
                f"ipv4 {{ table t{i}; import where net ~ [ 10.99.0.0/24{{32,32}} ]; "
                "export none; }; }",
                f"protocol pipe p{i} {{ table master4; peer table t{i}; import all; export none; }}",
            ]
        return "\n".join(parts) + "\n"

    def routed(self, index: int) -> bool:
        """The router has node ``index``'s announcement of the anycast address."""
        assert self.bird is not None
        return f"{ANYCAST}/32 " in self.bird.show("route", "table", f"t{index}", "for", ANYCAST)

    @property
    def indexes(self) -> range:
        return range(1, self.count + 1)

    def _spray(self) -> None:
        rules = (
            "table ip spray {\n"
            "  chain pre {\n"
            "    type filter hook prerouting priority mangle; policy accept;\n"
            f"    ip daddr {ANYCAST} meta mark set numgen inc mod {self.count} offset 1\n"
            "  }\n"
            "}\n"
        )
        path = self.workdir / "spray.nft"
        path.write_text(rules)
        self.net.run("router", "nft", "-f", str(path))
        for i in self.indexes:
            self.net.run("router", "ip", "rule", "add", "fwmark", str(i), "lookup", str(100 + i))

    def static_routes(self, nodes: list[int] | None = None) -> None:
        """Routes without BGP: each node's table, and ECMP over them in the main table."""
        for i in self.indexes if nodes is None else nodes:
            self.announce_static(i)

    def announce_static(self, index: int) -> None:
        """What an announcement does to the router's tables, without BGP."""
        self.net.run(
            "router", "ip", "route", "replace", f"{ANYCAST}/32", "via", node_address(index),
            "table", str(100 + index),
        )  # fmt: skip
        self.announced.add(index)
        self._main_route()

    def withdraw_static(self, index: int) -> None:
        """What a withdrawal does to the router's tables, without BGP."""
        self.net.run("router", "ip", "route", "del", f"{ANYCAST}/32", "table", str(100 + index))
        self.announced.discard(index)
        self._main_route()

    def _main_route(self) -> None:
        hops: list[str] = []
        for i in sorted(self.announced):
            hops += ["nexthop", "via", node_address(i)]
        if hops:
            self.net.run("router", "ip", "route", "replace", f"{ANYCAST}/32", *hops)

    def spray_counts(self) -> str:
        return self.net.run("router", "nft", "list", "table", "ip", "spray")

    # ---- Redis and the nodes --------------------------------------------------------------------
    def start_redis(self) -> None:
        argv = [
            "redis-server", "--bind", BACKEND, "--port", str(REDIS_PORT), "--save", "",
            "--appendonly", "no", "--protected-mode", "no",
        ]  # fmt: skip
        process = self.net.spawn("backend", "redis", argv, cwd=self.workdir)
        wait_until(
            "redis listening",
            lambda: process.poll() is None and self._listening("backend", REDIS_PORT, "t"),
            timeout=10.0,
        )

    def _listening(self, name: str, port: int, kind: str) -> bool:
        listing = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                self.net.ns(name),
                "ss",
                "-H",
                f"-l{kind}n",
                f"sport = :{port}",
            ],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        return bool(listing.stdout.strip())

    def node_config(self, index: int, *, extra: str = "") -> Path:
        dests = ",\n".join(f'  {{ uri = "sip:{BACKEND}:{port}" }}' for port in PBX_PORTS)
        text = f"""[[listen]]
transport = "udp"
address = "{ANYCAST}:{SIP_PORT}"
anycast = true

[[listen]]
transport = "udp"
address = "{node_address(index)}:{SIP_PORT}"

[[sets]]
name = "pbx"
algorithm = "round-robin"
destinations = [
{dests}
]

[health]
interval = 0.5
timeout = 0.4
down_after = 2
up_after = 1

[log]
format = "json"
level = "info"

[admin]
listen = "{ADMIN}"
token = "{TOKEN}"

[cluster]
node_id = "n{index}"
redis = "redis://{BACKEND}:{REDIS_PORT}/0"
peer = "{node_address(index)}:{CHANNEL_PORT}"
secret = "{SECRET}"
{self._announce()}{extra}"""
        nodedir = self.workdir / f"n{index}"
        nodedir.mkdir(exist_ok=True)
        path = nodedir / "siplb.toml"
        path.write_text(text)
        self.configs[index] = path
        return path

    def _announce(self) -> str:
        if not self.bgp:
            return ""
        return (
            f'\n[announce]\nprefixes = ["{ANYCAST}/32"]\nnext_hop = "self"\n'
            "interval = 0.1\ntimeout = 0.3\n"
        )

    def start_node(self, index: int, *, extra: str = "") -> ManagedProcess:
        config = self.node_config(index, extra=extra)
        argv = [sys.executable, "-m", "siplb", "run", "-c", str(config)]
        process = self.net.spawn(f"n{index}", "siplb", argv, cwd=config.parent)
        self.nodes[index] = process
        return process

    def start_exabgp(self, index: int) -> ManagedProcess:
        """Node ``index``'s ExaBGP, running ``siplb announce`` on its config."""
        config = self.configs[index]
        conf = config.parent / "exabgp.conf"
        conf.write_text(exabgp_config(config, router_address(index), node_address(index)))
        process = self.net.spawn_env(
            f"n{index}", "exabgp", [EXABGP, str(conf)], EXABGP_ENV, cwd=config.parent
        )
        self.exabgp[index] = process
        return process

    def api(self, index: int, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        out = self.net.run(
            f"n{index}",
            sys.executable,
            "-c",
            _API,
            method,
            f"http://{ADMIN}{path}",
            TOKEN,
            "" if body is None else json.dumps(body),
        )
        status, reply = json.loads(out)
        return int(status), reply

    def live(self, index: int) -> set[str]:
        try:
            status, body = self.api(index, "GET", "/api/cluster")
        except (RuntimeError, ValueError):
            return set()
        if status != 200:
            return set()
        return {m["node"] for m in body["members"] if m["alive"]}

    def cluster_stats(self, index: int) -> dict[str, int]:
        status, body = self.api(index, "GET", "/api/cluster")
        assert status == 200, body
        return dict(body.get("channel") or body.get("stats") or {})

    def wait_cluster(self, members: set[str], *, on: list[int], timeout: float = 20.0) -> None:
        for index in on:
            wait_until(f"n{index} sees {sorted(members)}", lambda i=index: self.live(i) == members,
                       timeout=timeout, step=0.2)  # fmt: skip

    def wait_destinations_up(self, index: int, timeout: float = 15.0) -> None:
        def up() -> bool:
            status, body = self.api(index, "GET", "/api/sets")
            if status != 200:
                return False
            states = [d["state"] for s in body["sets"] for d in s["destinations"]]
            return bool(states) and all(state == "up" for state in states)

        wait_until(f"n{index}'s destinations up", up, timeout=timeout, step=0.2)

    def close(self) -> None:
        self.net.close()
