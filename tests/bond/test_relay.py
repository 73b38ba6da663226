"""The bond's sockets (siplb/io/bond.py) on loopback: a client with two links and a server
carry datagrams to an echo target and back, the server answers from the address each link
used (``IP_PKTINFO`` on a wildcard socket), and the status port gives JSON and metrics."""

from __future__ import annotations

import asyncio
import json
import socket

import pytest

from siplb.bond import FlowPolicy, HealthSettings, Mode
from siplb.config.bond import BondClientConfig, BondFlow, BondLink, BondServerConfig
from siplb.io.bond import ClientRelay, ServerRelay, fetch_status, metrics_text, serve_status

KEY = bytes(range(32))
HEALTH = HealthSettings()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(b"echo " + data, addr)  # type: ignore[attr-defined]


class App(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.put_nowait(data)


@pytest.mark.parametrize("mode", list(Mode))
def test_datagrams_go_through_and_back(mode: Mode) -> None:
    asyncio.run(through_and_back(mode))


async def through_and_back(mode: Mode) -> None:
    loop = asyncio.get_running_loop()
    echo, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
    target_port = echo.get_extra_info("sockname")[1]
    policy = FlowPolicy(mode)
    server = ServerRelay(
        loop,
        BondServerConfig(
            listen=(("0.0.0.0", 0),),
            keys={5: KEY},
            names={5: "site"},
            flows=(BondFlow(1, "rtp", policy, "127.0.0.1", (target_port,)),),
            health=HEALTH,
            status=("127.0.0.1", 0),
        ),
    )
    server.open()
    port = server.addresses()[0][1]
    local_port = free_port()
    client = ClientRelay(
        loop,
        BondClientConfig(
            client=5,
            key=KEY,
            links=(
                BondLink(1, "a", "127.0.0.1", None, 1, ("127.0.0.1", port)),
                BondLink(2, "b", "127.0.0.1", None, 1, ("127.0.0.2", port)),
                BondLink(3, "c", "127.0.0.1", None, 1, ("127.0.0.3", port)),
            ),
            flows=(BondFlow(1, "rtp", policy, "127.0.0.1", (local_port,)),),
            health=HEALTH,
            status=("127.0.0.1", 0),
        ),
    )
    client.open()
    app_transport, app = await loop.create_datagram_endpoint(App, local_addr=("127.0.0.1", 0))
    try:
        await asyncio.sleep(0.1)  # hellos and welcomes
        for i in range(30):
            app_transport.sendto(b"%d" % i, ("127.0.0.1", local_port))
            await asyncio.sleep(0.002)
        answers = {await asyncio.wait_for(app.received.get(), 2.0) for _ in range(30)}
        assert answers == {b"echo %d" % i for i in range(30)}
        await asyncio.sleep(0.05)
        assert app.received.empty()  # no duplicate reached the application
        status = server.status()
        site = status["clients"][0]
        vias = sorted(link["remote"].split(" via ")[1] for link in site["links"])
        assert vias == ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
        assert [link["state"] for link in client.status()["links"]] == ["up"] * 3
        if mode is Mode.REDUNDANT:
            assert site["duplicates"] >= 30
    finally:
        app_transport.close()
        client.close()
        server.close()
        echo.close()


def test_the_status_port_serves_json_and_metrics() -> None:
    asyncio.run(status_port())


async def status_port() -> None:
    loop = asyncio.get_running_loop()
    document = {
        "role": "client",
        "client": 3,
        "links": [
            {
                "name": "dsl",
                "state": "up",
                "rtt_ms": 21.5,
                "loss": 0.0,
                "bytes_sent": 10,
                "bytes_received": 20,
                "packets_sent": 1,
                "packets_received": 2,
            }
        ],
        "delivered": 4,
        "duplicates": 0,
        "recovered": 1,
        "rebuilt_early": 0,
        "dropped": 0,
        "reorder_skipped": 0,
        "reorder_late": 0,
    }
    server = await serve_status("127.0.0.1", 0, lambda: document)
    port = server.sockets[0].getsockname()[1]
    try:
        body = await loop.run_in_executor(None, fetch_status, "127.0.0.1", port)
        metrics = await loop.run_in_executor(None, fetch_status, "127.0.0.1", port, "/metrics")
    finally:
        server.close()
    assert json.loads(body) == document
    assert metrics.decode() == metrics_text(document)
    assert 'siplb_bond_link_rtt_seconds{client="3",link="dsl"} 0.0215' in metrics.decode()
    assert 'siplb_bond_recovered_total{client="3"} 1' in metrics.decode()
