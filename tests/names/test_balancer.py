"""A balancer in this process with its names resolved by a real dnsmasq: answers installed like a
reload, a reload composed with the answers in hand, operators' weights kept across a refresh,
a name's drain reaching the addresses a later answer adds, trust of resolved addresses only."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from siplb.app import Balancer
from siplb.config import load_config
from siplb.dispatch import AdminState

from .dnsmasq import DOMAIN, Dnsmasq, Records, SrvRecord

D = DOMAIN
SRV = f"_sip._udp.pbx.{D}"


def write(path: Path, server: Dnsmasq, extra_dest: str = "") -> None:
    dests = f'destinations = [{{ uri = "{extra_dest}" }}]\n' if extra_dest else ""
    path.write_text(
        '[[listen]]\naddress = "127.0.0.1:0"\n'
        f'[[sets]]\nname = "pbx"\nsrv = "{SRV}"\n{dests}'
        "[health]\ninterval = 30.0\ntimeout = 0.5\n"
        f'[dns]\nservers = ["{server.server}"]\ntimeout = 0.5\nttl_floor = 0.2\nttl_ceiling = 1\n'
    )


def records(*targets: tuple[str, int, int]) -> Records:
    """SRV records of the set: (address, port, weight), priority 10, each its own host name."""
    hosts = [(f"h{i}.{D}", address) for i, (address, _, _) in enumerate(targets)]
    srv = [
        SrvRecord(SRV, f"h{i}.{D}", port, 10, weight) for i, (_, port, weight) in enumerate(targets)
    ]
    return Records(hosts=hosts, srv=srv, ttl=1)


def uris(balancer: Balancer) -> dict[str, int]:
    assert balancer.proxy is not None
    return {d.uri: d.spec.weight for d in balancer.proxy.dispatcher.destinations("pbx")}


async def until(condition: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def test_answers_reloads_weights_and_trust(
    dnsmasq: Callable[[Records], Dnsmasq], tmp_path: Path
) -> None:
    server = dnsmasq(records(("127.0.0.2", 5070, 1), ("127.0.0.3", 5071, 1)))
    path = tmp_path / "siplb.toml"
    write(path, server)
    a, b, c = "sip:127.0.0.2:5070", "sip:127.0.0.3:5071", "sip:127.0.0.4:5072"

    async def run() -> None:
        balancer = Balancer(load_config(path), config_path=path)
        await balancer.start()
        proxy = balancer.proxy
        assert proxy is not None
        try:
            assert uris(balancer) == {a: 1, b: 1}  # the first answer was waited for at start
            assert proxy.is_trusted("127.0.0.2")
            assert not proxy.is_trusted("127.0.0.4")

            # An operator's weight, then a drain of the whole name.
            balancer.set_weight("pbx", a, 7, "test")
            balancer.set_admin_state("pbx", SRV, AdminState.DRAINING, "test")
            assert proxy.dispatcher.health.admin(b) is AdminState.DRAINING

            # The answer changes (b's weight, a third target): installed like a reload.
            await asyncio.to_thread(
                server.restart,
                records(("127.0.0.2", 5070, 1), ("127.0.0.3", 5071, 5), ("127.0.0.4", 5072, 1)),
            )
            await until(lambda: c in uris(balancer))
            assert uris(balancer) == {a: 7, b: 5, c: 1}  # a: the operator's, b: the record's
            assert proxy.is_trusted("127.0.0.4")
            assert proxy.dispatcher.health.admin(c) is AdminState.DRAINING  # the name's drain

            # DNS dies; a reload adds a configured destination and keeps the answers in hand.
            server.stop()
            write(path, server, extra_dest="sip:127.0.0.9:5090")
            outcome = balancer.reload_file("test")
            assert outcome.ok, outcome
            assert set(uris(balancer)) == {a, b, c, "sip:127.0.0.9:5090"}
            await until(lambda: balancer.dns_names()[0].status.value == "stale")
            assert set(uris(balancer)) == {a, b, c, "sip:127.0.0.9:5090"}
        finally:
            await balancer.stop(grace=0)

    asyncio.run(asyncio.wait_for(run(), 30))
