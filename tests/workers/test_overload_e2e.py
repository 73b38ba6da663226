"""``workers = 2`` under a worker that falls behind: the other one refuses new calls for it.

``siplb run`` with two workers, a SIPp callee behind them. Worker 1 is made slow the way
``cpulimit`` does it: stopped (SIGSTOP) most of the time, let run (SIGCONT) for a moment every
quarter of a second, while OPTIONS that worker 1 owns arrive at 600/s: those the kernel steers
to worker 1 wait on its listener's socket, those steered to worker 0 are handed over and wait in
worker 1's hand-over queue, and each time it runs it reports them fuller than the overload
threshold. Worker 0's own queues stay empty; it must still refuse the INVITEs it owns with
``503`` and ``Retry-After``, and count them, until worker 1 runs freely and has caught up; then
calls go through again. Counts and times are bounded.
"""

from __future__ import annotations

import itertools
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from attack.tools import RUN, UdpPeer, header, sip_request, status_of
from e2e.balancer import SiplbProcess
from e2e.conftest import SippLauncher, e2e_workdir, sipp  # noqa: F401 (fixtures)
from e2e.harness import LOOPBACK
from workers.two_workers import owned_by, start_two_workers, stop_cleanly

pytestmark = pytest.mark.e2e

RECV_BUFFER = 65536  # the smallest a listener takes; the hand-over queue gets the same
FLOOD_RATE = 600  # OPTIONS a second, all owned by worker 1
STOPPED_S, RUNNING_S = 0.25, 0.01  # worker 1's duty cycle while it is made slow
SLOW_FOR_S = 8.0  # at most this long (the test goes on as soon as it has seen enough)
PROBES = 30  # INVITEs owned by worker 0, sent while worker 1 is behind
DEADLINE_S = 5.0
OVERLOAD_LINES = ("overloaded (", "no longer overloaded")  # siplb.app.log_event
PAD = "X-Pad: " + "p" * 300  # an OPTIONS of about 700 bytes: 56 fill a queue of 128 KiB


@pytest.fixture
def balancer(e2e_workdir: Path, sipp: SippLauncher) -> Iterator[SiplbProcess]:  # noqa: F811
    lb = start_two_workers(
        e2e_workdir,
        [sipp.uas().sip_uri],
        listen=f"recv_buffer = {RECV_BUFFER}\n",
        # one source sends 600/s: this test is about the overload guard alone
        extra="\n[protection.rate]\nenabled = false\n",
    )
    try:
        yield lb
    finally:
        stop_cleanly(lb)


def test_a_slow_worker_makes_the_other_refuse_new_calls_until_it_has_caught_up(
    balancer: SiplbProcess,
    sipp: SippLauncher,  # noqa: F811
) -> None:
    lb = balancer
    slow = _worker_pid(lb, 1)
    refused_before = _refused_metric(lb)
    target = lb.address
    host, port = target
    with UdpPeer(LOOPBACK) as flooder, UdpPeer(LOOPBACK) as caller:
        options = owned_by(1, lambda n: _options(target, flooder.local, n))
        invites = owned_by(0, lambda n: _invite(target, caller.local, n))
        done = threading.Event()
        threads = [
            threading.Thread(target=_flood, args=(flooder, options, target, done)),
            threading.Thread(target=_throttle, args=(slow, done)),
        ]
        for thread in threads:
            thread.start()
        try:
            started = time.monotonic()
            behind = _wait_overloaded(lb, 0, True, DEADLINE_S)
            seen_at = time.monotonic() - started
            for _ in range(PROBES):
                caller.send(next(invites), target)
                time.sleep(0.02)
            replies = caller.collect(0.6)  # worker 1 hands over its share within a cycle
            counters = _workers(lb)
        finally:
            done.set()
            for thread in threads:
                thread.join(5.0)
            os.kill(slow, signal.SIGCONT)
        released = time.monotonic()
        caught_up = _wait_overloaded(lb, 0, False, DEADLINE_S)
        recovered_in = time.monotonic() - released
        refused = [r for r in replies if status_of(r) == 503]
        refused_after = _refused_metric(lb)
        answered = {header(r, "call-id") for r in replies if status_of(r) is not None}
        print(
            f"\nworker 0 overloaded {seen_at:.2f} s after worker 1 was made slow: {behind}"
            f"\n{len(refused)} of {PROBES} INVITEs refused ({len(answered)} answered)"
            f"\nworker counters {counters}"
            f"\nsiplb_requests_refused_total{{reason=overload}} {refused_before} -> {refused_after}"
            f"\nworker 0 '{caught_up}' {recovered_in:.2f} s after worker 1 ran freely"
        )
        # worker 0's own queues were empty: the figure it acted on was worker 1's
        assert counters[0]["backlog"] < 0.1, counters
        # those that landed on worker 1's full socket may be lost (a worker behind drops), those
        # that landed on worker 0 are answered at once: about half
        assert len(answered) >= PROBES // 4, replies
        assert len(refused) >= len(answered) * 0.8, [status_of(r) for r in replies]
        assert all(header(r, "retry-after") for r in refused), refused[0]
        assert counters[0]["stats"].get("refused:overload", 0) >= len(refused), counters
        assert refused_after >= refused_before + len(refused)
    # caught up: calls go through again, from whichever worker takes them
    result = sipp.run_uac((host, port), calls=40, rate=40, timeout_s=30)
    assert result.stats.successful_calls == 40, result.describe()
    assert result.stats.received(503) == 0, result.describe()


# ---- the load and the slow worker ------------------------------------------------------------


def _flood(
    peer: UdpPeer, datagrams: Iterator[bytes], target: tuple[str, int], done: threading.Event
) -> None:
    """``FLOOD_RATE`` datagrams a second until ``done`` or ``SLOW_FOR_S``; replies are drained."""
    start = time.monotonic()
    for sent in itertools.count():
        if done.is_set() or time.monotonic() - start > SLOW_FOR_S:
            return
        peer.send(next(datagrams), target)
        if sent % 20 == 19:
            peer.drain()
            peer.received.clear()
        pause = start + (sent + 1) / FLOOD_RATE - time.monotonic()
        if pause > 0:
            time.sleep(pause)


def _throttle(pid: int, done: threading.Event) -> None:
    """Stop ``pid`` for ``STOPPED_S``, let it run ``RUNNING_S``, until ``done`` or
    ``SLOW_FOR_S``; it is left running."""
    start = time.monotonic()
    try:
        while not done.is_set() and time.monotonic() - start < SLOW_FOR_S:
            os.kill(pid, signal.SIGSTOP)
            done.wait(STOPPED_S)
            os.kill(pid, signal.SIGCONT)
            time.sleep(RUNNING_S)
    finally:
        os.kill(pid, signal.SIGCONT)


# ---- SIP and what the balancer says --------------------------------------------------------


def _options(target: tuple[str, int], local: tuple[str, int], n: int) -> bytes:
    return sip_request(
        "OPTIONS",
        f"sip:{target[0]}:{target[1]}",
        local=local,
        call_id=f"slow-{RUN}-{n}",
        from_tag=f"o{n}",
        to_uri=f"sip:{target[0]}:{target[1]}",
        headers=[PAD],
    )


def _invite(target: tuple[str, int], local: tuple[str, int], n: int) -> bytes:
    return sip_request(
        "INVITE",
        f"sip:probe{n}@{target[0]}:{target[1]}",
        local=local,
        call_id=f"probe-{RUN}-{n}",
        from_tag=f"i{n}",
        to_uri=f"sip:probe{n}@{target[0]}:{target[1]}",
    )


def _wait_overloaded(lb: SiplbProcess, worker: int, state: bool, within: float) -> str:
    """Wait ``within`` seconds for ``worker``'s last overload line to say ``state``; the line."""
    deadline = time.monotonic() + within
    while True:
        lines = [
            e["msg"]
            for e in lb.log_lines()
            if str(e.get("worker")) == str(worker) and e["msg"].startswith(OVERLOAD_LINES)
        ]
        if lines and lines[-1].startswith(OVERLOAD_LINES[0]) == state:
            return lines[-1]
        assert time.monotonic() < deadline, f"worker {worker} never {state=}\n{lb.log_tail()}"
        time.sleep(0.02)


def _workers(lb: SiplbProcess) -> list[dict[str, Any]]:
    status, body = lb.api("GET", "/api/status")
    assert status == 200, body
    assert isinstance(body, dict)
    return list(body["workers"])


def _refused_metric(lb: SiplbProcess) -> float:
    """``siplb_requests_refused_total{reason="overload"}``: every worker's refusals (the label
    appears with the first one)."""
    status, text = lb.api("GET", "/metrics")
    assert status == 200, text
    name = 'siplb_requests_refused_total{reason="overload"} '
    for line in str(text).splitlines():
        if line.startswith(name):
            return float(line[len(name) :])
    return 0.0


def _worker_pid(lb: SiplbProcess, worker: int) -> int:
    """The pid of ``worker`` from the parent's log."""
    starts = [
        int(e["msg"].rsplit("pid ", 1)[1].rstrip(")"))
        for e in lb.log_lines()
        if e["msg"].startswith(f"worker {worker} started (pid ")
    ]
    assert starts, lb.log_tail()
    return starts[-1]
