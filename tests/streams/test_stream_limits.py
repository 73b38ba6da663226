"""Bounds on stream connections (``siplb.io.tcp``, ``[tcp]`` settings): connection caps, deadlines
for a started message, buffered bytes, the TLS handshake timeout, and rate-limited logging.

A real pool listens on 127.0.0.1 with a tiny sink; clients are real sockets. The attacks are
those a security review measured: thousands of idle connections from one source, headers sent
a byte at a time, and half-sent 60 KB headers.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvloop

from e2e.certs import make_ca, make_leaf
from siplb.io.tcp import ConnectionPool, Refusal, log_refusal
from siplb.io.tls import server_context
from siplb.logs import RefusalLog
from siplb.proxy.actions import Target
from siplb.settings import TcpSettings, TlsFiles
from siplb.sip import FramingError, Limits, StreamFramer

LOOPBACK = "127.0.0.1"
HEAD = (
    b"OPTIONS sip:lb@127.0.0.1 SIP/2.0\r\n"
    b"Via: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bK-limits\r\n"
    b"From: <sip:probe@127.0.0.1>;tag=1\r\n"
    b"To: <sip:lb@127.0.0.1>\r\n"
    b"Call-ID: limits-1\r\n"
    b"CSeq: 1 OPTIONS\r\n"
    b"Max-Forwards: 70\r\n"
)
OPTIONS = HEAD + b"Content-Length: 0\r\n\r\n"
OK = b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n"


@dataclass
class Client:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter


@dataclass
class Lab:
    pool: ConnectionPool
    port: int
    received: list[Target] = field(default_factory=list)  # the peer of each framed message
    failed: list[Target] = field(default_factory=list)
    clients: list[Client] = field(default_factory=list)

    async def connect(
        self, source: str = LOOPBACK, *, port: int | None = None, tls: ssl.SSLContext | None = None
    ) -> Client:
        reader, writer = await asyncio.open_connection(
            LOOPBACK,
            port or self.port,
            local_addr=(source, 0),
            ssl=tls,
            server_hostname=LOOPBACK if tls else None,
        )
        client = Client(reader, writer)
        self.clients.append(client)
        return client


@asynccontextmanager
async def pool_lab(tcp: TcpSettings, tls: ssl.SSLContext | None = None) -> AsyncIterator[Lab]:
    """A pool listening on 127.0.0.1 (TLS with ``tls``); everything is closed on the way out."""
    loop = asyncio.get_running_loop()
    received: list[Target] = []
    pool = ConnectionPool(
        loop,
        Limits(),
        lambda message, peer, listener: received.append(peer),
        lambda data, error, peer, listener: received.append(peer),
        lambda target: lab.failed.append(target),
        tcp=tcp,
    )
    port = await pool.listen(LOOPBACK, 0, 0, "tls" if tls else "tcp", tls)
    lab = Lab(pool, port, received)
    try:
        yield lab
    finally:
        for client in lab.clients:
            client.writer.close()
        pool.close()
        await wait_until(lambda: pool.inbound == pool.outbound == pool.buffered == 0)


@asynccontextmanager
async def sink_server() -> AsyncIterator[tuple[int, bytearray]]:
    """A plain TCP server on 127.0.0.1 that keeps what it is sent: (port, bytes so far)."""
    got = bytearray()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            got.extend(data)
        writer.close()

    server = await asyncio.start_server(serve, LOOPBACK, 0)
    try:
        yield int(server.sockets[0].getsockname()[1]), got
    finally:
        server.close()


async def wait_until(condition: Callable[[], bool], within: float = 3.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition still false after {within} s")
        await asyncio.sleep(0.01)


async def closed_by_peer(client: Client, within: float) -> bool:
    """True when the pool closes ``client``'s connection within ``within`` seconds."""
    try:
        async with asyncio.timeout(within):
            while await client.reader.read(65536):
                pass
    except TimeoutError:
        return False
    except ConnectionError:
        pass
    return True


async def trickle(client: Client, data: bytes, interval: float) -> None:
    """Send ``data`` one byte every ``interval`` seconds, until the connection fails."""
    for i in range(len(data)):
        if client.writer.is_closing():
            return
        client.writer.write(data[i : i + 1])
        await asyncio.sleep(interval)


async def closed_after(client: Client, sending: Awaitable[None], within: float) -> float:
    """Seconds until the pool closed ``client`` while ``sending`` runs (which then stops)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    task = asyncio.ensure_future(sending)
    try:
        assert await closed_by_peer(client, within)
        assert not task.done()  # bytes were still coming
    finally:
        task.cancel()
    return loop.time() - start


def run(scenario: Coroutine[Any, Any, None]) -> None:
    asyncio.run(scenario)


# ---- connection caps -------------------------------------------------------------------------
def test_the_connection_over_max_per_source_is_closed_and_another_source_is_accepted() -> None:
    async def scenario() -> None:
        async with pool_lab(TcpSettings(max_per_source=100)) as lab:
            for _ in range(100):
                await lab.connect()
            await wait_until(lambda: lab.pool.inbound == 100)
            assert await closed_by_peer(await lab.connect(), within=2.0)
            other = await lab.connect("127.0.0.2")
            other.writer.write(OPTIONS)
            await wait_until(lambda: [peer.host for peer in lab.received] == ["127.0.0.2"])
            assert lab.pool.refused == Counter({Refusal.PER_SOURCE: 1})
            assert lab.pool.inbound == 101

    run(scenario())


def test_inbound_connections_at_their_cap_leave_outbound_ones_possible() -> None:
    async def scenario() -> None:
        tcp = TcpSettings(max_connections=3, max_outbound=1)
        async with pool_lab(tcp) as lab, sink_server() as (port, got):
            for _ in range(3):
                await lab.connect()
            await wait_until(lambda: lab.pool.inbound == 3)
            assert await closed_by_peer(await lab.connect(), within=2.0)
            lab.pool.send(OPTIONS, Target("tcp", LOOPBACK, port), 0)
            await wait_until(lambda: bytes(got) == OPTIONS)
            assert (lab.pool.inbound, lab.pool.outbound) == (3, 1)
            # max_outbound bounds our own connections: the next new one fails at once
            elsewhere = Target("tcp", "127.0.0.3", port)
            lab.pool.send(OPTIONS, elsewhere, 0)
            await wait_until(lambda: lab.failed == [elsewhere])
            assert lab.pool.refused == Counter(
                {Refusal.MAX_CONNECTIONS: 1, Refusal.MAX_OUTBOUND: 1}
            )

    run(scenario())


# ---- deadlines for a started message --------------------------------------------------------
def test_a_header_sent_a_byte_at_a_time_is_closed_at_header_timeout() -> None:
    async def scenario() -> None:
        async with pool_lab(TcpSettings(header_timeout=1.0)) as lab:
            quiet = await lab.connect()
            quiet.writer.write(OPTIONS + b"\r\n")  # a message and half a keep-alive: idle
            await wait_until(lambda: len(lab.received) == 1)
            slow = await lab.connect()
            elapsed = await closed_after(slow, trickle(slow, HEAD * 10, 0.2), within=3.0)
            assert 0.9 <= elapsed <= 2.5
            assert lab.pool.refused == Counter({Refusal.HEADER_TIMEOUT: 1})
            await wait_until(lambda: lab.pool.inbound == 1)
            assert not quiet.writer.is_closing()

    run(scenario())


def test_a_body_sent_a_byte_at_a_time_is_closed_at_message_timeout() -> None:
    async def scenario() -> None:
        async with pool_lab(TcpSettings(header_timeout=1.0, message_timeout=2.0)) as lab:
            slow = await lab.connect()
            slow.writer.write(HEAD + b"Content-Length: 100\r\n\r\n")

            elapsed = await closed_after(slow, trickle(slow, b"x" * 100, 0.2), within=4.0)
            assert 1.9 <= elapsed <= 3.5
            assert lab.pool.refused == Counter({Refusal.MESSAGE_TIMEOUT: 1})

    run(scenario())


# what is buffered -> (a message has begun, its header block is whole)
PARTIAL = [
    (b"", (False, False)),
    (b"\r", (False, False)),
    (b"\r\n", (False, False)),  # maybe a CRLF CRLF keep-alive (RFC 5626 3.5.1)
    (b"\r\n\r", (False, False)),
    (b"\r\nO", (True, False)),
    (HEAD, (True, False)),
    (HEAD + b"Content-Length: 3\r\n\r\nab", (True, True)),
]


@pytest.mark.parametrize(("data", "expected"), PARTIAL)
def test_the_framer_tells_a_begun_message_from_half_a_keepalive(
    data: bytes, expected: tuple[bool, bool]
) -> None:
    framer = StreamFramer()
    framer.feed(data)
    assert (framer.in_message, framer.in_body) == expected


# ---- buffered bytes --------------------------------------------------------------------------
ENDLESS_HEADER = HEAD + b"X-Pad: " + b"a" * 70_000
ENDLESS_BODY = HEAD + b"Content-Length: 70000\r\n\r\n" + b"a" * 70_000
# name -> what a connection sends, in pieces: more than a message may hold, never complete
OVERSIZED = {
    "header at once": [ENDLESS_HEADER],
    "header in 1000-byte pieces": [ENDLESS_HEADER[i : i + 1000] for i in range(0, 71_000, 1000)],
    "header after a whole message": [OPTIONS + ENDLESS_HEADER],
    "body in 1000-byte pieces": [ENDLESS_BODY[i : i + 1000] for i in range(0, 71_000, 1000)],
}


@pytest.mark.parametrize("pieces", OVERSIZED.values(), ids=OVERSIZED.keys())
def test_one_connection_never_buffers_more_than_the_largest_message(pieces: list[bytes]) -> None:
    limits = Limits()
    framer = StreamFramer(limits)
    error = None
    for piece in pieces:
        try:
            framer.feed(piece)
        except FramingError as exc:
            error = exc
            break
        assert framer.buffered <= limits.max_message_size
    assert error is not None
    assert error.status_hint == 513


def test_half_sent_headers_keep_the_total_under_max_buffered() -> None:
    async def scenario() -> None:
        async with pool_lab(TcpSettings(max_buffered=100_000)) as lab:
            peak = 0
            clients = [await lab.connect() for _ in range(20)]
            for client in clients:
                client.writer.write(HEAD + b"X-Pad: " + b"a" * 30_000)

            def settled() -> bool:
                nonlocal peak
                peak = max(peak, lab.pool.buffered)
                return lab.pool.refused[Refusal.BUFFERED] >= 17  # 3 x 30 KB fit, no more

            await wait_until(settled)
            assert peak <= 100_000
            assert 0 < lab.pool.buffered <= 100_000
            assert lab.pool.refused == Counter({Refusal.BUFFERED: 17})
            await wait_until(lambda: lab.pool.inbound == 3)

    run(scenario())


# ---- TLS -------------------------------------------------------------------------------------
LOOPS: list[Callable[[], asyncio.AbstractEventLoop]] = [
    asyncio.new_event_loop,
    uvloop.new_event_loop,
]


@pytest.mark.parametrize("loop_factory", LOOPS, ids=["asyncio", "uvloop"])
def test_a_silent_tls_client_is_closed_at_the_handshake_timeout(
    tmp_path: Path, loop_factory: Callable[[], asyncio.AbstractEventLoop]
) -> None:
    ca = make_ca(tmp_path)
    leaf = make_leaf(tmp_path, ca, "server", ip=LOOPBACK)
    context = server_context(TlsFiles(leaf.cert, leaf.key), verify_client=False)
    phone_context = ssl.create_default_context(cafile=str(ca.cert))

    async def scenario() -> None:
        async with pool_lab(TcpSettings(tls_handshake_timeout=1.0), context) as lab:
            silent = await lab.connect()
            elapsed = await closed_after(silent, asyncio.sleep(5.0), within=3.0)
            assert 0.9 <= elapsed <= 2.5
            garbage = await lab.connect()
            garbage.writer.write(OPTIONS)  # SIP where a ClientHello belongs
            assert await closed_by_peer(garbage, within=2.0)
            # a TLS client is served, and answered over its connection
            phone = await lab.connect(tls=phone_context)
            phone.writer.write(OPTIONS)
            await wait_until(lambda: len(lab.received) == 1)
            lab.pool.send(OK, lab.received[0], 0)
            assert await asyncio.wait_for(phone.reader.readexactly(len(OK)), 2.0) == OK
            await wait_until(lambda: lab.pool.inbound == 1)
            assert lab.pool.refused == Counter({Refusal.TLS_HANDSHAKE: 1, Refusal.TLS_FAILED: 1})

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(scenario())


# ---- logging ---------------------------------------------------------------------------------
def test_refusals_are_logged_once_per_reason_every_ten_seconds(
    caplog: pytest.LogCaptureFixture,
) -> None:
    refusals = RefusalLog()
    with caplog.at_level(logging.WARNING, logger="siplb.tcp"):
        for now in (0.0, 1.0, 2.0, 9.9):
            log_refusal(refusals, Refusal.PER_SOURCE, f"per source at {now}", now)
        log_refusal(refusals, Refusal.BUFFERED, "buffered at 3.0", 3.0)
        log_refusal(refusals, Refusal.PER_SOURCE, "per source at 10.0", 10.0)
    assert [record.getMessage() for record in caplog.records] == [
        "per source at 0.0",
        "buffered at 3.0",
        "per source at 10.0 (3 more since the last such line)",
    ]
