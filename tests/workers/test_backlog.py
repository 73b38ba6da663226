"""The receive backlog the workers of one node share (``siplb.io.shared``): each worker's report,
how another worker reads it as it ages, the node's figure a core is told, and the hand-over
queue (the channel socket) counted with the listeners (``siplb.io.workers``)."""

from __future__ import annotations

import asyncio
import multiprocessing
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from siplb.cluster import Member
from siplb.config import load_config
from siplb.io.shared import (
    BACKLOG_FORGET,
    BACKLOG_LATE,
    SharedCallCounts,
    pack_backlog,
    peer_backlog,
)
from siplb.io.workers import WorkerLink, open_worker_sockets
from siplb.workers import Worker

NOW = 5000.0  # a monotonic clock reading (seconds since boot)


@pytest.fixture
def counts() -> Iterator[SharedCallCounts]:
    table = SharedCallCounts.create(3, threading.Lock())
    yield table
    table.close()
    table.unlink()


# (fill reported, its age when read, what another worker reads)
AGES = [
    (0.3, 0.0, 0.3),
    (0.3, 0.05, 0.3),
    (0.0, 0.2, 0.0),
    (1.0, 0.1, 1.0),
    (0.123456, 0.0, 0.123456),  # millionths survive the packing
    (0.3, -0.01, 0.3),  # a report stamped a moment after the reader's clock read
    (0.0, BACKLOG_LATE - 0.01, 0.0),
    (0.0, BACKLOG_LATE, 1.0),  # silent: its loop stopped turning, nothing sent to it is read
    (0.2, BACKLOG_FORGET - 0.01, 1.0),
    (0.9, BACKLOG_FORGET, 0.0),  # silent for long: hung or gone, forgotten
    (0.9, 3600.0, 0.0),
    (1.7, 0.0, 1.0),  # clamped to 0-1
    (-0.5, 0.0, 0.0),
]


@pytest.mark.parametrize(("fill", "age", "read"), AGES)
def test_a_report_as_another_worker_reads_it(fill: float, age: float, read: float) -> None:
    assert peer_backlog(pack_backlog(fill, NOW), NOW + age) == pytest.approx(read, abs=1e-6)


def test_no_report_reads_as_empty() -> None:
    assert peer_backlog(0, NOW) == 0.0
    assert pack_backlog(0.0, 0.0) != 0  # a report is never taken for none


# (reports as (worker, fill, age), then what each of the 3 workers acts on with own fill 0.1)
NODE = [
    ([], [0.1, 0.1, 0.1]),
    ([(1, 0.6, 0.0)], [0.6, 0.1, 0.6]),  # its own report never counts twice: its fresh fill does
    ([(0, 0.2, 0.0), (2, 0.4, 0.0)], [0.4, 0.4, 0.2]),
    ([(2, 0.05, BACKLOG_LATE + 0.1)], [1.0, 1.0, 0.1]),
    ([(2, 0.9, BACKLOG_FORGET + 0.1)], [0.1, 0.1, 0.1]),
]


@pytest.mark.parametrize(("reports", "acted_on"), NODE)
def test_each_worker_acts_on_the_fullest_queue_of_the_node(
    counts: SharedCallCounts, reports: list[tuple[int, float, float]], acted_on: list[float]
) -> None:
    for worker, fill, age in reports:
        counts.report_backlog(worker, fill, NOW - age)
    node = [counts.node_backlog(worker, 0.1, NOW) for worker in range(3)]
    assert node == pytest.approx(acted_on)


def test_a_dead_or_stopped_worker_blocks_nothing(counts: SharedCallCounts) -> None:
    counts.report_backlog(1, 0.8, NOW)
    counts.report_backlog(2, 0.7, NOW)
    counts.clear(1)  # the parent reaped it
    counts.clear_backlog(2)  # it stopped
    assert counts.node_backlog(0, 0.0, NOW + BACKLOG_LATE + 1) == 0.0
    assert counts.backlogs(NOW) == [0.0, 0.0, 0.0]


def test_the_backlog_row_is_apart_from_calls_and_leases(counts: SharedCallCounts) -> None:
    uri = "sip:10.0.0.1:5060"
    counts.publish(2, uri, 7)
    assert counts.grant(2, uri, 10, 4) == 4
    counts.report_backlog(2, 0.5, NOW)
    assert counts.by_worker(uri) == [0, 0, 7]
    assert counts.lease(2, uri) == 4
    counts.clear_backlog(2)
    assert (counts.by_worker(uri), counts.lease(2, uri)) == ([0, 0, 7], 4)


def test_another_process_reads_the_report(counts: SharedCallCounts) -> None:
    """A forked worker reports; the parent (another worker) reads it."""
    child = multiprocessing.get_context("fork").Process(target=_report, args=(counts,))
    child.start()
    child.join(10)
    assert child.exitcode == 0
    assert counts.node_backlog(0, 0.0, NOW) == pytest.approx(0.75)


def _report(counts: SharedCallCounts) -> None:
    counts.report_backlog(1, 0.75, NOW)


# ---- the hand-over queue -------------------------------------------------------------------


def test_the_channel_is_sized_as_the_largest_listener() -> None:
    sockets = open_worker_sockets([(0, "127.0.0.1", 0, 1 << 16), (1, "127.0.0.1", 0, 1 << 17)], 2)
    try:
        listener = sockets.udp[1][0].getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        for channel in sockets.channels:
            assert channel.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) == listener
    finally:
        sockets.close()


def test_the_hand_over_queue_is_watched() -> None:
    """Frames wait on worker 1's channel socket (nothing reads it): its link reports them."""
    sockets = open_worker_sockets([(0, "127.0.0.1", 0, 1 << 16)], 2)
    link = WorkerLink(
        Member("n1", 1), sockets, on_datagram=lambda *_: None, on_control=lambda _: None
    )
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        assert link.backlog() == 0.0
        fills = []
        for _ in range(3):
            for _ in range(10):
                sender.sendto(b"x" * 500, sockets.channel_addresses[1])
            fills.append(link.backlog())
        assert 0.0 < fills[0] < fills[1] < fills[2] <= 1.0, fills
    finally:
        sender.close()
        sockets.close()


# ---- two running workers and a third one's report ------------------------------------------

CONFIG = """
[[listen]]
transport = "udp"
address = "127.0.0.1:0"

[[sets]]
name = "pbx"
destinations = [{ uri = "sip:127.0.0.1:9" }]

[health]
interval = 30.0
"""
DEADLINE = 2.0


async def _until(condition: Callable[[], bool], within: float = DEADLINE) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not condition():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def test_every_core_acts_on_another_workers_backlog(tmp_path: Path) -> None:
    """Workers 0 and 1 run; worker 2's report (written by the test) is what they act on:
    behind, late (silent), forgotten."""
    path = tmp_path / "siplb.toml"
    path.write_text(CONFIG)
    config = load_config(path)
    sockets = open_worker_sockets([(0, "127.0.0.1", 0, 1 << 16)], 3)
    counts = SharedCallCounts.create(3, threading.Lock())

    async def scene() -> None:
        workers = [
            Worker(config, worker=w, sockets=sockets, counts=counts, config_path=path)
            for w in range(2)
        ]
        for worker in workers:
            await worker.start()
        guards = [w.proxy.overload for w in workers]
        try:
            await _until(lambda: all(counts.backlogs(time.monotonic())[w] == 0.0 for w in (0, 1)))
            assert not any(g.overloaded for g in guards)
            counts.report_backlog(2, 0.6, time.monotonic())
            await _until(lambda: all(g.overloaded for g in guards))
            assert [g.backlog for g in guards] == pytest.approx([0.6, 0.6])
            assert [w.backlog for w in workers] == [0.0, 0.0]  # their own queues are empty
            reported = time.monotonic()
            counts.report_backlog(2, 0.05, reported)  # caught up: below half of 0.25
            await _until(lambda: not any(g.overloaded for g in guards))
            # then silent: full after BACKLOG_LATE, forgotten after BACKLOG_FORGET
            await _until(lambda: all(g.overloaded for g in guards))
            assert time.monotonic() - reported >= BACKLOG_LATE
            await _until(lambda: not any(g.overloaded for g in guards), BACKLOG_FORGET + DEADLINE)
            assert time.monotonic() - reported >= BACKLOG_FORGET
        finally:
            for worker in workers:
                await worker.stop()
        assert counts.backlogs(time.monotonic())[:2] == [0.0, 0.0]  # stopped: withdrawn

    try:
        asyncio.run(scene())
    finally:
        sockets.close()
        counts.close()
        counts.unlink()


def test_a_worker_reports_its_hand_over_queue(tmp_path: Path) -> None:
    """Worker 1 built, its link not started (nothing reads its channel): the frames handed to
    it wait there, and count in its report and in the figure its core is told."""
    path = tmp_path / "siplb.toml"
    path.write_text(CONFIG)
    config = load_config(path)
    sockets = open_worker_sockets([(0, "127.0.0.1", 0, 1 << 16)], 2)
    counts = SharedCallCounts.create(2, threading.Lock())
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    async def scene() -> None:
        worker = Worker(config, worker=1, sockets=sockets, counts=counts, config_path=path)
        for _ in range(30):
            sender.sendto(b"x" * 500, sockets.channel_addresses[1])
        hook = worker.balancer.driver.node_backlog
        assert hook is not None
        now = time.monotonic()
        assert hook(0.01, now) == worker.backlog > 0.1  # its listener's 0.01 is the lesser
        assert counts.backlogs(now) == pytest.approx([0.0, worker.backlog], abs=1e-6)
        assert counts.node_backlog(0, 0.0, now) == pytest.approx(worker.backlog, abs=1e-6)

    try:
        asyncio.run(scene())
    finally:
        sender.close()
        sockets.close()
        counts.close()
        counts.unlink()
