"""``[capture]`` end to end: real SIPp calls through a real ``siplb run``, captured as HEP.

sngrep 1.6 (Debian) listens for HEP on a loopback port (``-L udp:127.0.0.1:PORT``), without its
interface (``-N -q``) and without its config file (``-F``), and writes what it received to a
pcap (``-O``), each message in a UDP frame with the addresses and ports the HEP packet gave.
With ``-L`` alone it opens no capture device: the pcap holds what came as HEP and nothing
sniffed from the loopback. Given a password (``eep.listen.pass``), it keeps only the packets that
carry it: the auth key chunk sits where it expects it. Stopped with SIGTERM (by its PID), it closes the file; the file is
read here (``pcap.py``).

Also: TCP calls, captured with both ends of each connection (read from the HEP packets, as
sngrep writes every message as UDP into its pcap); a reload that moves the capture to another
collector, then removes it; a collector that is down costs the calls nothing, and siplb counts
what it could not send.
"""

from __future__ import annotations

import ipaddress
import re
import shutil
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from e2e.balancer import SiplbProcess, launch, start_siplb, write_config
from e2e.conftest import SippLauncher
from e2e.harness import LOOPBACK, HarnessError, ManagedProcess, free_port, wait_bound

from .pcap import Datagram, read_pcap
from .test_hep import by_type

pytestmark = pytest.mark.e2e

WAIT = 10.0  # seconds, for anything the test waits on
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)


def sngrep_binary() -> str:
    path = shutil.which("sngrep")
    if path is None:
        pytest.fail("sngrep (Debian package sngrep) is required; `make test` installs it")
    return path


def start_sngrep(
    workdir: Path, port: int, pcap: Path, password: str | None = None
) -> ManagedProcess:
    """sngrep taking HEP on ``port`` (with ``password``: only packets carrying it)."""
    argv = [sngrep_binary(), "-F", "-N", "-q", "-L", f"udp:{LOOPBACK}:{port}", "-O", str(pcap)]
    if password is not None:
        settings = workdir / "sngreprc"
        settings.write_text(f"set eep.listen.pass {password}\n")
        argv[2:2] = ["-f", str(settings)]
    process = ManagedProcess("sngrep", argv, cwd=workdir)
    try:
        wait_bound(LOOPBACK, port, "udp", timeout=WAIT, process=process)
    except HarnessError:
        process.stop()
        raise
    return process


def udp_collector() -> socket.socket:
    """A UDP socket on loopback that reads HEP here, with room for every packet of a test
    (SO_RCVBUFFORCE, as root: the default buffer holds about a hundred on loopback)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 8 << 20)
    except PermissionError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.bind((LOOPBACK, 0))
    sock.setblocking(False)
    return sock


def udp_backlog(port: int) -> int | None:
    """Bytes waiting in the receive queue of the UDP socket bound to ``port`` (None: none)."""
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].partition(":")[2], 16) == port:
            return int(fields[4].partition(":")[2], 16)
    return None


def metric(lb: SiplbProcess, name: str) -> float:
    """The sum of the samples of ``name`` in siplb's /metrics."""
    status, text = lb.api("GET", "/metrics")
    assert status == 200
    assert isinstance(text, str)
    pattern = re.compile(rf"^{name}(?:\{{[^}}]*\}})? (\S+)$", re.MULTILINE)
    return sum(float(value) for value in pattern.findall(text))


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"no {what} within {WAIT} s"
        time.sleep(0.02)


def header(payload: bytes, name: bytes) -> bytes | None:
    for line in payload.split(b"\r\n\r\n")[0].split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name:
            return value.strip()
    return None


def kind(payload: bytes) -> str:
    """``INVITE``, ``ACK``, ... for a request; ``200 BYE`` (status and CSeq method) for a
    response."""
    first = payload.split(b"\r\n", 1)[0].decode()
    if not first.startswith("SIP/2.0 "):
        return first.split(" ", 1)[0]
    cseq = (header(payload, b"cseq") or b"").decode().split()
    return f"{first.split()[1]} {cseq[-1] if cseq else '?'}"


@pytest.mark.parametrize("password", [None, "s3cret"])
def test_a_call_through_siplb_reaches_sngrep_whole(
    e2e_workdir: Path, sipp: SippLauncher, password: str | None
) -> None:
    hep_port = free_port()
    pcap = e2e_workdir / "capture.pcap"
    sngrep = start_sngrep(e2e_workdir, hep_port, pcap, password)
    auth = "" if password is None else f'password = "{password}"\n'
    try:
        callee = sipp.uas(timeout_s=30)
        lb = start_siplb(
            e2e_workdir,
            [callee.sip_uri],
            extra=f'[capture]\nhep = "udp:{LOOPBACK}:{hep_port}"\nnode_id = 2001\n{auth}',
        )
        started = time.time()
        try:
            caller = sipp.uac(lb.address, calls=1, rate=1, duration_ms=100, timeout_s=20)
            result = caller.wait()
            assert result.stats.successful_calls == 1, result.describe()
            sent = metric(lb, "siplb_capture_sent_total")
            dropped = metric(lb, "siplb_capture_dropped_total")
        finally:
            lb.stop()
        ended = time.time()
        # Everything siplb sent is read by sngrep before it is told to stop.
        wait_for(lambda: udp_backlog(hep_port) == 0, "empty receive queue at sngrep")
    finally:
        assert sngrep.stop() is not None, sngrep.output_tail()
    assert sent >= 13
    assert dropped == 0

    captured = read_pcap(pcap)
    caller_at, lb_at, callee_at = caller.address, lb.address, callee.address
    invites = [d for d in captured if kind(d.payload) == "INVITE" and d.source == caller_at]
    assert len(invites) == 1, [kind(d.payload) for d in captured]
    call_id = header(invites[0].payload, b"call-id")
    call = [d for d in captured if header(d.payload, b"call-id") == call_id]
    flows = {(kind(d.payload), d.source, d.destination) for d in call}
    expected = {
        ("INVITE", caller_at, lb_at),
        ("100 INVITE", lb_at, caller_at),
        ("INVITE", lb_at, callee_at),
        ("180 INVITE", callee_at, lb_at),
        ("180 INVITE", lb_at, caller_at),
        ("200 INVITE", callee_at, lb_at),
        ("200 INVITE", lb_at, caller_at),
        ("ACK", caller_at, lb_at),
        ("ACK", lb_at, callee_at),
        ("BYE", caller_at, lb_at),
        ("BYE", lb_at, callee_at),
        ("200 BYE", callee_at, lb_at),
        ("200 BYE", lb_at, caller_at),
    }
    assert expected <= flows, sorted(expected - flows)
    # The HEP time of each message is when siplb saw it, in order along the call.
    assert all(started - 1 <= d.time <= ended + 1 for d in call), [d.time for d in call]
    assert in_order(call, ["INVITE", "180 INVITE", "200 INVITE", "ACK", "BYE", "200 BYE"])


def in_order(call: list[Datagram], kinds: list[str]) -> bool:
    """The first message of each kind comes no earlier than the one of the kind before."""
    firsts = [min(d.time for d in call if kind(d.payload) == k) for k in kinds]
    return firsts == sorted(firsts)


def test_a_dead_collector_costs_the_calls_nothing(e2e_workdir: Path, sipp: SippLauncher) -> None:
    dead = free_port()  # nothing listens: every HEP packet meets an ICMP port unreachable
    callee = sipp.uas(timeout_s=30)
    lb = start_siplb(
        e2e_workdir,
        [callee.sip_uri],
        extra=f'[capture]\nhep = "udp:{LOOPBACK}:{dead}"\nqueue = 100\n',
    )
    try:
        result = sipp.run_uac(lb.address, calls=10, rate=20, duration_ms=50, timeout_s=20)
        assert result.stats.successful_calls == 10, result.describe()
        assert result.stats.failed_calls == 0, result.describe()
        assert lb.running()
        wait_for(lambda: metric(lb, "siplb_capture_dropped_total") > 0, "drop counted")
        status, health = lb.api("GET", "/api/health")
        assert status == 200, health
    finally:
        lb.stop()


def test_tcp_messages_are_captured_with_their_connections(
    e2e_workdir: Path, sipp: SippLauncher
) -> None:
    """The TCP call is read from the HEP packets themselves (decoded as in ``test_hep.py``)."""
    collector = udp_collector()
    callee = sipp.uas(transport="tcp", timeout_s=30)
    lb = start_siplb(
        e2e_workdir,
        [callee.sip_uri],
        transport="tcp",
        extra=f'[capture]\nhep = "udp:{LOOPBACK}:{collector.getsockname()[1]}"\n',
    )
    try:
        result = sipp.run_uac(lb.address, calls=1, rate=1, transport="tcp", timeout_s=20)
        assert result.stats.successful_calls == 1, result.describe()
    finally:
        lb.stop()
    messages = []
    with collector:
        while True:
            try:
                messages.append(by_type(collector.recv(70000)))
            except BlockingIOError:
                break

    flows = {
        (kind(m[15]), address(m, 3, 7), address(m, 4, 8))
        for m in messages
        if m[2] == bytes([6]) and "OPTIONS" not in kind(m[15])
    }
    lb_at, callee_at = lb.address, callee.address
    into_lb = {(k, dst) for k, _, dst in flows if dst == lb_at}
    to_callee = {(k, src[0]) for k, src, dst in flows if dst == callee_at}
    from_callee = {k for k, src, dst in flows if src == callee_at}
    to_caller = {k for k, src, dst in flows if src == lb_at}
    assert {k for k, _ in into_lb} >= {"INVITE", "ACK", "BYE"}, flows
    assert to_callee >= {("INVITE", LOOPBACK), ("ACK", LOOPBACK), ("BYE", LOOPBACK)}, flows
    assert from_callee >= {"180 INVITE", "200 INVITE", "200 BYE"}, flows
    assert to_caller >= {"100 INVITE", "180 INVITE", "200 INVITE", "200 BYE"}, flows
    # Our end of the connection we opened to the callee: a real port, never unknown.
    assert all(src[1] != 0 for _, src, _ in flows), flows


def call_ids(sock: socket.socket) -> dict[bytes, set[str]]:
    """The HEP packets waiting at ``sock``: Call-ID -> the kinds of message captured."""
    found: dict[bytes, set[str]] = {}
    while True:
        try:
            chunks = by_type(sock.recv(70000))
        except BlockingIOError:
            return found
        found.setdefault(chunks.get(17, b""), set()).add(kind(chunks[15]))


def test_a_reload_moves_the_capture_then_stops_it(e2e_workdir: Path, sipp: SippLauncher) -> None:
    first, second = udp_collector(), udp_collector()
    ports = [sock.getsockname()[1] for sock in (first, second)]
    callee = sipp.uas(timeout_s=30)
    lb = start_siplb(
        e2e_workdir, [callee.sip_uri], extra=f'[capture]\nhep = "udp:{LOOPBACK}:{ports[0]}"\n'
    )
    try:
        text = lb.config_path.read_text()
        lb.config_path.write_text(text.replace(f":{ports[0]}", f":{ports[1]}"))
        status, body = lb.api("POST", "/api/reload")
        assert status == 200, body
        call_ids(first)  # what came before the reload
        result = sipp.run_uac(lb.address, calls=1, rate=1, timeout_s=20)
        assert result.stats.successful_calls == 1, result.describe()
        seen: dict[bytes, set[str]] = {}
        whole = {"INVITE", "ACK", "BYE", "200 BYE"}
        wait_for(lambda: any(k >= whole for k in merge(seen, call_ids(second)).values()), "call")
        moved = [call for call, kinds in seen.items() if kinds >= whole]
        assert not set(moved) & set(call_ids(first)), "captured to the old collector too"

        lb.config_path.write_text(text.split("[capture]")[0])
        status, body = lb.api("POST", "/api/reload")
        assert status == 200, body
        before = metric(lb, "siplb_capture_sent_total")
        result = sipp.run_uac(lb.address, calls=1, rate=1, timeout_s=20)
        assert result.stats.successful_calls == 1, result.describe()
        assert metric(lb, "siplb_capture_sent_total") == before
    finally:
        lb.stop()
        first.close()
        second.close()


def merge(into: dict[bytes, set[str]], more: dict[bytes, set[str]]) -> dict[bytes, set[str]]:
    for call, kinds in more.items():
        into.setdefault(call, set()).update(kinds)
    return into


def test_workers_capture_their_own_share(e2e_workdir: Path, sipp: SippLauncher) -> None:
    """``workers = 2``: each worker sends what its sockets carried; a datagram handed to the
    worker that owns it is captured once, by the worker that read it; ``/metrics`` sums the
    workers' counts."""
    collector = udp_collector()
    callee = sipp.uas(timeout_s=30)
    port = collector.getsockname()[1]
    lb = start_siplb(
        e2e_workdir,
        [callee.sip_uri],
        extra=f'[proxy]\nworkers = 2\n\n[capture]\nhep = "udp:{LOOPBACK}:{port}"\n',
    )
    calls = 20
    try:
        caller = sipp.uac(lb.address, calls=calls, rate=20, duration_ms=50, timeout_s=30)
        result = caller.wait()
        assert result.stats.successful_calls == calls, result.describe()
        seen: dict[bytes, set[str]] = {}
        invites: list[bytes] = []

        def every_call_whole() -> bool:
            for chunks in packets(collector):
                call = chunks.get(17, b"")
                seen.setdefault(call, set()).add(kind(chunks[15]))
                to_lb = int.from_bytes(chunks[8], "big") == lb.address[1]
                if kind(chunks[15]) == "INVITE" and to_lb:
                    invites.append(call)
            whole = {"INVITE", "100 INVITE", "180 INVITE", "200 INVITE", "ACK", "BYE", "200 BYE"}
            return sum(kinds >= whole for kinds in seen.values()) == calls

        try:
            wait_for(every_call_whole, f"{calls} whole calls")
        except AssertionError:
            raise AssertionError(sorted(seen.items())) from None
        retransmitted = result.stats.retransmissions
        assert len(invites) <= calls + retransmitted, invites  # each INVITE captured once
        assert len(set(invites)) == calls
        total = sum(len(kinds) for kinds in seen.values())
        wait_for(lambda: metric(lb, "siplb_capture_sent_total") >= total, "summed counts")
    finally:
        lb.stop()
        collector.close()


def packets(sock: socket.socket) -> list[dict[int, bytes]]:
    out = []
    while True:
        try:
            out.append(by_type(sock.recv(70000)))
        except BlockingIOError:
            return out


def test_a_wildcard_listener_captures_the_address_each_datagram_used(
    e2e_workdir: Path, sipp: SippLauncher
) -> None:
    """``0.0.0.0:PORT``: a received datagram is captured with the address it was sent to, a sent
    one with the address it left from (127.0.0.1 here), never the wildcard."""
    collector = udp_collector()
    callee = sipp.uas(timeout_s=30)
    port, admin_port = free_port(), free_port()
    config = e2e_workdir / "siplb.toml"
    hep = f'[capture]\nhep = "udp:{LOOPBACK}:{collector.getsockname()[1]}"\n'
    write_config(config, port, [callee.sip_uri], extra=hep, admin_port=admin_port)
    config.write_text(config.read_text().replace(f'"{LOOPBACK}:{port}"', f'"0.0.0.0:{port}"', 1))
    lb = launch(e2e_workdir, config, (LOOPBACK, port), admin_port)
    try:
        result = sipp.run_uac(lb.address, calls=1, rate=1, timeout_s=20)
        assert result.stats.successful_calls == 1, result.describe()
    finally:
        lb.stop()
    ours = {(LOOPBACK, port)}
    found = packets(collector)
    collector.close()
    ends = {
        (kind(m[15]), address(m, 3, 7) in ours, address(m, 4, 8) in ours)
        for m in found
        if "OPTIONS" not in kind(m[15])
    }
    assert ("INVITE", False, True) in ends, ends  # from the caller to 127.0.0.1:port
    assert ("INVITE", True, False) in ends, ends  # from 127.0.0.1:port to the callee
    assert ("200 BYE", True, False) in ends, ends
    assert all(address(m, 3, 7)[0] != "0.0.0.0" for m in found)
    assert all(address(m, 4, 8)[0] != "0.0.0.0" for m in found)


def address(found: dict[int, bytes], ip: int, port: int) -> tuple[str, int]:
    """An address and port of a decoded HEP packet (chunks ``ip`` and ``port``)."""
    return (str(ipaddress.ip_address(found[ip])), int.from_bytes(found[port], "big"))
