"""The capture's sender (``siplb.io.capture``) against real sockets on loopback: HEP over UDP
and TCP arrives whole; a dead collector and a full queue drop and count, and never grow."""

from __future__ import annotations

import asyncio
import socket
from collections import Counter
from collections.abc import Awaitable, Callable

from siplb.io.capture import BATCH, Capture
from siplb.settings import CaptureSettings

from .test_hep import by_type

CALL = (
    b"INVITE sip:bob@127.0.0.1 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\n"
    b"Call-ID: sender-test\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Content-Length: 0\r\n\r\n"
)
BYE = CALL.replace(b"INVITE", b"BYE")
WAIT = 3.0
CALLER, LOCAL, CALLEE = ("127.0.0.1", 5070), ("127.0.0.1", 5060), ("127.0.0.1", 5080)


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 10))


async def until(condition: Callable[[], bool]) -> None:
    """Let the loop run until ``condition`` holds; fails after ``WAIT`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while not condition():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


def collector() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock


def received(sock: socket.socket) -> list[bytes]:
    out = []
    while True:
        try:
            out.append(sock.recv(70000))
        except BlockingIOError:
            return out


def test_received_and_sent_reach_a_udp_collector() -> None:
    async def test() -> None:
        sock = collector()
        stats: Counter[str] = Counter()
        settings = CaptureSettings("127.0.0.1", sock.getsockname()[1], node_id=9, node_name="lb")
        capture = Capture(asyncio.get_running_loop(), settings, stats)
        capture.received(CALL, "udp", CALLER, LOCAL)
        capture.sent(CALL, "tcp", ("127.0.0.1", 40000), CALLEE)
        capture.sent(b"\r\n\r\n", "tcp", ("127.0.0.1", 40000), CALLEE)  # a keep-alive
        packets: list[bytes] = []

        def two() -> bool:
            packets.extend(received(sock))
            return len(packets) >= 2

        await until(two)
        capture.close()
        first, second = (by_type(packet) for packet in packets)
        assert first[15] == CALL
        assert (first[3], first[4]) == (bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1]))
        assert (first[7], first[8]) == ((5070).to_bytes(2, "big"), (5060).to_bytes(2, "big"))
        assert (first[2], second[2]) == (bytes([17]), bytes([6]))
        assert (second[7], second[8]) == ((40000).to_bytes(2, "big"), (5080).to_bytes(2, "big"))
        assert first[12] == (9).to_bytes(4, "big")
        assert first[17] == b"sender-test"
        assert first[19] == b"lb"
        assert stats == Counter({"capture_sent": 2})
        sock.close()

    run(test)


def test_what_and_methods_filter() -> None:
    async def test() -> None:
        sock = collector()
        stats: Counter[str] = Counter()
        settings = CaptureSettings(
            "127.0.0.1",
            sock.getsockname()[1],
            what=frozenset({"sent"}),
            methods=frozenset({"BYE"}),
        )
        capture = Capture(asyncio.get_running_loop(), settings, stats)
        capture.received(BYE, "udp", CALLER, LOCAL)  # not sent: only "sent" is captured
        capture.sent(CALL, "udp", LOCAL, CALLEE)  # not sent: an INVITE
        capture.sent(BYE, "udp", LOCAL, CALLEE)
        await until(lambda: capture.waiting == 0)
        await until(lambda: stats["capture_sent"] == 1)
        packets = received(sock)
        assert [by_type(packet)[15] for packet in packets] == [BYE]
        capture.close()
        sock.close()

    run(test)


def test_a_dead_collector_drops_and_counts() -> None:
    async def test() -> None:
        sock = collector()
        port = sock.getsockname()[1]
        sock.close()  # nobody there: each send meets an ICMP port unreachable
        stats: Counter[str] = Counter()
        capture = Capture(asyncio.get_running_loop(), CaptureSettings("127.0.0.1", port), stats)
        for round_ in range(20):
            for _ in range(10):
                capture.received(CALL, "udp", CALLER, LOCAL)
            await until(lambda: capture.waiting == 0)
            assert capture.waiting == 0, round_
        assert sum(stats.values()) == 200
        # The refusal of one send is reported by the next: about half are dropped as such.
        assert stats["capture_dropped:unreachable"] >= 50, stats
        assert set(stats) <= {"capture_sent", "capture_dropped:unreachable"}, stats
        capture.close()

    run(test)


def test_a_full_queue_drops_and_counts() -> None:
    async def test() -> None:
        sock = collector()
        stats: Counter[str] = Counter()
        settings = CaptureSettings("127.0.0.1", sock.getsockname()[1], queue=BATCH + 10)
        capture = Capture(asyncio.get_running_loop(), settings, stats)
        for _ in range(5 * BATCH):  # all in one turn of the loop: the sender has not run
            capture.received(CALL, "udp", CALLER, LOCAL)
        assert capture.waiting == BATCH + 10
        assert stats["capture_dropped:queue_full"] == 4 * BATCH - 10
        await until(lambda: capture.waiting == 0)
        await until(lambda: stats["capture_sent"] == BATCH + 10)
        capture.close()
        sock.close()

    run(test)


def test_a_message_too_large_for_hep_is_counted() -> None:
    async def test() -> None:
        sock = collector()
        stats: Counter[str] = Counter()
        capture = Capture(
            asyncio.get_running_loop(), CaptureSettings("127.0.0.1", sock.getsockname()[1]), stats
        )
        capture.received(CALL + b"x" * 70000, "tcp", CALLER, LOCAL)
        await until(lambda: stats["capture_dropped:too_large"] == 1)
        capture.close()
        sock.close()

    run(test)


def test_a_tcp_collector_gets_packets_back_to_back_and_a_lost_one_drops() -> None:
    async def test() -> None:
        chunks: list[bytes] = []
        connected = asyncio.Event()

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            connected.set()
            while data := await reader.read(65536):
                chunks.append(data)
            writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        stats: Counter[str] = Counter()
        settings = CaptureSettings("127.0.0.1", port, transport="tcp")
        capture = Capture(asyncio.get_running_loop(), settings, stats)
        await asyncio.wait_for(connected.wait(), 3)
        await until(lambda: capture.sender.transport is not None)  # type: ignore[union-attr]
        for _ in range(3):
            capture.received(CALL, "tcp", CALLER, LOCAL)
        await until(lambda: len(b"".join(chunks)) >= 3 * len(CALL))
        stream = b"".join(chunks)
        packets = []
        while stream:
            size = int.from_bytes(stream[4:6], "big")
            packets.append(stream[:size])
            stream = stream[size:]
        assert [by_type(packet)[15] for packet in packets] == [CALL] * 3
        assert stats == Counter({"capture_sent": 3})
        server.close()
        await server.wait_closed()
        capture.sender.close()  # the connection is gone: what follows is not connected
        capture.received(CALL, "tcp", CALLER, LOCAL)
        await until(lambda: stats["capture_dropped:not_connected"] == 1)
        capture.close()

    run(test)


def test_reconfigure_moves_to_another_collector() -> None:
    async def test() -> None:
        first, second = collector(), collector()
        stats: Counter[str] = Counter()
        loop = asyncio.get_running_loop()
        capture = Capture(loop, CaptureSettings("127.0.0.1", first.getsockname()[1]), stats)
        capture.received(CALL, "udp", CALLER, LOCAL)
        await until(lambda: stats["capture_sent"] == 1)
        capture.reconfigure(CaptureSettings("127.0.0.1", second.getsockname()[1], node_id=5))
        capture.received(BYE, "udp", CALLER, LOCAL)
        await until(lambda: stats["capture_sent"] == 2)
        assert [by_type(p)[15] for p in received(first)] == [CALL]
        assert [by_type(p)[12] for p in received(second)] == [(5).to_bytes(4, "big")]
        capture.close()
        first.close()
        second.close()

    run(test)
