"""Three siplb nodes sharing state through a real Redis (and Sentinel), proven with SIPp.

Nodes n1, n2, n3 listen on 127.0.0.11-13 in front of the same SIPp callees; SIPp callers are
spread over them. Every count and time is bounded; every process is stopped by PID.
"""

from __future__ import annotations

import signal
import socket
import sys
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from siplb.cluster import Member
from siplb.cluster.channel import Sealer

from .balancer import ADMIN_TOKEN, SiplbProcess
from .cluster import (
    SECRET,
    cluster_section,
    cluster_view,
    live_nodes,
    node_host,
    start_node,
    wait_for,
)
from .conftest import SippLauncher
from .harness import free_port
from .test_dashboard import browser  # noqa: F401 (the module's Chromium fixture)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "redis"))
from redis_servers import RedisServer, SentinelGroup, redis_available, running_redis

pytestmark = pytest.mark.e2e

NODES = 3
TAKEOVER_S = 1.0  # dead_after 0.7 + one heartbeat 0.2, and the API poll
SLACK_S = 0.5  # a loaded 2-core machine


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    with running_redis(tmp_path / "redis") as server:
        yield server


@pytest.fixture
def nodes() -> Iterator[list[SiplbProcess]]:
    started: list[SiplbProcess] = []
    yield started
    for node in started:
        if node.running():
            code = node.stop()
            assert code == 0, f"siplb exited with {code} on SIGTERM\n{node.log_tail()}"


def _start_cluster(
    workdir: Path,
    nodes: list[SiplbProcess],
    destinations: list[str],
    redis_url: str,
    *,
    max_calls: int | None = None,
    redis_lines: str | None = None,
) -> list[SiplbProcess]:
    for index in range(1, NODES + 1):
        section = cluster_section(index, redis=redis_url, peer_port=free_port(node_host(index)))
        if redis_lines is not None:
            section = section.replace(f'redis = "{redis_url}"\n', redis_lines)
        nodes.append(start_node(workdir, index, destinations, cluster=section, max_calls=max_calls))
    wait_for(
        "every node sees three",
        lambda: all(len(live_nodes(n)) == NODES for n in nodes),
        timeout=5.0,
    )
    return nodes


def _dest_path(uri: str) -> str:
    return f"/api/sets/pbx/destinations/{urllib.parse.quote(uri, safe='')}"


def _state(node: SiplbProcess, uri: str) -> str:
    status, body = node.api("GET", _dest_path(uri))
    assert status == 200, body
    assert isinstance(body, dict)
    return str(body["state"])


def _owners(node: SiplbProcess) -> dict[str, str]:
    return {d["uri"]: d["owner"] for d in cluster_view(node)["destinations"]}


def test_three_nodes_one_view_and_calls_through_each(
    sipp: SippLauncher, e2e_workdir: Path, redis: RedisServer, nodes: list[SiplbProcess]
) -> None:
    uases = sipp.uases(2)
    uris = [u.sip_uri for u in uases]
    _start_cluster(e2e_workdir, nodes, uris, f"redis://127.0.0.1:{redis.port}/0")
    wait_for(
        "every node knows every member's config",
        lambda: all(m["config_hash"] for n in nodes for m in cluster_view(n)["members"]),
        timeout=2.0,
    )
    views = [cluster_view(n) for n in nodes]
    hashes = {m["config_hash"] for v in views for m in v["members"]}
    assert len(hashes) == 1, views  # the same sets on every node: no skew
    owners = [_owners(n) for n in nodes]
    assert owners[0] == owners[1] == owners[2], owners  # one prober per destination
    uacs = [sipp.uac(n.address, calls=150, rate=50, duration_ms=200, timeout_s=60) for n in nodes]
    for uac in uacs:
        result = uac.wait()
        assert result.stats.successful_calls == 150, result.describe()
        assert result.stats.failed_calls == 0, result.describe()


def test_a_killed_node_is_replaced_within_a_second(
    sipp: SippLauncher, e2e_workdir: Path, redis: RedisServer, nodes: list[SiplbProcess]
) -> None:
    uases = sipp.uases(2)
    uris = [u.sip_uri for u in uases]
    n1, n2, n3 = _start_cluster(e2e_workdir, nodes, uris, f"redis://127.0.0.1:{redis.port}/0")
    # long calls through n3, which it will not live to end; steady short calls through n1, n2
    doomed = sipp.uac(n3.address, calls=10, rate=20, duration_ms=30_000, timeout_s=60)
    wait_for(
        "n3's calls counted by n1", lambda: cluster_view(n1)["totals"]["calls"] >= 10, timeout=5.0
    )
    steady = [
        sipp.uac(n.address, calls=200, rate=40, duration_ms=500, timeout_s=60) for n in (n1, n2)
    ]
    time.sleep(1.0)  # the callers are under way
    before = _owners(n1)
    n3.signal(signal.SIGKILL)
    killed = time.monotonic()
    wait_for(
        "n1 and n2 see n3 gone",
        lambda: all("n3" not in live_nodes(n) for n in (n1, n2)),
        timeout=TAKEOVER_S + SLACK_S,
    )
    takeover = time.monotonic() - killed
    after = _owners(n1)
    moved = {uri for uri, owner in before.items() if owner.startswith("n3.")}
    for uri in moved:  # n3's destinations now probed by a survivor
        assert not after[uri].startswith("n3."), after
    for uri in set(before) - moved:  # the others' stay put
        assert after[uri] == before[uri], (before, after)
    wait_for(
        "n3's calls stop counting", lambda: cluster_view(n1)["totals"]["calls"] < 10, timeout=5.0
    )
    for uac in steady:
        result = uac.wait()
        assert result.stats.successful_calls == 200, result.describe()
        assert result.stats.failed_calls == 0, result.describe()
    doomed.stop()
    print(f"node death to takeover: {takeover * 1000:.0f} ms")


def test_max_calls_holds_across_the_cluster(
    sipp: SippLauncher, e2e_workdir: Path, redis: RedisServer, nodes: list[SiplbProcess]
) -> None:
    cap = 12
    uas = sipp.uas()
    _start_cluster(
        e2e_workdir, nodes, [uas.sip_uri], f"redis://127.0.0.1:{redis.port}/0", max_calls=cap
    )
    # 3 x 10 calls in a second, each held 6 s: more than the cap arrive at once on three nodes
    uacs = [sipp.uac(n.address, calls=10, rate=10, duration_ms=6000, timeout_s=60) for n in nodes]
    results = [uac.wait() for uac in uacs]
    answered = sum(r.stats.successful_calls for r in results)
    received = uas.stop().stats.calls_received
    assert received <= cap, (received, [r.describe() for r in results])
    assert answered <= cap
    assert answered >= cap // 2, [r.describe() for r in results]  # the leases were used


def test_a_drain_on_one_node_takes_effect_on_another(
    sipp: SippLauncher, e2e_workdir: Path, redis: RedisServer, nodes: list[SiplbProcess]
) -> None:
    drained, other = sipp.uases(2)
    n1, _, n3 = _start_cluster(
        e2e_workdir, nodes, [drained.sip_uri, other.sip_uri], f"redis://127.0.0.1:{redis.port}/0"
    )
    status, body = n1.api("POST", _dest_path(drained.sip_uri) + "/drain")
    assert status == 200, body
    wait_for(
        "n3 follows the drain",
        lambda: _state(n3, drained.sip_uri) in ("draining", "drained"),
        timeout=2.0,
    )
    result = sipp.run_uac(n3.address, calls=40, rate=40, duration_ms=100, timeout_s=30)
    assert result.stats.successful_calls == 40, result.describe()
    assert drained.stop().stats.calls_received == 0
    assert other.stop().stats.calls_received == 40


def test_redis_killed_mid_run_costs_no_call_and_counts_converge(
    sipp: SippLauncher, e2e_workdir: Path, redis: RedisServer, nodes: list[SiplbProcess]
) -> None:
    uases = sipp.uases(2)
    _, n2, _ = _start_cluster(
        e2e_workdir, nodes, [u.sip_uri for u in uases], f"redis://127.0.0.1:{redis.port}/0"
    )
    held = sipp.uac(n2.address, calls=6, rate=20, duration_ms=20_000, timeout_s=60)
    uacs = [sipp.uac(n.address, calls=150, rate=30, duration_ms=300, timeout_s=60) for n in nodes]
    time.sleep(1.0)
    redis.kill()
    wait_for(
        "every node says Redis is down",
        lambda: all(not cluster_view(n)["redis"]["up"] for n in nodes),
        timeout=3.0,
    )
    time.sleep(1.5)  # calls go on without Redis
    redis.start()
    wait_for(
        "every node is back on Redis",
        lambda: all(cluster_view(n)["redis"]["up"] for n in nodes),
        timeout=5.0,
    )
    for uac in uacs:
        result = uac.wait()
        assert result.stats.successful_calls == 150, result.describe()
        assert result.stats.failed_calls == 0, result.describe()
    # only n2's 6 held calls are live now: every node's cluster total converges to them
    wait_for(
        "the counts converge to the live calls",
        lambda: all(cluster_view(n)["totals"]["calls"] == 6 for n in nodes),
        timeout=5.0,
    )
    held.stop()


def test_sentinel_failover_mid_run_costs_no_call(
    sipp: SippLauncher, e2e_workdir: Path, nodes: list[SiplbProcess], tmp_path: Path
) -> None:
    if not redis_available():
        pytest.fail("redis-server and redis-sentinel are needed (make system-deps)")
    group = SentinelGroup(tmp_path / "sentinel")
    group.start()
    try:
        uases = sipp.uases(2)
        lines = f'sentinels = ["127.0.0.1:{group.sentinel.port}"]\nservice = "siplbtest"\n'
        _start_cluster(
            e2e_workdir, nodes, [u.sip_uri for u in uases], "redis://unused", redis_lines=lines
        )
        uacs = [
            sipp.uac(n.address, calls=120, rate=30, duration_ms=300, timeout_s=60) for n in nodes
        ]
        time.sleep(1.0)
        group.primary.kill()
        wait_for(
            "the Sentinel promotes the replica",
            lambda: group.sentinel.primary() == group.replica.port,
            timeout=10.0,
        )
        for uac in uacs:
            result = uac.wait()
            assert result.stats.successful_calls == 120, result.describe()
            assert result.stats.failed_calls == 0, result.describe()
        wait_for(
            "every node follows the new primary",
            lambda: all(
                cluster_view(n)["redis"]["up"] and len(live_nodes(n)) == NODES for n in nodes
            ),
            timeout=10.0,
        )
    finally:
        group.stop()


def _options(host: str, port: int, source_port: int) -> bytes:
    return (
        f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{source_port};branch=z9hG4bK-forge-{time.time_ns()}\r\n"
        f"From: <sip:test@127.0.0.1>;tag=forge\r\nTo: <sip:{host}>\r\n"
        f"Call-ID: forge-{time.time_ns()}@127.0.0.1\r\nCSeq: 1 OPTIONS\r\n"
        "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def _datagram_frame(sealer: Sealer, listener: int, source: tuple[str, int], data: bytes) -> bytes:
    host = source[0].encode()
    payload = bytes((listener,)) + source[1].to_bytes(2, "big") + bytes((len(host),)) + host
    return sealer.seal(1, payload + data, time.time())


def test_forged_and_replayed_node_messages_are_dropped(
    sipp: SippLauncher, e2e_workdir: Path, redis: RedisServer, nodes: list[SiplbProcess]
) -> None:
    uas = sipp.uas()
    n1 = _start_cluster(e2e_workdir, nodes, [uas.sip_uri], f"redis://127.0.0.1:{redis.port}/0")[0]
    me = next(m for m in cluster_view(n1)["members"] if m["node"] == "n1")
    peer_host, _, peer_port = me["peer"].rpartition(":")
    peer = (peer_host, int(peer_port))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as phone:
        phone.bind(("127.0.0.1", 0))
        phone.settimeout(2.0)
        source = phone.getsockname()
        request = _options(n1.address[0], n1.address[1], source[1])
        honest = Sealer(SECRET.encode(), Member("n2", 0), boot=time.time_ns())
        forger = Sealer(b"x" * 40, Member("n2", 0), boot=time.time_ns())
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            sender.sendto(_datagram_frame(forger, 0, source, request), peer)
            frame = _datagram_frame(honest, 0, source, request)
            sender.sendto(frame, peer)
            reply, _ = phone.recvfrom(65535)  # the honest frame's OPTIONS was answered
            assert reply.startswith(b"SIP/2.0 200"), reply
            sender.sendto(frame, peer)  # the same frame again
        wait_for(
            "the forged and the replayed frame counted",
            lambda: (lambda c: c["rejected"]["forged"] >= 1 and c["rejected"]["replayed"] >= 1)(
                cluster_view(n1)["channel"]
            ),
            timeout=3.0,
        )
        phone.settimeout(0.5)
        with pytest.raises(TimeoutError):
            phone.recvfrom(65535)  # the replay was not answered


def test_a_node_that_leaves_on_purpose_costs_no_call(
    sipp: SippLauncher, e2e_workdir: Path, redis: RedisServer, nodes: list[SiplbProcess]
) -> None:
    uases = sipp.uases(2)
    n1, n2, n3 = _start_cluster(
        e2e_workdir, nodes, [u.sip_uri for u in uases], f"redis://127.0.0.1:{redis.port}/0"
    )
    uacs = [
        sipp.uac(n.address, calls=120, rate=40, duration_ms=300, timeout_s=60) for n in (n1, n2)
    ]
    time.sleep(1.0)
    assert n3.stop() == 0, n3.log_tail()  # SIGTERM: drain, then leave the cluster
    wait_for("n1 sees n3 gone", lambda: "n3" not in live_nodes(n1), timeout=1.0)
    assert any("member n3.0 gone (left)" in e.get("msg", "") for e in n1.log_lines())
    for uac in uacs:
        result = uac.wait()
        assert result.stats.successful_calls == 120, result.describe()
        assert result.stats.failed_calls == 0, result.describe()


def test_the_dashboard_shows_every_node_and_a_death(
    browser: Any,  # noqa: F811 (the fixture imported above)
    sipp: SippLauncher,
    e2e_workdir: Path,
    redis: RedisServer,
    nodes: list[SiplbProcess],
) -> None:
    uas = sipp.uas()
    n1, _, n3 = _start_cluster(
        e2e_workdir, nodes, [uas.sip_uri], f"redis://127.0.0.1:{redis.port}/0"
    )
    context = browser.new_context(viewport={"width": 1500, "height": 900})
    context.add_init_script(f"localStorage.setItem('siplb.admin.token', {ADMIN_TOKEN!r})")
    page = context.new_page()
    page.goto(n1.admin_url + "/")
    page.wait_for_selector("#cluster:not([hidden])", timeout=5000)
    page.wait_for_function("document.querySelectorAll('#c-rows tr').length === 3", timeout=5000)
    assert page.locator("#c-nodes").inner_text() == "3"
    n3.signal(signal.SIGKILL)
    page.wait_for_function("document.querySelectorAll('#c-rows tr').length === 2", timeout=5000)
    assert "n3.0" not in page.locator("#c-rows").inner_text()
    page.screenshot(path=str(e2e_workdir / "cluster.png"), full_page=True)
    context.close()
