"""Bonding end to end in network namespaces (``netlab.BondLab``): a site with four uplinks with
netem delay, jitter and a little loss, a bond client there and a bond server behind a router.

Three 50 datagrams/s streams run at once through one client, one per mode (balanced,
redundant, parity), each echoed by a meter at the server's side, while SIPp calls SIPp through
the bond (SIP flow in redundant mode). Mid-stream:

- link 2 is cut with ``ip link set down`` (router end), and brought back;
- link 3 loses everything (``netem loss 100%`` both ways, or an nftables drop where the kernel
  has no netem; the link stays up), and recovers;
- link 1 is cut, then link 4, and both come back: they carry traffic again.

A second client (one link) shares the server; a forged packet and a replayed one are dropped.
The figures per phase and mode (datagrams lost each way, the longest gap between arrivals)
are printed: ``.venv/bin/pytest -s tests/bond/test_lab_netns.py``.
"""

from __future__ import annotations

import itertools
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from e2e.netns import require_root

from .netlab import (
    BOND_PORT,
    KEYS,
    LOCAL_PORTS,
    MODES,
    SECOND_CLIENT_PORT,
    SERVER,
    SIP_PORT,
    STATUS_CLIENT,
    STATUS_SERVER,
    STREAM,
    TARGET_PORTS,
    BondLab,
    wait_for,
)

pytestmark = pytest.mark.e2e

RATE = 50
DURATION = 22.0
# (phase, start, end) relative to the stream's start; what happens at its start and end
PHASES = [("ip link set down", 3.0, 6.0), ("loss 100%", 9.0, 12.0), ("two links", 15.0, 19.0)]
CALLS = 3

FORGE_AND_REPLAY = """
import socket, sys, time
from siplb.bond.packet import Beat, Header, Kind
from siplb.bond.seal import Direction, Sealer
key, dev, server, port = bytes.fromhex(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
sealer = Sealer(key, Direction.UPSTREAM, time.time_ns() // 1000 + 10**9)
good = sealer.seal(Header(Kind.BEAT, 1, 2, sealer.next_number()), Beat(1.0).pack())
forged = bytearray(good)
forged[-1] ^= 1
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.setsockopt(socket.SOL_SOCKET, 25, dev.encode())
sock.bind(("10.61.1.2", 0))
for data in (bytes(forged), good, good):
    sock.sendto(data, (server, port))
answers = 0
deadline = time.monotonic() + 1.0
while (left := deadline - time.monotonic()) > 0:  # the server beats on the link too
    sock.settimeout(left)
    try:
        answers += sock.recv(2048)[1] == Kind.ECHO
    except TimeoutError:
        break
print(answers)
"""


def stream_figures(
    send: dict[str, Any], echo: dict[str, Any], stream: int, window: tuple[float, float]
) -> dict[str, Any]:
    """Datagrams of ``stream`` sent in ``window`` (seconds from the start): lost on the way up,
    lost on the way back, the longest gap between arrivals; and over the first second of the
    window (the cut), from the first lost datagram's sending to the last one's."""
    start = send["start"]
    seqs = [seq for seq, at in enumerate(send["sent"]) if window[0] <= at - start < window[1]]
    up = {int(k): v for k, v in echo.get(str(stream), {}).items()}
    back = {int(k): v for k, v in send["echoed"][str(stream)].items()}
    lost_up = [seq for seq in seqs if seq not in up]
    lost_back = [seq for seq in seqs if seq in up and seq not in back]
    arrivals = sorted(up[seq] for seq in seqs if seq in up)
    gap = max((b - a for a, b in itertools.pairwise(arrivals)), default=0.0)
    first = seqs[0] if seqs else 0
    at_cut = sorted(seq for seq in lost_up + lost_back if seq < first + RATE)
    span = (at_cut[-1] - at_cut[0] + 1) / RATE if at_cut else 0.0
    return {
        "up": len(lost_up),
        "back": len(lost_back),
        "gap_ms": gap * 1000,
        "span_ms": span * 1000,
        "at_cut": len(at_cut),
    }


def test_bonding_lab(tmp_path: Path) -> None:
    require_root()
    with BondLab(tmp_path) as lab:
        lab.build()
        run_lab(lab, tmp_path)


def run_lab(lab: BondLab, workdir: Path) -> None:
    echo_out, send_out = workdir / "echo.json", workdir / "send.json"
    ports = [str(port) for port in TARGET_PORTS.values()]
    echo = lab.net.spawn(
        "server",
        "echo",
        [sys.executable, str(STREAM), "echo", "--out", str(echo_out), *ports],
        cwd=workdir,
    )
    uas = lab.net.spawn(
        "server",
        "sipp-uas",
        [
            "sipp",
            "-sn",
            "uas",
            "-i",
            SERVER,
            "-p",
            str(SIP_PORT),
            "-m",
            str(CALLS),
            "-nostdin",
        ],
        cwd=workdir,
    )
    _server, _client, second_client = lab.start_bond()
    wait_for(
        lambda: all(link["state"] == "up" for link in lab.status("site", STATUS_CLIENT)["links"]),
        10,
        "the client's links",
    )
    targets = [f"127.0.0.1:{LOCAL_PORTS[mode]}" for mode in MODES] + [
        f"127.0.0.1:{SECOND_CLIENT_PORT}"
    ]
    sender = lab.net.spawn(
        "site",
        "send",
        [
            sys.executable,
            str(STREAM),
            "send",
            "--out",
            str(send_out),
            "--rate",
            str(RATE),
            "--duration",
            str(DURATION),
            *targets,
        ],
        cwd=workdir,
    )
    t0 = time.monotonic()

    def at(offset: float) -> None:
        time.sleep(max(0.0, t0 + offset - time.monotonic()))

    at(1.0)
    uac = lab.net.spawn(
        "site",
        "sipp-uac",
        [
            "sipp",
            "-sn",
            "uac",
            f"127.0.0.1:{SIP_PORT}",
            "-i",
            "127.0.0.1",
            "-p",
            "5070",
            "-m",
            str(CALLS),
            "-r",
            "1",
            "-d",
            "4000",
            "-timeout",
            "30s",
            "-nostdin",
        ],
        cwd=workdir,
    )
    at(3.0)
    lab.cut_down(2)
    at(6.0)
    lab.cut_down(2, down=False)
    at(9.0)
    lab.cut_loss(3)
    at(12.0)
    lab.cut_loss(3, lost=False)
    at(15.0)
    lab.cut_down(1)
    at(16.5)
    lab.cut_loss(4)
    at(19.0)
    lab.cut_down(1, down=False)
    lab.cut_loss(4, lost=False)
    at(20.0)
    before = {
        link["name"]: link["bytes_sent"] for link in lab.status("site", STATUS_CLIENT)["links"]
    }
    at(DURATION)
    after = lab.status("site", STATUS_CLIENT)
    assert sender.wait(10) == 0, sender.output_tail()
    calls = uac.wait(20)
    second_client.stop()  # its packets would be refused after the forger's: keep counts exact
    time.sleep(0.2)
    server_before = lab.status("server", STATUS_SERVER)
    answers = lab.python("site", FORGE_AND_REPLAY, KEYS[2], lab.site_dev[1], SERVER, str(BOND_PORT))
    server_after = lab.status("server", STATUS_SERVER)
    echo.stop()
    send, arrived = json.loads(send_out.read_text()), json.loads(echo_out.read_text())
    client_log = (workdir / "bond-client1.stderr").read_text()

    figures = {
        (phase, mode): stream_figures(send, arrived, index, (start, end + 1.0))
        for phase, start, end in PHASES
        for index, mode in enumerate(MODES)
    }
    print_figures(figures, lab, after, client_log)
    site = next(c for c in server_before["clients"] if c["client"] == 1)
    print(
        f"server, client 1: delivered {site['delivered']}, recovered {site['recovered']}, "
        f"duplicates {site['duplicates']}, dropped {site['dropped']}"
    )
    print(
        f"SIP calls (SIPp through the bond, {CALLS} calls of 4 s spanning the first cut): exit {calls}"
    )

    assert calls == 0, uac.output_tail()
    for phase, _start, _end in PHASES[:2]:
        # the cut link's share (12.5/s) each way for the 150-250 ms it takes to notice, and
        # the links' own random loss: a handful of datagrams, never two in a row
        assert figures[phase, "balanced"]["at_cut"] <= 8, figures[phase, "balanced"]
        assert figures[phase, "balanced"]["gap_ms"] < 100, figures[phase, "balanced"]
        assert figures[phase, "redundant"]["up"] + figures[phase, "redundant"]["back"] == 0
        # a cut link alone costs nothing: each group has one datagram (or its parity) on it and
        # is rebuilt. But a group that also meets the links' own random loss (0.1% per end) on
        # another of its links has lost two and rebuilds neither: about one run in ten
        assert figures[phase, "parity"]["up"] + figures[phase, "parity"]["back"] <= 2
    assert figures["two links", "redundant"]["up"] + figures["two links", "redundant"]["back"] == 0
    # links 1 and 4 came back and carry traffic again
    grown = {link["name"]: link["bytes_sent"] - before[link["name"]] for link in after["links"]}
    assert all(link["state"] == "up" for link in after["links"]), after
    assert grown["s1"] > 10_000, grown
    assert grown["s4"] > 10_000, grown
    assert client_log.count("link s1 is up") == 2, client_log
    assert "link s2 is down" in client_log
    assert "link s3 is down" in client_log
    # the second client: its stream (one link, balanced: the links' own 0.1% loss shows) went
    # through the same server and came back while its link was up
    second = stream_figures(send, arrived, 3, (0.5, 14.0))
    assert second["up"] + second["back"] <= 0.02 * 13.5 * RATE, second
    # a forged and a replayed packet: dropped, only the genuine one answered
    dropped = {c["client"]: c["dropped"] for c in server_after["clients"]}
    dropped_before = {c["client"]: c["dropped"] for c in server_before["clients"]}
    assert int(answers) == 1
    assert dropped[2] - dropped_before[2] == 2
    uas.stop()


def print_figures(
    figures: dict[tuple[str, str], dict[str, Any]], lab: BondLab, after: dict[str, Any], log: str
) -> None:
    links = (
        "netem one way 10/15/20/30 ms, jitter 2 ms, loss 0.1% per end"
        if lab.netem_ok
        else "no sch_netem in this kernel: no added delay; nftables loss 0.1% per end"
    )
    print(f"\nbonding lab: 50 datagrams/s per mode, four links ({links})")
    print("lost up/back: over the phase (cut to one second after the link is back)")
    print("at cut: lost in the first second after the cut, and from the first to the last of them")
    print(
        f"{'phase':<18} {'mode':<10} {'lost up':>7} {'back':>5} {'longest gap':>12} {'at cut':>7}"
    )
    for (phase, mode), f in figures.items():
        print(
            f"{phase:<18} {mode:<10} {f['up']:>7} {f['back']:>5} {f['gap_ms']:>9.0f} ms "
            f"{f['at_cut']:>7} over {f['span_ms']:.0f} ms"
        )
    detected = re.findall(r"client link (s\d) is down \(silent for (\d+) ms\)", log)
    print("detected: " + ", ".join(f"{link} after {ms} ms" for link, ms in detected))
    links = ", ".join(
        f"{link['name']} {link['state']} rtt {link['rtt_ms']} ms" for link in after["links"]
    )
    print(f"client links at the end: {links}; recovered by parity: {after['recovered']}")
