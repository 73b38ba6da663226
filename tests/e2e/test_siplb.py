"""siplb end to end: SIPp caller -> siplb (a real process) -> SIPp callees, on loopback.

Each test names the behaviour of the proxy issue it proves; call counts and times are bounded.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .balancer import SiplbProcess, start_siplb
from .conftest import SippLauncher
from .harness import LOOPBACK, send_udp

pytestmark = pytest.mark.e2e

INTERVAL, TIMEOUT, DOWN_AFTER, UP_AFTER = 1.0, 0.5, 2, 2
DETECTION_S = INTERVAL * DOWN_AFTER + TIMEOUT  # the bound for marking a PBX down
SLACK_S = 0.4  # scheduling jitter of a loaded 2-core machine, and the log's millisecond stamps


@pytest.fixture
def balancers(e2e_workdir: Path) -> Iterator[list[SiplbProcess]]:
    started: list[SiplbProcess] = []
    yield started
    for proc in started:
        code = proc.stop()
        assert code == 0, f"siplb exited with {code} on SIGTERM\n{proc.log_tail()}"


def _siplb(
    workdir: Path, balancers: list[SiplbProcess], dests: list[str], **kw: object
) -> SiplbProcess:
    proc = start_siplb(workdir, dests, **kw)  # type: ignore[arg-type]
    balancers.append(proc)
    return proc


def test_round_robin_1000_calls_at_100cps(
    sipp: SippLauncher, e2e_workdir: Path, balancers: list[SiplbProcess]
) -> None:
    uases = sipp.uases(2)
    lb = _siplb(e2e_workdir, balancers, [u.sip_uri for u in uases])
    result = sipp.run_uac(lb.address, calls=1000, rate=100, duration_ms=200, timeout_s=60)
    stats = result.stats
    assert stats.successful_calls == 1000, result.describe()
    assert stats.failed_calls == 0, result.describe()
    received = [u.stop().stats.calls_received for u in uases]
    assert sum(received) == 1000, received
    for count in received:  # round robin within 5% of even
        assert abs(count - 500) <= 25, received


def test_tcp_on_both_sides(
    sipp: SippLauncher, e2e_workdir: Path, balancers: list[SiplbProcess]
) -> None:
    uases = sipp.uases(2, transport="tcp")
    lb = _siplb(e2e_workdir, balancers, [u.sip_uri for u in uases], transport="tcp")
    result = sipp.run_uac(lb.address, calls=200, rate=50, transport="tcp", timeout_s=40)
    assert result.stats.successful_calls == 200, result.describe()
    assert result.stats.failed_calls == 0, result.describe()
    received = [u.stop().stats.calls_received for u in uases]
    assert received == [100, 100], received


def test_udp_in_tcp_out(
    sipp: SippLauncher, e2e_workdir: Path, balancers: list[SiplbProcess]
) -> None:
    uases = sipp.uases(2, transport="tcp")
    lb = _siplb(e2e_workdir, balancers, [u.sip_uri for u in uases])
    result = sipp.run_uac(lb.address, calls=100, rate=50, timeout_s=40)
    assert result.stats.successful_calls == 100, result.describe()
    assert result.stats.failed_calls == 0, result.describe()


def test_killed_uas_fails_over_and_is_marked_down_then_up(
    sipp: SippLauncher, e2e_workdir: Path, balancers: list[SiplbProcess]
) -> None:
    rate, hold_ms = 50, 500
    uases = sipp.uases(2)
    victim = uases[0]
    lb = _siplb(e2e_workdir, balancers, [u.sip_uri for u in uases])
    uac = sipp.uac(lb.address, calls=600, rate=rate, duration_ms=hold_ms, timeout_s=60)
    time.sleep(3.0)
    killed_at = time.time()
    victim.process.signal(signal.SIGKILL)
    time.sleep(DETECTION_S + 2 * SLACK_S)
    downs = [c for c in lb.state_changes(victim.sip_uri) if c.new == "down"]
    assert downs, lb.log_tail()
    detection = downs[0].at - killed_at
    assert detection <= DETECTION_S + SLACK_S, f"marked down after {detection:.2f} s"

    time.sleep(2.0)
    restarted_at = time.time()
    sipp.uas(port=victim.port)
    time.sleep(INTERVAL * UP_AFTER + TIMEOUT + 2 * SLACK_S)
    ups = [c for c in lb.state_changes(victim.sip_uri) if c.new == "up" and c.at > restarted_at]
    assert ups, lb.log_tail()
    assert ups[0].at - restarted_at <= INTERVAL * UP_AFTER + TIMEOUT + SLACK_S

    result = uac.wait(90)
    stats = result.stats
    # No call fails in setup: INVITEs sent to the dead UAS fail over (no error reaches the
    # caller, no INVITE times out). Only calls it had already answered may fail (their BYE).
    for code in (408, 480, 500, 502, 503, 504):
        assert stats.received(code) == 0, result.describe()
    assert stats.timeouts("INVITE") == 0, result.describe()
    in_progress_on_victim = rate * (hold_ms / 1000 + 0.5) / 2
    assert stats.failed_calls <= in_progress_on_victim, result.describe()
    assert stats.successful_calls + stats.failed_calls == 600, result.describe()


def test_cancel_through_the_balancer(
    sipp: SippLauncher, e2e_workdir: Path, balancers: list[SiplbProcess]
) -> None:
    uases = sipp.uases(2, "uas_ring.xml")
    lb = _siplb(e2e_workdir, balancers, [u.sip_uri for u in uases])
    result = sipp.run_uac(lb.address, "uac_cancel.xml", calls=60, rate=20, duration_ms=300)
    assert result.stats.successful_calls == 60, result.describe()
    assert result.stats.failed_calls == 0, result.describe()
    assert result.stats.received(487) == 60, result.describe()
    assert sum(u.stop().stats.received("CANCEL") for u in uases) == 60


def test_backend_answering_503_fails_over(
    sipp: SippLauncher, e2e_workdir: Path, balancers: list[SiplbProcess]
) -> None:
    busy = sipp.uas("uas_503.xml")
    good = sipp.uas()
    lb = _siplb(e2e_workdir, balancers, [busy.sip_uri, good.sip_uri])
    result = sipp.run_uac(lb.address, calls=100, rate=50)
    assert result.stats.successful_calls == 100, result.describe()
    assert result.stats.failed_calls == 0, result.describe()
    assert good.stop().stats.calls_received == 100
    assert busy.stop().stats.calls_received >= 1  # it was tried, and failed over from


MALFORMED = [
    b"\x00\xff garbage that is not SIP at all",
    b"INVITE sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKm1\r\n"
    b"From: <sip:a@b>;tag=1\r\nTo: <sip:x@y>\r\nCall-ID: m1\r\nCSeq: 1 INVITE\r\n"
    b"Content-Length: 500\r\n\r\nshort body",
    b"OPTIONS <sip:x@127.0.0.1> SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKm2\r\n"
    b"From: <sip:a@b>;tag=1\r\nTo: <sip:x@y>\r\nCall-ID: m2\r\nCSeq: 1 OPTIONS\r\n\r\n",
    b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK-n1.0-zzz\r\n\r\n",
    b"INVITE sip:x@127.0.0.1 SIP/7.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKm3\r\n"
    b"From: <sip:a@b>;tag=1\r\nTo: <sip:x@y>\r\nCall-ID: m3\r\nCSeq: 1 INVITE\r\n\r\n",
    b"\r\n\r\n",
    b"X" * 70000,
]


def test_malformed_messages_change_nothing_for_calls(
    sipp: SippLauncher, e2e_workdir: Path, balancers: list[SiplbProcess]
) -> None:
    uases = sipp.uases(2)
    lb = _siplb(e2e_workdir, balancers, [u.sip_uri for u in uases])
    uac = sipp.uac(lb.address, calls=300, rate=50, duration_ms=200)
    replies: list[bytes] = []
    for _ in range(20):
        replies += send_udp(MALFORMED[:-1], lb.address, wait=0.1)
        time.sleep(0.1)
    result = uac.wait(60)
    assert result.stats.successful_calls == 300, result.describe()
    assert result.stats.failed_calls == 0, result.describe()
    assert lb.running()
    statuses = {r.split(b" ", 2)[1] for r in replies}
    assert b"400" in statuses  # a malformed request with a usable Via gets 400
    assert b"505" in statuses  # a version we do not speak
    assert all(r.startswith(b"SIP/2.0 ") for r in replies)


def test_siplb_answers_options_addressed_to_itself(
    sipp: SippLauncher, e2e_workdir: Path, balancers: list[SiplbProcess]
) -> None:
    uas = sipp.uas()
    lb = _siplb(e2e_workdir, balancers, [uas.sip_uri])
    host, port = lb.address
    request = (
        f"OPTIONS sip:{host}:{port} SIP/2.0\r\nVia: SIP/2.0/UDP {LOOPBACK}:9;branch=z9hG4bKo1\r\n"
        f"Max-Forwards: 70\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:{host}>\r\nCall-ID: o1\r\n"
        f"CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    replies = send_udp(request, lb.address, wait=0.5)
    assert replies, "no answer to an OPTIONS addressed to the balancer"
    assert replies[0].startswith(b"SIP/2.0 200 "), replies
    assert uas.stop().stats.calls_received == 0
