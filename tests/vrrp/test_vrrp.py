"""A VRRP pair in network namespaces the test creates (and removes on exit, also on failure):

                            switch (bridge br0)
       +-------------------+-------------------+-------------------+
    client              node a              node b              backend
  192.0.2.100         192.0.2.11          192.0.2.12          192.0.2.21, .22: SIPp callees
  SIPp caller         siplb, keepalived   siplb, keepalived   192.0.2.5: redis-server
                      192.0.2.10, the virtual address, on the node VRRP elects

Both nodes run ``siplb run`` and ``keepalived`` with the files of ``examples/vrrp/`` as they
ship (only the path of ``siplb`` and of its config are this run's); every namespace has its
interface named ``eth0`` and the examples' addresses, so the examples are what is proven. The
caller places long calls to the virtual address; a's ``siplb`` is killed with SIGKILL; the
address must reach b within the time the example's ``vrrp_script`` sets, and the calls go on
through b: the established ones end with their BYE, new ones succeed, and only calls in setup
at the moment of the kill may fail. Then a's ``siplb`` comes back, b's link is cut (its host
dies) and the address must return to a within the time ``advert_int`` sets.

Run it alone, with its figures: ``sudo .venv/bin/pytest -s tests/vrrp``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path

import pytest

from e2e import sipp as sp
from e2e.cluster import wait_for
from e2e.harness import ManagedProcess
from e2e.netns import NetLab

pytestmark = pytest.mark.e2e

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "vrrp"
SIPLB = Path(sys.executable).with_name("siplb")
VIP, NODE_A, NODE_B = "192.0.2.10", "192.0.2.11", "192.0.2.12"
CLIENT, REDIS = "192.0.2.100", "192.0.2.5"
CALLEES = ("192.0.2.21", "192.0.2.22")  # the examples' destinations
HOSTS = {"a": NODE_A, "b": NODE_B, "client": CLIENT, "backend": REDIS}
# the callees answer 800 ms after the INVITE: calls are in setup when a's siplb dies
SLOW_ANSWER = Path(__file__).resolve().parents[1] / "anycast" / "scenarios" / "uas_slow.xml"
EXAMPLE_CHECK = "/usr/local/bin/siplb health --config /etc/siplb/siplb.toml"

CALLS, RATE, HOLD_MS = 100, 10, 3000  # 10 s of new calls, each held 3 s
KILL_AFTER_CALLS = 30  # calls under way (in setup or established) when a's siplb is killed
MIN_ESTABLISHED = 10  # of them established: the BYEs that must find their way through b
TAKEOVER_S = 1.0  # past fall x interval: one check's run time and the backup's takeover
SLACK_S = 0.5  # a loaded 2-core machine


def require_tools() -> None:
    if os.geteuid() != 0:
        pytest.fail(
            "the VRRP test creates network namespaces, a bridge and veth pairs and runs "
            "keepalived: run it as root (CI does)",
            pytrace=False,
        )
    for tool, package in {"keepalived": "keepalived", "redis-server": "redis-server"}.items():
        if shutil.which(tool) is None:
            pytest.fail(f"`{tool}` (Debian package {package}) is missing; `make test` installs it")
    sp.sipp_binary()


def example_setting(name: str) -> float:
    """A number the example's keepalived.conf sets (``interval``, ``fall``, ``advert_int``)."""
    text = (EXAMPLES / "keepalived-active.conf").read_text()
    found = re.search(rf"^\s*{name}\s+([\d.]+)", text, re.MULTILINE)
    assert found is not None, f"the example sets no {name}"
    return float(found[1])


# ---- the lab ------------------------------------------------------------------------------


def build(lab: NetLab) -> None:
    """Every namespace on one bridge, by an interface named eth0 (as in the examples)."""
    lab.namespace("sw")
    lab.run("sw", "ip", "link", "add", "br0", "type", "bridge", "forward_delay", "0")
    lab.run("sw", "ip", "link", "set", "br0", "up")
    for name, address in HOSTS.items():
        lab.namespace(name)
        port = f"to-{name}"  # the switch's end
        veth = ("ip", "link", "add", "eth0", "type", "veth", "peer", "name", port)
        lab.run(name, *veth, "netns", lab.ns("sw"))
        lab.run("sw", "ip", "link", "set", port, "master", "br0", "up")
        lab.run(name, "ip", "addr", "add", f"{address}/24", "dev", "eth0")
        lab.run(name, "ip", "link", "set", "eth0", "up")
    for callee in CALLEES:
        lab.run("backend", "ip", "addr", "add", f"{callee}/24", "dev", "eth0")


def succeeds(lab: NetLab, name: str, *argv: str) -> bool:
    try:
        lab.run(name, *argv)
    except RuntimeError:
        return False
    return True


def holds_vip(lab: NetLab, node: str) -> bool:
    return f"inet {VIP}/" in lab.run(node, "ip", "-o", "-4", "addr", "show", "dev", "eth0")


def bound(lab: NetLab, name: str, address: str) -> bool:
    return f"{address}:5060 " in lab.run(name, "ss", "-Hlun")


def start_redis(lab: NetLab, workdir: Path) -> None:
    folder = workdir / "redis"
    folder.mkdir()
    argv = [
        "redis-server", "--bind", REDIS, "--port", "6379", "--protected-mode", "no",
        "--save", "", "--appendonly", "no", "--dir", str(folder), "--daemonize", "no",
        "--logfile", str(folder / "redis.log"),
    ]  # fmt: skip
    lab.spawn("backend", "redis", argv, cwd=folder)
    ping = ("redis-cli", "-h", REDIS, "-p", "6379", "ping")
    wait_for("redis-server answers", lambda: succeeds(lab, "backend", *ping), timeout=10.0)


def start_callees(lab: NetLab, workdir: Path) -> None:
    for callee in CALLEES:
        uas = sp.start_uas(workdir, SLOW_ANSWER, host=callee, port=5060, netns=lab.ns("backend"))
        lab.processes.append(uas.process)  # stopped by lab.close() whatever happens
        wait_for(f"SIPp on {callee}", partial(bound, lab, "backend", callee), timeout=5.0)


@dataclass
class Node:
    name: str
    config: Path
    siplb: ManagedProcess
    keepalived: ManagedProcess | None = None


def health_argv(config: Path) -> list[str]:
    return [str(SIPLB), "health", "--config", str(config)]


def start_siplb(lab: NetLab, workdir: Path, name: str) -> Node:
    folder = workdir / name
    folder.mkdir()
    config = folder / "siplb.toml"
    shutil.copyfile(EXAMPLES / f"node-{name}.toml", config)
    return Node(name, config, run_siplb(lab, name, config, "siplb"))


def run_siplb(lab: NetLab, name: str, config: Path, label: str) -> ManagedProcess:
    argv = [sys.executable, "-m", "siplb", "run", "-c", str(config)]
    return lab.spawn(name, f"{label}-{name}", argv, cwd=config.parent)


def healthy(lab: NetLab, node: Node) -> bool:
    if node.siplb.poll() is not None:
        raise AssertionError(f"siplb on {node.name} exited\n{node.siplb.output_tail()}")
    return succeeds(lab, node.name, *health_argv(node.config))


def start_keepalived(lab: NetLab, workdir: Path, node: Node, example: str) -> None:
    folder = workdir / node.name
    conf = folder / "keepalived.conf"
    text = (EXAMPLES / example).read_text()
    assert EXAMPLE_CHECK in text, f"{example} no longer runs `{EXAMPLE_CHECK}`"
    conf.write_text(text.replace(EXAMPLE_CHECK, " ".join(health_argv(node.config))))
    argv = [
        "keepalived", "--dont-fork", "--log-console", "--log-detail", "--vrrp",
        "--use-file", str(conf), "--pid", str(folder / "keepalived.pid"),
        "--vrrp_pid", str(folder / "vrrp.pid"),
    ]  # fmt: skip
    node.keepalived = lab.spawn(node.name, f"keepalived-{node.name}", argv, cwd=folder)


def keepalived_log(node: Node) -> str:
    assert node.keepalived is not None
    return node.keepalived.output_tail(200_000)


# ---- what the caller's message log says about each call ----------------------------------

_BLOCK = re.compile(
    r"^-{10,} (\S+ [\d:.]+)\s*\n"  # date and local time
    r"UDP message (sent|received)[^\n]*\n\s*\n"
    r"([^\r\n]+)\r?\n(.*?)(?=^-{10,} |\Z)",
    re.MULTILINE | re.DOTALL,
)


@dataclass
class Call:
    invite_sent: float | None = None  # the first INVITE (epoch seconds)
    answered: float | None = None  # its 200
    ended: float | None = None  # the 200 to its BYE
    bye_sent: float | None = None


def calls_from(log: str) -> dict[str, Call]:
    calls: dict[str, Call] = {}
    for found in _BLOCK.finditer(log):
        at = datetime.strptime(found[1], "%Y-%m-%d %H:%M:%S.%f").timestamp()  # SIPp's local time
        way, start, rest = found[2], found[3], found[4]
        call_id = re.search(r"^Call-ID:\s*(\S+)", rest, re.MULTILINE | re.IGNORECASE)
        cseq = re.search(r"^CSeq:\s*\d+\s+(\S+)", rest, re.MULTILINE | re.IGNORECASE)
        if call_id is None or cseq is None:
            continue
        call = calls.setdefault(call_id[1], Call())
        method, ok = cseq[1], start.startswith("SIP/2.0 200")
        if way == "sent" and start.startswith("INVITE") and call.invite_sent is None:
            call.invite_sent = at
        elif way == "sent" and start.startswith("BYE") and call.bye_sent is None:
            call.bye_sent = at
        elif way == "received" and ok and method == "INVITE" and call.answered is None:
            call.answered = at
        elif way == "received" and ok and method == "BYE":
            call.ended = at
    return calls


IN_SETUP = "in setup at the kill"
ESTABLISHED = "established, BYE after the kill"
IN_GAP = "placed between the kill and the move"
AFTER_MOVE = "placed after the move"


def grouped(calls: dict[str, Call], killed: float, moved: float) -> dict[str, set[str]]:
    """The Call-IDs of each part of the run (a call may be in none: ended before the kill)."""
    groups: dict[str, set[str]] = {IN_SETUP: set(), ESTABLISHED: set(), IN_GAP: set()}
    groups[AFTER_MOVE] = set()
    for cid, c in calls.items():
        assert c.invite_sent is not None, cid
        if c.invite_sent > moved:
            groups[AFTER_MOVE].add(cid)
        elif c.invite_sent > killed:
            groups[IN_GAP].add(cid)
        elif c.answered is None or c.answered > killed:
            groups[IN_SETUP].add(cid)
        elif c.bye_sent is None or c.bye_sent > killed:
            groups[ESTABLISHED].add(cid)
    return groups


# ---- the test -------------------------------------------------------------------------------


def test_the_address_moves_to_the_backup_and_calls_go_on(tmp_path: Path) -> None:
    require_tools()
    interval, fall = example_setting("interval"), example_setting("fall")
    promised = fall * interval + TAKEOVER_S
    advert = example_setting("advert_int")
    host_promised = 4 * advert  # 3 x advert_int without an advertisement, + skew (< advert_int)
    workdir = tmp_path / "vrrp"
    workdir.mkdir()
    with NetLab("vrrp") as lab:
        build(lab)
        start_redis(lab, workdir)
        start_callees(lab, workdir)
        a, b = (start_siplb(lab, workdir, name) for name in ("a", "b"))
        for node in (a, b):
            wait_for(f"siplb on {node.name} healthy", partial(healthy, lab, node), timeout=20)
        start_keepalived(lab, workdir, a, "keepalived-active.conf")
        wait_for("the address on a", lambda: holds_vip(lab, "a"), timeout=10.0)
        start_keepalived(lab, workdir, b, "keepalived-backup.conf")
        wait_for(
            "b is the backup", lambda: "Entering BACKUP STATE" in keepalived_log(b), timeout=10
        )
        assert holds_vip(lab, "a")
        assert not holds_vip(lab, "b")

        uac = sp.start_uac(
            (VIP, 5060),
            workdir,
            calls=CALLS,
            rate=RATE,
            duration_ms=HOLD_MS,
            timeout_s=60,
            host=CLIENT,
            port=5060,
            name="uac",
            trace_msg=True,
            netns=lab.ns("client"),
        )
        lab.processes.append(uac.process)
        wait_for(
            f"{KILL_AFTER_CALLS} calls under way through a",
            lambda: uac.result().stats.current_calls >= KILL_AFTER_CALLS,
            timeout=15.0,
            step=0.1,
        )
        a.siplb.signal(signal.SIGKILL)
        killed, killed_at = time.monotonic(), time.time()
        wait_for("the address on b", lambda: holds_vip(lab, "b"), timeout=promised + SLACK_S + 2)
        moved = time.monotonic() - killed
        moved_at = killed_at + moved
        print(
            f"VRRP pair: the address on b {moved * 1000:.0f} ms after the kill "
            f"(promised {promised:g} s: fall {fall:g} x interval {interval:g} s + {TAKEOVER_S:g} s)"
        )
        assert not holds_vip(lab, "a"), "the address is on both nodes"
        assert "Entering FAULT STATE" in keepalived_log(a), keepalived_log(a)[-3000:]

        result = uac.wait(HOLD_MS / 1000 + CALLS / RATE + 40)
        assert b.siplb.poll() is None, b.siplb.output_tail()
        check_calls(result, killed_at, moved_at)
        assert moved <= promised + SLACK_S, f"the address took {moved:.2f} s"

        # a's siplb back: a turns backup (b keeps the address); then b's host dies (its link
        # cut) and a takes the address when b's advertisements stop
        a.siplb = run_siplb(lab, "a", a.config, "siplb-again")
        wait_for("siplb on a healthy again", lambda: healthy(lab, a), timeout=20)
        wait_for(
            "a is the backup again",
            lambda: keepalived_log(a).count("Entering BACKUP STATE") >= 2,
            timeout=10,
        )
        assert holds_vip(lab, "b")
        lab.run("sw", "ip", "link", "set", "to-b", "down")
        host_death = wait_for("the address on a", lambda: holds_vip(lab, "a"), timeout=10)
        print(
            f"VRRP pair: b's link cut, the address on a after {host_death * 1000:.0f} ms "
            f"(promised {host_promised:g} s: 3 x advert_int {advert:g} s + skew)"
        )
        assert host_death <= host_promised + SLACK_S, f"host death: {host_death:.2f} s"


def check_calls(result: sp.SippResult, killed_at: float, moved_at: float) -> None:
    """Only calls in setup at the kill may fail: the others end with a 200 to their BYE."""
    calls = calls_from(result.message_log())
    assert len(calls) == CALLS, (len(calls), result.describe())
    failed = {cid for cid, c in calls.items() if c.ended is None}
    groups = grouped(calls, killed_at, moved_at)
    print(
        f"VRRP pair: calls: {CALLS} placed, "
        f"{result.stats.successful_calls} successful, {result.stats.failed_calls} failed; "
        + "; ".join(
            f"{what}: {len(ids)} ({len(ids & failed)} failed)" for what, ids in groups.items()
        )
    )
    established, after = groups[ESTABLISHED], groups[AFTER_MOVE]
    assert len(established) >= MIN_ESTABLISHED, result.describe()
    assert not established & failed, (sorted(established & failed), result.describe())
    assert len(after) >= CALLS // 4, result.describe()
    assert not after & failed, (sorted(after & failed), result.describe())
    assert failed <= groups[IN_SETUP], (sorted(failed - groups[IN_SETUP]), result.describe())
    assert result.stats.successful_calls == CALLS - len(failed), result.describe()
