"""The bonding lab: a site with four uplinks through a router to the bond server, in network
namespaces it creates and removes (``e2e.netns.NetLab``).

    site  s1 10.61.1.2 ---- 10.61.1.1  router  10.62.0.1 ---- 10.62.0.2  server
          s2 10.61.2.2 ---- 10.61.2.1                                     bond server :4600
          s3 10.61.3.2 ---- 10.61.3.1                                     echo meter :7001-7003
          s4 10.61.4.2 ---- 10.61.4.1                                     SIPp callee :5060
    bond client(s), the stream generator, the SIPp caller

Each uplink has ``tc netem`` at both ends (delay, jitter, a little loss). A kernel without
``sch_netem`` gets the loss from nftables (``meta random``) and no added delay; the lab says so
in its figures. "Loss 100%" (the link stays up but carries nothing) is netem's, or an nftables
set of cut devices. The site reaches the
server by every uplink (one route per device, by metric); each client link is bound to its
device (``SO_BINDTODEVICE``) and its address, so every link takes its own way, as policy routing
would on a real site. Traffic goes only to addresses inside the lab.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from e2e.harness import ManagedProcess
from e2e.netns import NetLab

SERVER = "10.62.0.2"
BOND_PORT = 4600
STATUS_CLIENT = ("127.0.0.1", 4601)
STATUS_CLIENT2 = ("127.0.0.1", 4602)
STATUS_SERVER = ("127.0.0.1", 4611)
# link -> one-way netem delay (ms) at each end
DELAYS = {1: 10, 2: 15, 3: 20, 4: 30}
JITTER_MS = 2
LOSS = "0.1%"
MODES = ("balanced", "redundant", "parity")
LOCAL_PORTS = {"balanced": 6001, "redundant": 6002, "parity": 6003}
TARGET_PORTS = {"balanced": 7001, "redundant": 7002, "parity": 7003}
SECOND_CLIENT_PORT = 6101
SIP_PORT = 5060
KEYS = {1: "11" * 32, 2: "22" * 32}
STREAM = Path(__file__).with_name("stream.py")


def client_toml(client: int, links: list[int], flows: list[tuple[int, str, int, int]]) -> str:
    status = STATUS_CLIENT if client == 1 else STATUS_CLIENT2
    text = (
        f'[client]\nid = {client}\nkey = "{KEYS[client]}"\nserver = ["{SERVER}:{BOND_PORT}"]\n'
        f'status = "{status[0]}:{status[1]}"\n'
    )
    for link in links:
        text += f'\n[[links]]\nname = "s{link}"\nid = {link}\nsource = "10.61.{link}.2"\n'
        text += f'interface = "{{dev{link}}}"\n'
    for flow, mode, local, _target in flows:
        text += f'\n[[flows]]\nid = {flow}\nmode = "{mode}"\nports = {local}\n'
    return text


def server_toml(flows: list[tuple[int, str, int, int]]) -> str:
    text = f'[server]\nlisten = ["0.0.0.0:{BOND_PORT}"]\nstatus = "{STATUS_SERVER[0]}:{STATUS_SERVER[1]}"\n'
    for client, key in KEYS.items():
        text += f'\n[[clients]]\nid = {client}\nkey = "{key}"\n'
    for flow, mode, _local, target in flows:
        text += (
            f'\n[[flows]]\nid = {flow}\nmode = "{mode}"\ntarget = "{SERVER}"\nports = {target}\n'
        )
    return text


FLOWS = [
    *[(i + 1, mode, LOCAL_PORTS[mode], TARGET_PORTS[mode]) for i, mode in enumerate(MODES)],
    (4, "redundant", SIP_PORT, SIP_PORT),
]


class BondLab:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.net = NetLab("bd")
        self.site_dev: dict[int, str] = {}
        self.router_dev: dict[int, str] = {}
        self.netem_ok = True

    def __enter__(self) -> BondLab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.net.close()

    def build(self) -> None:
        net = self.net
        for name in ("site", "router", "server"):
            net.namespace(name)
        net.run("router", "sysctl", "-qw", "net.ipv4.ip_forward=1")
        for link in DELAYS:
            site, router = net.link(
                ("site", f"10.61.{link}.2/24"), ("router", f"10.61.{link}.1/24")
            )
            self.site_dev[link], self.router_dev[link] = site, router
            net.run(
                "site",
                "ip",
                "route",
                "add",
                "10.62.0.0/24",
                "via",
                f"10.61.{link}.1",
                "dev",
                site,
                "metric",
                str(link),
            )
        for ns in ("site", "router"):
            self.nft(ns, "add table inet lab")
            self.nft(ns, "add set inet lab cut { type ifname; }")
            self.nft(ns, "add chain inet lab out { type filter hook postrouting priority 0; }")
            self.nft(ns, "add rule inet lab out oifname @cut drop")
        self.netem_ok = self._try_netem("site", self.site_dev[1], DELAYS[1])
        for link, delay in DELAYS.items():
            for ns, dev in (("site", self.site_dev[link]), ("router", self.router_dev[link])):
                if self.netem_ok:
                    self.netem(ns, dev, f"delay {delay}ms {JITTER_MS}ms loss {LOSS}", change=True)
                else:  # 0.1% of 2^32
                    self.nft(ns, f"add rule inet lab out oifname {dev} meta random < 4294967 drop")
        net.link(("router", "10.62.0.1/24"), ("server", f"{SERVER}/24"))
        net.route("server", "10.61.0.0/16", via="10.62.0.1")

    def _try_netem(self, ns: str, dev: str, delay: int) -> bool:
        try:
            self.netem(ns, dev, f"delay {delay}ms")
        except RuntimeError as exc:
            if "unknown" not in str(exc):
                raise
            return False
        for link in DELAYS:
            for other_ns, other in (
                ("site", self.site_dev[link]),
                ("router", self.router_dev[link]),
            ):
                if other != dev:
                    self.netem(other_ns, other, "delay 1ms")
        return True

    def nft(self, ns: str, command: str) -> None:
        self.net.run(ns, "nft", command)

    def netem(self, ns: str, dev: str, spec: str, *, change: bool = False) -> None:
        verb = "change" if change else "add"
        self.net.run(ns, "tc", "qdisc", verb, "dev", dev, "root", "netem", *spec.split())

    def cut_down(self, link: int, down: bool = True) -> None:
        self.net.run("router", "ip", "link", "set", self.router_dev[link], "down" if down else "up")

    def cut_loss(self, link: int, lost: bool = True) -> None:
        if not self.netem_ok:
            verb = "add" if lost else "delete"
            for ns, dev in (("site", self.site_dev[link]), ("router", self.router_dev[link])):
                self.nft(ns, f"{verb} element inet lab cut {{ {dev} }}")
            return
        delay = DELAYS[link]
        loss = "100%" if lost else LOSS
        self.netem(
            "site", self.site_dev[link], f"delay {delay}ms {JITTER_MS}ms loss {loss}", change=True
        )
        self.netem(
            "router",
            self.router_dev[link],
            f"delay {delay}ms {JITTER_MS}ms loss {loss}",
            change=True,
        )

    def write(self, name: str, text: str) -> Path:
        path = self.workdir / name
        for link, dev in self.site_dev.items():
            text = text.replace(f"{{dev{link}}}", dev)
        path.write_text(text)
        return path

    def siplb(self, ns: str, label: str, *args: str) -> ManagedProcess:
        argv = [sys.executable, "-m", "siplb", *args]
        return self.net.spawn(ns, label, argv, cwd=self.workdir)

    def start_bond(self) -> list[ManagedProcess]:
        """The server, the first client (four links), the second (link 1); in that order."""
        server = self.write("server.toml", server_toml(FLOWS))
        first = self.write("client1.toml", client_toml(1, list(DELAYS), FLOWS))
        second = self.write(
            "client2.toml", client_toml(2, [1], [(1, "balanced", SECOND_CLIENT_PORT, 7001)])
        )
        return [
            self.siplb("server", "bond-server", "bond", "server", "-c", str(server)),
            self.siplb("site", "bond-client1", "bond", "client", "-c", str(first)),
            self.siplb("site", "bond-client2", "bond", "client", "-c", str(second)),
        ]

    def status(self, ns: str, address: tuple[str, int]) -> dict[str, Any]:
        out = self.net.run(
            ns,
            sys.executable,
            "-m",
            "siplb",
            "bond",
            "status",
            "--json",
            "--address",
            f"{address[0]}:{address[1]}",
        )
        found: dict[str, Any] = json.loads(out)
        return found

    def python(self, ns: str, code: str, *args: str) -> str:
        return self.net.run(ns, sys.executable, "-c", code, *args)


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (RuntimeError, ValueError, KeyError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")
