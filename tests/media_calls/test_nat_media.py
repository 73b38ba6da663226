"""A phone behind a real NAT (iptables MASQUERADE in a namespace) gets audio both ways through
a real rtpengine that siplb anchors its call on (``anchor = "nat"``).

    phone 10.10.1.2 --- 10.10.1.1 [router: MASQUERADE] 203.0.113.2 --- 203.0.113.10 [lb]
    lb: siplb on 203.0.113.10:5060, rtpengine on 203.0.113.10 (ng on 127.0.0.1), callee

The phone's SDP names its private address, which nobody outside its network can send to; the
call is anchored because its source (the NAT's address) is not its Via's sent-by. The engine's
SDP goes to both sides; the phone sends RTP first, the engine learns the NAT's address and port
from it, and the callee's RTP reaches the phone through the NAT's binding.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from e2e.harness import ManagedProcess
from e2e.netns import NetLab, require_root
from media.engine import rtp_range, rtpengine_binary
from siplb.media.bencode import decode, encode

pytestmark = pytest.mark.e2e

PHONE, NAT_OUT, LB = "10.10.1.2", "203.0.113.2", "203.0.113.10"
NG_PORT, CALLEE_PORT = 22223, 5070
TESTS = Path(__file__).resolve().parent.parent


def build(lab: NetLab) -> None:
    for name in ("phone", "router", "lb"):
        lab.namespace(name)
    lab.link(("phone", f"{PHONE}/24"), ("router", "10.10.1.1/24"))
    lab.link(("router", f"{NAT_OUT}/24"), ("lb", f"{LB}/24"))
    lab.route("phone", "default", via="10.10.1.1")
    lab.run("router", "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
    out = lab.run("router", "ip", "-o", "addr", "show", "to", NAT_OUT).split()[1]
    lab.run("router", "iptables", "-t", "nat", "-A", "POSTROUTING", "-o", out, "-j", "MASQUERADE")


def start_engine(lab: NetLab, workdir: Path) -> ManagedProcess:
    binary = rtpengine_binary()
    assert binary, "rtpengine (Debian rtpengine-daemon) is missing: make system-deps"
    low, high = rtp_range()
    argv = [
        binary, "--config-file=none", "--table=-1", "--foreground", "--log-stderr",
        f"--interface={LB}", f"--listen-ng=127.0.0.1:{NG_PORT}", f"--port-min={low}",
        f"--port-max={high}", "--log-level=6", "--delete-delay=0",
        f"--pidfile={workdir / 'rtpengine.pid'}",
    ]  # fmt: skip
    return lab.spawn("lb", "rtpengine", argv, cwd=workdir)


def ng_ping(lab: NetLab) -> bool:
    found = lab.udp_request("lb", b"p1 " + encode({"command": "ping"}), ("127.0.0.1", NG_PORT))
    if found is None:
        return False
    reply = decode(found[0].split(b" ", 1)[1])
    return isinstance(reply, dict) and reply.get("result") == b"pong"


def start_siplb(lab: NetLab, workdir: Path) -> ManagedProcess:
    config = workdir / "siplb.toml"
    config.write_text(
        f'[[listen]]\ntransport = "udp"\naddress = "{LB}:5060"\n'
        f'[[sets]]\nname = "pbx"\ndestinations = [{{ uri = "sip:{LB}:{CALLEE_PORT}" }}]\n'
        "[health]\ninterval = 0.5\ntimeout = 0.3\n"
        f'[media]\nengines = ["udp:127.0.0.1:{NG_PORT}"]\nanchor = "nat"\n'
        '[log]\nformat = "json"\n[admin]\nlisten = "127.0.0.1:0"\n'
    )
    argv = [sys.executable, "-m", "siplb", "run", "-c", str(config)]
    return lab.spawn("lb", "siplb", argv, cwd=workdir)


def ua(lab: NetLab, ns: str, label: str, args: list[str], workdir: Path) -> ManagedProcess:
    argv = ["env", f"PYTHONPATH={TESTS}", sys.executable, "-m", "media_calls.nat_ua", *args]
    return lab.spawn(ns, label, argv, cwd=workdir)


def wait_until(what: str, check: Callable[[], bool], timeout: float, tail: ManagedProcess) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what}\n{tail.output_tail()}"
        time.sleep(0.05)


@dataclass(frozen=True)
class Side:
    """What one end of the call reported: the SDP address it was given, the RTP it heard."""

    sdp: tuple[str, int]
    received: list[int]


def result(process: ManagedProcess, timeout: float) -> Side:
    code = process.wait(timeout)
    assert code == 0, process.output_tail()
    found = json.loads(process.stdout_path.read_text().strip().splitlines()[-1])
    return Side((str(found["sdp"][0]), int(found["sdp"][1])), list(found["received"]))


def test_a_phone_behind_nat_gets_audio_both_ways_through_the_engine(tmp_path: Path) -> None:
    require_root()
    with NetLab("mnat") as lab:
        build(lab)
        engine = start_engine(lab, tmp_path)
        wait_until("rtpengine never answered its ping", lambda: ng_ping(lab), 10.0, engine)
        callee = ua(lab, "lb", "callee", ["callee", LB, str(CALLEE_PORT)], tmp_path)
        siplb = start_siplb(lab, tmp_path)
        wait_until("the callee never came up", lambda: callee_up(siplb), 15.0, siplb)
        caller = ua(lab, "phone", "caller", ["caller", PHONE, LB, "5060"], tmp_path)
        said = result(caller, 30.0)
        heard = result(callee, 30.0)
        # both ends were given the engine's address, never the other's
        assert said.sdp[0] == LB, said
        assert said.sdp[1] != CALLEE_PORT + 2, said
        assert heard.sdp[0] == LB, heard
        assert len(heard.received) >= 20, (heard, engine.output_tail())
        assert len(said.received) >= 20, (said, engine.output_tail())


def callee_up(siplb: ManagedProcess) -> bool:
    """siplb logged the callee's destination up (its first probe answered)."""
    text = siplb.stderr_path.read_text(errors="replace")
    return f"destination sip:{LB}:{CALLEE_PORT}: " in text and "-> up" in text
