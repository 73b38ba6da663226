"""``GET /api/cluster``, the ``siplb_cluster_*`` metrics, the dashboard's cluster panel and
``siplb status``'s cluster lines, read from a real balancer seen with a given cluster reading
(``Clustered``): the admin side shows what ``BalancerView.cluster()`` answers, nothing more."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from siplb.admin.client import AdminClient, AdminError, format_cluster
from siplb.admin.openapi import OPENAPI
from siplb.admin.server import AdminServer
from siplb.admin.view import (
    ChannelCounts,
    ClusterDestination,
    ClusterReading,
    MemberReading,
    RedisReading,
)
from siplb.admin.views import cluster_json
from siplb.app import Balancer
from siplb.cli import main
from siplb.config import load_config

from .conftest import DESTS, TOKEN, config_text, run_async

A, B = DESTS
HASH = "5f1c0ffee0ddba11" * 4
OTHER = "0badc0de" * 8
STARTED = 1_700_000_000.0


def member(
    tag: str, *, alive: bool = True, seen: float | None = 0.1, calls: int = 0, config: str = HASH
) -> MemberReading:
    node, _, worker = tag.partition(".")
    peer = f"127.0.0.1{node[1:]}:{7000 + int(worker)}"
    return MemberReading(tag, node, int(worker), alive, seen, peer, calls, config, STARTED)


READING = ClusterReading(
    me="n1.0",
    node="n1",
    config_hash=HASH,
    redis=RedisReading(True, "redis://127.0.0.1:6379/0", 2, 1, "", 0.05),
    members=(
        member("n1.0", seen=0.0, calls=3),
        member("n1.1", calls=2),
        member("n2.0", calls=4, config=OTHER),
        member("n3.0", alive=False, seen=1.5, calls=7),  # gone: its calls no longer count
    ),
    destinations=(
        ClusterDestination(A, "n2.0", "up", 3, 4, 10),
        ClusterDestination(B, "n1.0", "down", 0, 0, None),
    ),
    channel=ChannelCounts.of(
        Counter(
            handed_over=5,
            taken_over=6,
            rejected_forged=1,
            rejected_replayed=2,
            unreachable=1,
            told_Setup=7,
            heard_Setup=8,
            setups_adopted=2,
            passive_in=9,  # not a channel figure shown
        )
    ),
)
DOWN = RedisReading(False, "Sentinel siplb", 12, 1, "Connection refused", 4.2)


class Clustered:
    """A real balancer whose ``cluster()`` answers ``reading``."""

    def __init__(self, balancer: Balancer, reading: ClusterReading | None) -> None:
        self._balancer = balancer
        self.reading = reading

    def __getattr__(self, name: str) -> Any:
        return getattr(self._balancer, name)

    def cluster(self) -> ClusterReading | None:
        return self.reading


@contextlib.asynccontextmanager
async def cluster_lab(
    tmp_path: Path, reading: ClusterReading | None, *, token: str | None = TOKEN
) -> AsyncIterator[TestClient]:  # type: ignore[type-arg]
    path = tmp_path / "siplb.toml"
    path.write_text(config_text(token=token))
    balancer = Balancer(load_config(path), config_path=path)
    await balancer.start()
    client = TestClient(TestServer(AdminServer(Clustered(balancer, reading)).app))  # type: ignore[arg-type]
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()
        await balancer.stop(grace=0)


AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def get_json(client: TestClient, path: str) -> Any:  # type: ignore[type-arg]
    response = await client.get(path, headers=AUTH)
    assert response.status == 200
    return await response.json()


# ---- GET /api/cluster ---------------------------------------------------------------------------
@run_async
async def test_alone_the_cluster_is_disabled(tmp_path: Path) -> None:
    async with cluster_lab(tmp_path, None) as client:
        assert await get_json(client, "/api/cluster") == {"enabled": False}


@run_async
async def test_the_cluster_as_this_member_sees_it(tmp_path: Path) -> None:
    async with cluster_lab(tmp_path, READING) as client:
        body = await get_json(client, "/api/cluster")
    assert body["enabled"] is True
    assert (body["me"], body["node"], body["config_hash"]) == ("n1.0", "n1", HASH)
    assert body["redis"] == {
        "up": True,
        "where": "redis://127.0.0.1:6379/0",
        "errors": 2,
        "reconnects": 1,
        "last_error": "",
        "last_ok": 0.05,
    }
    assert body["members"][0] == {
        "member": "n1.0",
        "node": "n1",
        "worker": 0,
        "alive": True,
        "last_seen": 0.0,
        "peer": "127.0.0.11:7000",
        "calls": 3,
        "config_hash": HASH,
        "config_matches": True,
        "started": STARTED,
    }
    assert [(m["member"], m["alive"], m["config_matches"]) for m in body["members"]] == [
        ("n1.0", True, True),
        ("n1.1", True, True),
        ("n2.0", True, False),
        ("n3.0", False, True),
    ]
    assert body["destinations"] == [
        {
            "uri": A,
            "owner": "n2.0",
            "state": "up",
            "calls_here": 3,
            "calls_elsewhere": 4,
            "limit": 10,
        },
        {
            "uri": B,
            "owner": "n1.0",
            "state": "down",
            "calls_here": 0,
            "calls_elsewhere": 0,
            "limit": None,
        },
    ]
    assert body["channel"] == {
        "handed_over": 5,
        "taken_over": 6,
        "rejected": {"forged": 1, "replayed": 2, "stale": 0, "malformed": 0},
        "unreachable": 1,
        "setups": {"told": 7, "heard": 8, "adopted": 2},
    }
    # live members only: n3.0 is gone, its 7 calls no longer count
    assert body["totals"] == {"members": 3, "nodes": 2, "calls": 9, "skewed": 1}


MEMBER_CASES = [
    # (config hash published, config_matches)
    (HASH, True),
    (OTHER, False),
    ("", None),  # not known yet: neither a match nor skew
]


@pytest.mark.parametrize(("config", "matches"), MEMBER_CASES)
def test_config_matches(config: str, matches: bool | None) -> None:
    reading = ClusterReading(
        "n1.0",
        "n1",
        HASH,
        READING.redis,
        (member("n1.0"), member("n2.0", config=config)),
        (),
        ChannelCounts(),
    )
    body = cluster_json(reading)
    assert body["members"][1]["config_matches"] is matches
    assert body["totals"]["skewed"] == (1 if matches is False else 0)


@run_async
async def test_the_cluster_needs_the_token(tmp_path: Path) -> None:
    async with cluster_lab(tmp_path, READING) as client:
        assert (await client.get("/api/cluster")).status == 401
        wrong = {"Authorization": "Bearer wrong"}
        assert (await client.get("/api/cluster", headers=wrong)).status == 401


@run_async
async def test_without_a_token_the_cluster_is_open_to_read(tmp_path: Path) -> None:
    async with cluster_lab(tmp_path, READING, token=None) as client:
        response = await client.get("/api/cluster")
        assert response.status == 200
        assert (await response.json())["enabled"] is True


def test_the_openapi_schema_names_every_key() -> None:
    schema = OPENAPI["components"]["schemas"]["Cluster"]
    body = cluster_json(READING)
    properties = schema["properties"]
    assert set(body) == set(properties)
    for key in ("redis", "channel", "totals"):
        assert set(body[key]) == set(properties[key]["properties"]), key
    for key in ("members", "destinations"):
        assert set(body[key][0]) == set(properties[key]["items"]["properties"]), key
    assert set(body["channel"]["rejected"]) == set(
        properties["channel"]["properties"]["rejected"]["properties"]
    )
    path = OPENAPI["paths"]["/api/cluster"]["get"]
    assert path["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Cluster"
    }


# ---- /metrics -----------------------------------------------------------------------------------
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(client: TestClient) -> Samples:  # type: ignore[type-arg]
    response = await client.get("/metrics", headers=AUTH)
    assert response.status == 200
    samples: Samples = {}
    for family in text_string_to_metric_families(await response.text()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


METRIC_CASES = [
    ("siplb_cluster_members", {}, 3),
    ("siplb_cluster_nodes", {}, 2),
    ("siplb_cluster_calls", {}, 9),
    ("siplb_cluster_member_calls", {"node": "n1", "member": "n1.0"}, 3),
    ("siplb_cluster_member_calls", {"node": "n1", "member": "n1.1"}, 2),
    ("siplb_cluster_member_calls", {"node": "n2", "member": "n2.0"}, 4),
    ("siplb_cluster_config_skew", {}, 1),
    ("siplb_cluster_redis_up", {}, 1),
    ("siplb_cluster_redis_errors_total", {}, 2),
    ("siplb_cluster_redis_reconnects_total", {}, 1),
    ("siplb_cluster_handed_over_total", {}, 5),
    ("siplb_cluster_taken_over_total", {}, 6),
    ("siplb_cluster_channel_rejected_total", {"reason": "forged"}, 1),
    ("siplb_cluster_channel_rejected_total", {"reason": "replayed"}, 2),
    ("siplb_cluster_channel_rejected_total", {"reason": "stale"}, 0),
    ("siplb_cluster_channel_rejected_total", {"reason": "malformed"}, 0),
    ("siplb_cluster_channel_unreachable_total", {}, 1),
]


@run_async
async def test_cluster_metrics(tmp_path: Path) -> None:
    async with cluster_lab(tmp_path, READING) as client:
        samples = await scrape(client)
    for name, labels, expected in METRIC_CASES:
        assert samples[(name, tuple(sorted(labels.items())))] == expected, (name, labels)
    gone = ("siplb_cluster_member_calls", (("member", "n3.0"), ("node", "n3")))
    assert gone not in samples  # a member gone is no longer a series


@run_async
async def test_redis_down_is_a_zero(tmp_path: Path) -> None:
    reading = ClusterReading(
        "n1.0", "n1", HASH, DOWN, READING.members, READING.destinations, READING.channel
    )
    async with cluster_lab(tmp_path, reading) as client:
        samples = await scrape(client)
    assert samples[("siplb_cluster_redis_up", ())] == 0
    assert samples[("siplb_cluster_redis_errors_total", ())] == 12


@run_async
async def test_alone_there_is_no_cluster_metric(tmp_path: Path) -> None:
    async with cluster_lab(tmp_path, None) as client:
        samples = await scrape(client)
    assert samples  # the rest is there
    assert not [name for name, _ in samples if name.startswith("siplb_cluster_")]


# ---- the dashboard ------------------------------------------------------------------------------
@run_async
async def test_dashboard_loads_the_cluster_panel(tmp_path: Path) -> None:
    async with cluster_lab(tmp_path, READING) as client:
        page = await (await client.get("/")).text()
        assert '<script src="/static/cluster.js"></script>' in page
        assert re.search(r'<section id="cluster"[^>]*\bhidden\b', page)  # until enabled
        response = await client.get("/static/cluster.js")
        assert response.status == 200
        script = await response.text()
    assert not re.search(r"https?://", script)
    assert 'fetch("/api/cluster", { headers: authHeaders()' in script
    assert "?token=" not in script
    for key in ("enabled", "config_matches", "last_seen", "redis.up", "totals.calls"):
        assert key in script, key


# ---- siplb status -------------------------------------------------------------------------------
def test_format_cluster() -> None:
    now = STARTED + 3725
    lines = format_cluster(cluster_json(READING), now).splitlines()
    assert lines[0] == (
        "Cluster: 2 nodes live (3 members), 9 calls in the cluster; this is n1.0; "
        "CONFIG SKEW: 1 member(s) run another config"
    )
    assert lines[1] == "Redis: up (redis://127.0.0.1:6379/0); 2 failed batches"
    assert lines[2].split() == ["Member", "Alive", "LastSeen", "Calls", "Peer", "Config", "Up"]
    rows = [line.split() for line in lines[3:]]
    assert rows == [
        ["n1.0", "yes", "0.0s", "3", "127.0.0.11:7000", HASH[:12], "1h02m"],
        ["n1.1", "yes", "0.1s", "2", "127.0.0.11:7001", HASH[:12], "1h02m"],
        ["n2.0", "yes", "0.1s", "4", "127.0.0.12:7000", OTHER[:12] + "*", "1h02m"],
        ["n3.0", "no", "1.5s", "7", "127.0.0.13:7000", HASH[:12], "1h02m"],
    ]


def test_format_cluster_redis_down() -> None:
    alone = ClusterReading(
        "n1.0", "n1", HASH, DOWN, (member("n1.0", calls=1),), (), ChannelCounts()
    )
    lines = format_cluster(cluster_json(alone), STARTED).splitlines()
    assert lines[0] == "Cluster: 1 node live (1 member), 1 call in the cluster; this is n1.0"
    assert lines[1] == (
        "Redis: DOWN (Sentinel siplb: Connection refused); balancing on the last state known, "
        "12 failed batches"
    )


async def answers(tmp_path: Path, reading: ClusterReading | None) -> dict[str, Any]:
    """What the API answers, by path, for ``siplb status`` to read without a network."""
    paths = ("/api/status", "/api/sets", "/api/protection?limit=0", "/api/cluster")
    async with cluster_lab(tmp_path, reading) as client:
        return {path: await get_json(client, path) for path in paths}


def status(monkeypatch: pytest.MonkeyPatch, bodies: dict[str, Any], *args: str) -> str:
    def request(self: AdminClient, method: str, path: str, body: Any = None) -> Any:
        if path not in bodies:
            raise AdminError(404, "not found")
        return bodies[path]

    monkeypatch.setattr(AdminClient, "request", request)
    env = {"SIPLB_ADMIN": "http://127.0.0.1:1", "SIPLB_ADMIN_TOKEN": TOKEN}
    result = CliRunner().invoke(main, ["status", *args], env=env)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_status_shows_the_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bodies = asyncio.run(answers(tmp_path, READING))
    lines = status(monkeypatch, bodies).splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Cluster: "))
    assert lines[start].startswith("Cluster: 2 nodes live (3 members), 9 calls in the cluster")
    assert lines[start + 1].startswith("Redis: up ")
    assert [line.split()[0] for line in lines[start + 3 :]] == ["n1.0", "n1.1", "n2.0", "n3.0"]
    out = json.loads(status(monkeypatch, bodies, "--json"))
    assert out["cluster"]["totals"]["calls"] == 9


def test_status_alone_has_no_cluster_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bodies = asyncio.run(answers(tmp_path, None))
    assert "Cluster" not in status(monkeypatch, bodies)
    assert "cluster" not in json.loads(status(monkeypatch, bodies, "--json"))
    del bodies["/api/cluster"]  # a balancer older than the API
    assert "Cluster" not in status(monkeypatch, bodies)


def test_channel_counts_read_the_links_counters() -> None:
    counts = ChannelCounts.of(Counter({"rejected_stale": 4, "rejected_malformed": 3}))
    assert counts == ChannelCounts(stale=4, malformed=3)
    assert counts.rejected() == {"forged": 0, "replayed": 0, "stale": 4, "malformed": 3}
