"""The resolver against a real DNS server (dnsmasq on loopback): RFC 3263 lookups, the refresh
task's last good answer when the server dies, ``siplb check``'s warnings, the example config."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from siplb.cli import main
from siplb.config import load_config
from siplb.dispatch.names import NameStatus
from siplb.dispatch.spec import Query
from siplb.io.resolver import Lookup, LookupFailed, NameResolver, make_resolver
from siplb.settings import DnsSettings

from .dnsmasq import DOMAIN, Dnsmasq, Records, SrvRecord

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
D = DOMAIN
RECORDS = Records(
    hosts=[(f"a.{D}", "127.0.0.2"), (f"b.{D}", "127.0.0.3"), (f"b.{D}", "::1")],
    srv=[
        SrvRecord(f"_sip._udp.pbx.{D}", f"a.{D}", 5070, 10, 3),
        SrvRecord(f"_sip._udp.pbx.{D}", f"b.{D}", 5071, 20, 1),
        SrvRecord(f"_sip._tcp.nap.{D}", f"a.{D}", 5080, 0, 0),
        SrvRecord(f"_sip._tcp.tcponly.{D}", f"b.{D}", 5090, 0, 0),
    ],
    naptr=[f"nap.{D},10,10,S,SIP+D2T,,_sip._tcp.nap.{D}"],
    ttl=30,
)


def settings(server: Dnsmasq, **kwargs: float) -> DnsSettings:
    return DnsSettings(servers=(("127.0.0.1", server.port),), **{"timeout": 1.0, **kwargs})


def lookup(server: Dnsmasq, query: Query) -> list[str]:
    async def run() -> list[str]:
        answer = await Lookup(make_resolver(settings(server))).run(query)
        return [target.uri for target in answer.targets]

    return asyncio.run(run())


# (query, the destinations it must give): RFC 3263 4.1 and 4.2
LOOKUP_CASES = [
    pytest.param(
        Query(f"pbx.{D}"),
        ["sip:127.0.0.2:5070", "sip:127.0.0.3:5071", "sip:[::1]:5071"],
        id="no-naptr-then-srv-udp",
    ),
    pytest.param(Query(f"nap.{D}"), ["sip:127.0.0.2:5080;transport=tcp"], id="naptr-to-tcp"),
    pytest.param(
        Query(f"tcponly.{D}"),
        ["sip:127.0.0.3:5090;transport=tcp", "sip:[::1]:5090;transport=tcp"],
        id="srv-udp-absent-tcp-used",
    ),
    pytest.param(Query(f"a.{D}", port=5099), ["sip:127.0.0.2:5099"], id="port-means-a-only"),
    pytest.param(Query(f"a.{D}"), ["sip:127.0.0.2:5060"], id="no-srv-falls-back-to-a"),
    pytest.param(
        Query(f"a.{D}", transport="tcp"), ["sip:127.0.0.2:5060;transport=tcp"], id="transport"
    ),
    pytest.param(Query(f"a.{D}", secure=True), ["sip:127.0.0.2:5061;transport=tls"], id="sips"),
    pytest.param(
        Query(f"_sip._udp.pbx.{D}", srv=True, transport="udp"),
        ["sip:127.0.0.2:5070", "sip:127.0.0.3:5071", "sip:[::1]:5071"],
        id="srv-set",
    ),
    pytest.param(Query(f"nothing.{D}"), [], id="nxdomain-is-empty"),
]


@pytest.mark.parametrize(("query", "expected"), LOOKUP_CASES)
def test_rfc3263_lookups_against_dnsmasq(
    dnsmasq: Callable[[Records], Dnsmasq], query: Query, expected: list[str]
) -> None:
    server = dnsmasq(RECORDS)
    assert lookup(server, query) == expected


def test_a_dead_server_is_a_failure_not_an_empty_answer(
    dnsmasq: Callable[[Records], Dnsmasq],
) -> None:
    server = dnsmasq(RECORDS)
    server.stop()
    with pytest.raises(LookupFailed):
        lookup(server, Query(f"a.{D}", port=5060))


def test_refresh_keeps_the_last_good_answer_when_the_server_dies(
    dnsmasq: Callable[[Records], Dnsmasq],
) -> None:
    server = dnsmasq(Records(hosts=[(f"a.{D}", "127.0.0.2")], ttl=1))
    query = Query(f"a.{D}", port=5060)
    changes: list[str] = []

    async def run() -> None:
        loop = asyncio.get_running_loop()
        resolver = NameResolver(
            settings(server, timeout=0.3, ttl_floor=0.2, ttl_ceiling=1.0),
            loop.time,
            lambda: changes.append("changed"),
        )
        resolver.track([query])
        assert await resolver.refresh()
        resolver.start()
        try:
            server.stop()
            await _until(lambda: _status(resolver) is NameStatus.STALE, 5.0)
            assert [t.uri for t in resolver.table.answers()[query].targets] == [
                "sip:127.0.0.2:5060"
            ]
            server.records = Records(hosts=[(f"a.{D}", "127.0.0.9")], ttl=1)
            await asyncio.to_thread(server.start)
            await _until(lambda: _status(resolver) is NameStatus.OK and changes != [], 5.0)
            assert [t.uri for t in resolver.table.answers()[query].targets] == [
                "sip:127.0.0.9:5060"
            ]
        finally:
            await resolver.stop()

    asyncio.run(asyncio.wait_for(run(), 20))
    assert changes == ["changed"]  # the first answer came by refresh(); one change after


def _status(resolver: NameResolver) -> NameStatus:
    (reading,) = resolver.table.readings()
    return reading.status


async def _until(condition: Callable[[], bool], within: float) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def _config(tmp_path: Path, server: str, uri: str) -> Path:
    path = tmp_path / "siplb.toml"
    path.write_text(
        '[[listen]]\naddress = "127.0.0.1:5060"\n'
        '[[sets]]\nname = "pbx"\n'
        f'destinations = [{{ uri = "{uri}" }}, {{ uri = "sip:127.0.0.1:5070" }}]\n'
        f'[[sets]]\nname = "srv"\nsrv = "_sip._udp.pbx.{D}"\n'
        f'[dns]\nservers = ["{server}"]\ntimeout = 0.5\n'
    )
    return path


def test_check_warns_about_names_that_do_not_resolve(
    dnsmasq: Callable[[Records], Dnsmasq], tmp_path: Path
) -> None:
    server = dnsmasq(RECORDS)
    result = CliRunner().invoke(
        main, ["check", "-c", str(_config(tmp_path, server.server, f"sip:nope.{D}"))]
    )
    assert result.exit_code == 0, result.output
    assert "2 destinations" not in result.stdout
    assert "1 destination, 2 DNS names" in result.stdout
    assert result.stderr.splitlines() == [
        f"warning: sets[0].destinations 'sip:nope.{D}' does not resolve: no address in the answer"
    ]


def test_check_with_the_dns_server_down_warns_and_passes(tmp_path: Path) -> None:
    path = _config(tmp_path, "127.0.0.1:9", f"sip:a.{D}:5060")  # nothing answers on port 9
    result = CliRunner().invoke(main, ["check", "-c", str(path)])
    assert result.exit_code == 0, result.output
    warnings = result.stderr.splitlines()
    assert len(warnings) == 2, warnings
    assert all(w.startswith("warning: sets[") and "does not resolve" in w for w in warnings)


def test_the_example_dns_config_is_accepted(
    dnsmasq: Callable[[Records], Dnsmasq], tmp_path: Path
) -> None:
    """``siplb check`` accepts examples/dns.toml; its names (example.com) are asked of a
    dnsmasq on loopback, never of the system's resolver, so they are warnings."""
    assert any(spec.names for spec in load_config(EXAMPLES / "dns.toml").sets)
    server = dnsmasq(RECORDS)
    text = (EXAMPLES / "dns.toml").read_text()
    local = text.replace("[dns]\n", f'[dns]\nservers = ["{server.server}"]\n', 1)
    assert local != text
    path = tmp_path / "dns.toml"
    path.write_text(local)
    result = CliRunner().invoke(main, ["check", "-c", str(path)])
    assert result.exit_code == 0, result.output
    assert "2 sets, 1 destination, 3 DNS names" in result.stdout
    assert len(result.stderr.splitlines()) == 3  # example.com names: not in this DNS server
