"""Destinations by DNS name end to end: a real ``siplb run``, a real DNS server (dnsmasq on
loopback, started here), real SIPp callers and callees on 127.0.0.x.

- SRV priorities and weights are honoured (the share of each callee is measured);
- an A record changed during a SIPp run moves the new calls, and no call fails;
- a dead DNS server changes nothing (the last good answer stays, the API says "stale");
- a name that does not resolve at start leaves its set empty until DNS answers.

The figures are printed: ``.venv/bin/pytest -s tests/names/test_e2e.py``.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from e2e.balancer import SiplbProcess
from e2e.conftest import SippLauncher
from e2e.harness import free_port

from .conftest import start_named_siplb
from .dnsmasq import DOMAIN, Dnsmasq, Records, SrvRecord

pytestmark = pytest.mark.e2e

D = DOMAIN
SRV_NAME = f"_sip._udp.pbx.{D}"


def wait_for(condition: Callable[[], Any], within: float, what: str) -> Any:
    """Poll ``condition`` until it returns something true; fail past ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"not within {within} s: {what}")
        time.sleep(0.05)


def destinations(lb: SiplbProcess) -> dict[str, dict[str, Any]]:
    status, body = lb.api("GET", "/api/sets")
    assert status == 200, body
    return {d["uri"]: d for s in body["sets"] for d in s["destinations"]}  # type: ignore[index]


def dns_status(lb: SiplbProcess) -> list[dict[str, Any]]:
    status, body = lb.api("GET", "/api/status")
    assert status == 200, body
    return body["dns"]  # type: ignore[index,no-any-return]


def all_up(lb: SiplbProcess, uris: set[str]) -> bool:
    found = destinations(lb)
    return set(found) == uris and all(found[u]["state"] == "up" for u in uris)


def port_free_on(hosts: list[str]) -> int:
    """A UDP port free on every one of ``hosts`` (callees on several loopback addresses)."""
    for _ in range(50):
        port = free_port(hosts[0])
        if all(_bindable(host, port) for host in hosts[1:]):
            return port
    raise AssertionError(f"no port free on all of {hosts}")


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def dns_section(server: Dnsmasq, floor: float = 0.5, ceiling: float = 2.0) -> str:
    return f'servers = ["{server.server}"]\ntimeout = 0.5\nttl_floor = {floor}\nttl_ceiling = {ceiling}'


def test_srv_priorities_and_weights_are_honoured(
    sipp: SippLauncher,
    dnsmasq: Callable[[Records], Dnsmasq],
    e2e_workdir: Path,
    balancers: list[SiplbProcess],
) -> None:
    a = sipp.uas(host="127.0.0.2")
    b = sipp.uas(host="127.0.0.3")
    c = sipp.uas(host="127.0.0.4")
    server = dnsmasq(
        Records(
            hosts=[(f"a.{D}", a.host), (f"b.{D}", b.host), (f"c.{D}", c.host)],
            srv=[
                SrvRecord(SRV_NAME, f"a.{D}", a.port, priority=10, weight=3),
                SrvRecord(SRV_NAME, f"b.{D}", b.port, priority=10, weight=1),
                SrvRecord(SRV_NAME, f"c.{D}", c.port, priority=20, weight=1),  # the backup
            ],
            ttl=30,
        )
    )
    lb = start_named_siplb(e2e_workdir, f'srv = "{SRV_NAME}"', dns_section(server, 5.0, 60.0))
    balancers.append(lb)
    uris = {a.sip_uri, b.sip_uri, c.sip_uri}
    wait_for(lambda: all_up(lb, uris), 10.0, "the three SRV targets up")
    found = destinations(lb)
    assert {u: (found[u]["priority"], found[u]["weight"]) for u in uris} == {
        a.sip_uri: (10, 3),
        b.sip_uri: (10, 1),
        c.sip_uri: (20, 1),
    }
    assert {found[u]["name"] for u in uris} == {SRV_NAME}

    calls = 200
    result = sipp.run_uac(lb.address, calls=calls, rate=50, duration_ms=100, timeout_s=60)
    assert result.stats.successful_calls == calls, result.describe()
    assert result.stats.failed_calls == 0, result.describe()
    got = {u: int(destinations(lb)[u]["calls_total"]) for u in uris}
    share_a = got[a.sip_uri] / calls
    print(f"\nSRV 10/3, 10/1, 20/1: calls {got[a.sip_uri]}, {got[b.sip_uri]}, {got[c.sip_uri]}")
    print(f"share of the weight-3 target: {share_a:.3f} (expected 0.75)")
    assert got[c.sip_uri] == 0, got  # a worse priority takes nothing while the best level is up
    assert 0.70 <= share_a <= 0.80, got

    # The best level gone, the backup's priority takes every call.
    a.stop()
    b.stop()
    wait_for(
        lambda: {destinations(lb)[u]["state"] for u in (a.sip_uri, b.sip_uri)} == {"down"},
        10.0,
        "the priority-10 targets down",
    )
    more = sipp.run_uac(lb.address, calls=20, rate=20, duration_ms=100, timeout_s=30)
    assert more.stats.successful_calls == 20, more.describe()
    assert int(destinations(lb)[c.sip_uri]["calls_total"]) == 20


def test_a_record_changed_during_calls_moves_new_calls_without_failure(
    sipp: SippLauncher,
    dnsmasq: Callable[[Records], Dnsmasq],
    e2e_workdir: Path,
    balancers: list[SiplbProcess],
) -> None:
    port = port_free_on(["127.0.0.2", "127.0.0.3"])
    old = sipp.uas(host="127.0.0.2", port=port)
    new = sipp.uas(host="127.0.0.3", port=port)
    server = dnsmasq(Records(hosts=[(f"pbx1.{D}", old.host)], ttl=1))
    uri = f"sip:pbx1.{D}:{port}"
    lb = start_named_siplb(
        e2e_workdir, f'destinations = [{{ uri = "{uri}" }}]', dns_section(server)
    )
    balancers.append(lb)
    wait_for(lambda: all_up(lb, {old.sip_uri}), 10.0, f"{old.sip_uri} up")
    assert destinations(lb)[old.sip_uri]["name"] == uri

    calls, rate = 300, 30
    uac = sipp.uac(lb.address, calls=calls, rate=rate, duration_ms=1000, timeout_s=60)
    wait_for(lambda: int(destinations(lb)[old.sip_uri]["calls_total"]) >= 60, 15.0, "60 calls on A")
    server.set_hosts([(f"pbx1.{D}", new.host)])  # the record changes; dnsmasq keeps answering
    changed_at = time.monotonic()
    wait_for(lambda: new.sip_uri in destinations(lb), 5.0, f"{new.sip_uri} in the set")
    switch = time.monotonic() - changed_at
    during = destinations(lb)
    old_at_switch = int(during[old.sip_uri]["calls_total"]) if old.sip_uri in during else -1
    if old.sip_uri in during:  # still carrying calls: removed and draining, like in a reload
        assert during[old.sip_uri]["removed"] is True, during
        assert during[old.sip_uri]["state"] in ("draining", "drained"), during

    result = uac.wait(60)
    received = [u.stop().stats.calls_received for u in (old, new)]
    print(
        f"\nA record changed mid-run: the new address joined {switch:.2f} s later "
        f"(TTL 1 s); calls to old/new {received}; failed {result.stats.failed_calls}"
    )
    assert result.stats.successful_calls == calls, result.describe()
    assert result.stats.failed_calls == 0, result.describe()
    assert sum(received) == calls, received
    assert received[1] >= 100, received  # the calls after the change went to the new address
    assert received[0] <= old_at_switch + rate * 0.5, (received, old_at_switch)
    wait_for(
        lambda: old.sip_uri not in destinations(lb),
        10.0,
        "the old address gone once its last call ended",
    )
    after = destinations(lb)
    assert set(after) == {new.sip_uri}, after
    _status, events = lb.api("GET", "/api/events?limit=500")
    dns_events = [e for e in events["events"] if e["kind"] == "dns"]  # type: ignore[index]
    assert any(new.sip_uri in e["message"] for e in dns_events), dns_events


def test_a_dead_dns_server_changes_nothing(
    sipp: SippLauncher,
    dnsmasq: Callable[[Records], Dnsmasq],
    e2e_workdir: Path,
    balancers: list[SiplbProcess],
) -> None:
    a = sipp.uas(host="127.0.0.2")
    b = sipp.uas(host="127.0.0.3")
    records = Records(
        hosts=[(f"a.{D}", a.host), (f"b.{D}", b.host)],
        srv=[
            SrvRecord(SRV_NAME, f"a.{D}", a.port, priority=10, weight=1),
            SrvRecord(SRV_NAME, f"b.{D}", b.port, priority=10, weight=1),
        ],
        ttl=1,
    )
    server = dnsmasq(records)
    lb = start_named_siplb(e2e_workdir, f'srv = "{SRV_NAME}"', dns_section(server))
    balancers.append(lb)
    uris = {a.sip_uri, b.sip_uri}
    wait_for(lambda: all_up(lb, uris), 10.0, "both SRV targets up")

    calls = 200
    uac = sipp.uac(lb.address, calls=calls, rate=40, duration_ms=500, timeout_s=60)
    wait_for(
        lambda: sum(int(destinations(lb)[u]["calls_total"]) for u in uris) >= 40, 15.0, "calls"
    )
    server.stop()  # by PID: no server on the port any more
    stale = wait_for(
        lambda: [d for d in dns_status(lb) if d["status"] == "stale"], 5.0, "DNS status stale"
    )
    assert stale[0]["name"] == SRV_NAME
    assert sorted(stale[0]["addresses"]) == sorted(uris)
    assert stale[0]["error"], stale
    before = {u: int(destinations(lb)[u]["calls_total"]) for u in uris}
    result = uac.wait(60)
    after = destinations(lb)
    print(
        f"\nDNS server stopped mid-run: calls failed {result.stats.failed_calls}, "
        f"calls per target after the stop "
        f"{[int(after[u]['calls_total']) - before[u] for u in sorted(uris)]}"
    )
    assert result.stats.successful_calls == calls, result.describe()
    assert result.stats.failed_calls == 0, result.describe()
    assert set(after) == uris, after
    assert all(int(after[u]["calls_total"]) > before[u] for u in uris), (before, after)
    warned = [
        line for line in lb.log_lines() if "keeping the last good answer" in line.get("msg", "")
    ]
    assert len(warned) == 1, warned  # said once, not on every retry

    server.start()  # the same records again: the status comes back, nothing moves
    wait_for(lambda: dns_status(lb)[0]["status"] == "ok", 5.0, "DNS status ok again")
    assert set(destinations(lb)) == uris


def test_a_name_unresolved_at_start_fills_in_when_dns_answers(
    sipp: SippLauncher,
    dnsmasq: Callable[[Records], Dnsmasq],
    e2e_workdir: Path,
    balancers: list[SiplbProcess],
) -> None:
    callee = sipp.uas(host="127.0.0.2")
    uri = f"sip:pbx1.{D}:{callee.port}"
    server = Dnsmasq(e2e_workdir, Records(hosts=[(f"pbx1.{D}", callee.host)], ttl=30))
    try:  # not started yet: nothing answers on its port
        lb = start_named_siplb(
            e2e_workdir, f'destinations = [{{ uri = "{uri}" }}]', dns_section(server, 0.5, 60.0)
        )
        balancers.append(lb)
        assert destinations(lb) == {}
        (name,) = dns_status(lb)
        assert (name["name"], name["status"], name["addresses"]) == (uri, "unresolved", [])
        refused = sipp.run_uac(lb.address, calls=1, rate=1, duration_ms=100, timeout_s=10)
        assert refused.stats.successful_calls == 0  # no destination yet: the call is refused

        server.start()
        wait_for(lambda: all_up(lb, {callee.sip_uri}), 10.0, "the name resolved, its address up")
        result = sipp.run_uac(lb.address, calls=10, rate=10, duration_ms=100, timeout_s=30)
        assert result.stats.successful_calls == 10, result.describe()
        assert dns_status(lb)[0]["status"] == "ok"

        # An admin action on the name acts on each of its addresses.
        action = f"/api/sets/pbx/destinations/{quote(uri, safe='')}"
        status, body = lb.api("POST", f"{action}/drain")
        assert status == 200, body
        assert body["name"] == uri  # type: ignore[index]
        assert [d["uri"] for d in body["destinations"]] == [callee.sip_uri]  # type: ignore[index]
        assert destinations(lb)[callee.sip_uri]["admin"] == "draining"
        status, body = lb.api("POST", f"{action}/enable")
        assert status == 200, body
        assert destinations(lb)[callee.sip_uri]["admin"] is None
    finally:
        server.stop()
