"""The admin API through aiohttp's test client, against a real in-process balancer: every
endpoint, token refusals, actions, reloads good and bad, the event stream."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from siplb.admin.openapi import OPENAPI
from siplb.dispatch import State

from .conftest import DESTS, TOKEN, admin_lab, config_text, run_async

A, B = DESTS


def dest_path(uri: str, set_name: str = "pbx") -> str:
    return f"/api/sets/{set_name}/destinations/{quote(uri, safe='')}"


# ---- reads ------------------------------------------------------------------------------------
READS = [
    ("/api/status", lambda b: b["version"] and b["config"]["sha256"] and b["listeners"]),
    ("/api/sets", lambda b: [d["uri"] for d in b["sets"][0]["destinations"]] == list(DESTS)),
    ("/api/sets/pbx", lambda b: b["name"] == "pbx" and b["algorithm"] == "round-robin"),
    (dest_path(A), lambda b: b["uri"] == A and b["state"] == "up" and b["weight"] == 1),
    ("/api/events", lambda b: b == {"last_id": 0, "events": []}),
    ("/api/history", lambda b: set(b["destinations"]) == set(DESTS) and len(b["times"]) == 1),
    ("/api/openapi.json", lambda b: b["openapi"].startswith("3.1")),
]


@pytest.mark.parametrize(("path", "check"), READS, ids=[r[0] for r in READS])
@run_async
async def test_read_endpoints(tmp_path: Path, path: str, check: Any) -> None:
    async with admin_lab(tmp_path) as lab:
        lab.server.sample()
        status, body = await lab.json("GET", path)
        assert status == 200, body
        assert check(body), body


@run_async
async def test_status_names_the_config_file_its_hash_and_the_listeners(tmp_path: Path) -> None:
    async with admin_lab(tmp_path) as lab:
        _, body = await lab.json("GET", "/api/status")
        config = lab.balancer.config
        assert body["config"]["file"] == str(lab.config_path)
        assert body["config"]["sha256"] == config.digest
        assert len(config.digest) == 64
        port = lab.balancer.listeners[0].port
        assert body["listeners"] == [
            {"transport": "udp", "address": f"127.0.0.1:{port}", "advertise": None}
        ]
        assert body["totals"]["destinations"] == 2
        assert body["totals"]["states"]["up"] == 2
        assert body["uptime_s"] >= 0


NOT_FOUND = [
    ("GET", "/api/sets/nope"),
    ("GET", dest_path("sip:127.0.0.1:1")),
    ("GET", dest_path(A, "nope")),
    ("POST", dest_path("sip:127.0.0.1:1") + "/drain"),
    ("PUT", dest_path("sip:127.0.0.1:1") + "/weight"),
]


@pytest.mark.parametrize(("method", "path"), NOT_FOUND)
@run_async
async def test_unknown_set_or_destination_is_404(tmp_path: Path, method: str, path: str) -> None:
    async with admin_lab(tmp_path) as lab:
        status, body = await lab.json(method, path, headers=lab.auth, json={"weight": 2})
        assert status == 404
        assert "error" in body


# ---- the token --------------------------------------------------------------------------------
GOOD = {"Authorization": f"Bearer {TOKEN}"}
WRONG = {"Authorization": "Bearer not-it"}
DRAIN = dest_path(A) + "/drain"
# (token configured, method, path, headers, expected status)
AUTH_CASES = [
    (True, "GET", "/api/status", {}, 401),
    (True, "GET", "/api/status", WRONG, 401),
    (True, "GET", "/api/status", GOOD, 200),
    (True, "GET", f"/api/status?token={TOKEN}", {}, 401),  # never in the URL
    (True, "GET", f"/api/status?token={TOKEN}", GOOD, 401),
    (True, "GET", f"/api/stream?token={TOKEN}", {}, 401),
    (True, "GET", "/api/status?token=not-it", {}, 401),
    (True, "GET", "/metrics", {}, 401),
    (True, "GET", "/metrics", GOOD, 200),
    (True, "GET", "/api/events", {}, 401),
    (True, "GET", "/api/stream", WRONG, 401),
    (True, "POST", DRAIN, {}, 401),
    (True, "POST", DRAIN, WRONG, 401),
    (True, "POST", f"{DRAIN}?token={TOKEN}", {}, 401),
    (True, "POST", f"{DRAIN}?token={TOKEN}", GOOD, 401),
    (True, "POST", DRAIN, GOOD, 200),
    (True, "POST", "/api/reload", {}, 401),
    (True, "GET", "/", {}, 200),  # the page and its files carry no data
    (True, "GET", "/static/dashboard.js", {}, 200),
    (True, "GET", "/api/openapi.json", {}, 200),
    (False, "GET", "/api/status", {}, 200),
    (False, "GET", "/metrics", {}, 200),
    (False, "GET", "/api/status?token=anything", {}, 401),
    (False, "POST", DRAIN, {}, 403),  # no token configured: no changes at all
    (False, "POST", DRAIN, WRONG, 403),
    (False, "PUT", dest_path(A) + "/weight", {}, 403),
    (False, "POST", "/api/reload", {}, 403),
]


@pytest.mark.parametrize(("configured", "method", "path", "headers", "expected"), AUTH_CASES)
@run_async
async def test_token_guards_changes_and_reads(
    tmp_path: Path,
    configured: bool,
    method: str,
    path: str,
    headers: dict[str, str],
    expected: int,
) -> None:
    async with admin_lab(tmp_path, token=TOKEN if configured else None) as lab:
        response = await lab.client.request(method, path, headers=headers)
        assert response.status == expected, await response.text()
        if expected == 401:
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
        if expected == 200 and path.startswith("/api/stream"):
            response.close()


@run_async
async def test_refusals_are_logged_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with admin_lab(tmp_path) as lab:
        with caplog.at_level(logging.WARNING, logger="siplb.admin"):
            await lab.client.post(DRAIN, headers=WRONG)
            await lab.client.get("/api/sets")
        refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
        assert len(refusals) == 2, refusals
        assert "wrong token" in refusals[0]
        assert f"POST /api/sets/pbx/destinations/{A}/drain from 127.0.0.1" in refusals[0]
        assert "missing token" in refusals[1]
        assert lab.balancer.recorder.auth_refusals == 2
        assert lab.server.refused == {"wrong token": 1, "missing token": 1}
        assert lab.balancer.proxy is not None
        assert lab.balancer.proxy.dispatcher.health.state(A) is State.UP  # nothing changed


# ---- actions ----------------------------------------------------------------------------------
ACTIONS = [
    # (actions in order, expected state, expected admin)
    (["drain"], "drained", "draining"),
    (["disable"], "disabled", "disabled"),
    (["drain", "enable"], "up", None),
    (["disable", "drain"], "drained", "draining"),
]


@pytest.mark.parametrize(("actions", "state", "admin"), ACTIONS)
@run_async
async def test_drain_enable_disable(
    tmp_path: Path, actions: list[str], state: str, admin: str | None
) -> None:
    async with admin_lab(tmp_path) as lab:
        for action in actions:
            status, body = await lab.json("POST", dest_path(A) + f"/{action}")
            assert status == 200, body
        assert body["state"] == state
        assert body["admin"] == admin
        assert f"{actions[-1]} by admin API" in body["cause"] or state == "up"
        _, other = await lab.json("GET", dest_path(B))
        assert other["state"] == "up"  # the other destination is untouched


@run_async
async def test_draining_shows_drained_when_the_last_call_ends(tmp_path: Path) -> None:
    async with admin_lab(tmp_path) as lab:
        proxy = lab.balancer.proxy
        assert proxy is not None
        accounting = proxy.dispatcher.accounting
        accounting.setup_started(b"call-1", A, 0.0)
        _, body = await lab.json("POST", dest_path(A) + "/drain")
        assert (body["state"], body["active_calls"]) == ("draining", 1)
        assert proxy.dispatcher.choose("pbx").uri == B  # type: ignore[union-attr]
        assert proxy.dispatcher.choose("pbx").uri == B  # type: ignore[union-attr]
        accounting.ended(b"call-1")
        _, body = await lab.json("GET", dest_path(A))
        assert (body["state"], body["active_calls"]) == ("drained", 0)
        _, events = await lab.json("GET", "/api/events")
        assert [(e["kind"], e["old"], e["new"]) for e in events["events"]] == [
            ("state", "up", "draining")
        ]


WEIGHTS = [
    ({"weight": 5}, 200),
    ({"weight": 1}, 200),
    ({"weight": 0}, 200),  # no new calls in the set (dispatch.dset)
    ({"weight": -3}, 400),
    ({"weight": 2.5}, 400),
    ({"weight": True}, 400),
    ({"weight": "5"}, 400),
    ({}, 400),
    ([5], 400),
]


@pytest.mark.parametrize(("body", "expected"), WEIGHTS)
@run_async
async def test_weight(tmp_path: Path, body: Any, expected: int) -> None:
    async with admin_lab(tmp_path) as lab:
        status, answer = await lab.json("PUT", dest_path(A) + "/weight", json=body)
        assert status == expected, answer
        proxy = lab.balancer.proxy
        assert proxy is not None
        weight = proxy.dispatcher.destinations("pbx")[0].spec.weight
        assert weight == (body["weight"] if expected == 200 else 1)
        if expected == 200:
            assert answer["weight"] == body["weight"]
            _, events = await lab.json("GET", "/api/events")
            assert events["events"][-1]["kind"] == "weight"


@run_async
async def test_weight_with_a_body_that_is_not_json(tmp_path: Path) -> None:
    async with admin_lab(tmp_path) as lab:
        status, body = await lab.json("PUT", dest_path(A) + "/weight", data=b"{nope")
        assert status == 400
        assert "JSON" in body["error"]


@run_async
async def test_ipv6_destination_uri_in_the_path(tmp_path: Path) -> None:
    uri = "sip:[::1]:9;transport=tcp"
    async with admin_lab(tmp_path, destinations=[uri]) as lab:
        status, body = await lab.json("POST", dest_path(uri) + "/disable")
        assert status == 200, body
        assert (body["uri"], body["state"], body["transport"]) == (uri, "disabled", "tcp")


# ---- reload -----------------------------------------------------------------------------------
@run_async
async def test_reload_adds_removes_and_reweights(tmp_path: Path) -> None:
    async with admin_lab(tmp_path) as lab:
        proxy = lab.balancer.proxy
        assert proxy is not None
        proxy.dispatcher.accounting.setup_started(b"call-on-b", B, 0.0)
        await lab.json("POST", dest_path(A) + "/drain")
        new = "sip:127.0.0.1:29"
        sets = (
            '[[sets]]\nname = "pbx"\n'
            f'destinations = [{{ uri = "{A}", weight = 3 }}, {{ uri = "{new}" }}]\n'
        )
        lab.write_config(config_text(sets=sets))
        status, outcome = await lab.json("POST", "/api/reload")
        assert status == 200, outcome
        assert outcome["ok"] is True
        assert outcome["added"] == [f"pbx {new}"]
        assert outcome["removed"] == [f"pbx {B}"]
        assert outcome["reweighted"] == [f"pbx {A} 1->3"]
        assert outcome["warnings"] == []
        assert outcome["sha256"] == lab.balancer.config.digest

        _, body = await lab.json("GET", "/api/sets")
        shown = {d["uri"]: d for d in body["sets"][0]["destinations"]}
        assert list(shown) == [A, new, B]
        assert shown[A]["state"] == "drained"  # admin state survives a reload
        assert shown[A]["weight"] == 3
        assert shown[new]["state"] == "up"
        assert (shown[B]["removed"], shown[B]["state"]) == (True, "draining")  # its call goes on
        assert proxy.dispatcher.choose("pbx").uri == new  # type: ignore[union-attr]

        proxy.dispatcher.accounting.ended(b"call-on-b")
        proxy.housekeeping(lab.balancer.loop.time())
        _, body = await lab.json("GET", "/api/sets")
        assert [d["uri"] for d in body["sets"][0]["destinations"]] == [A, new]
        _, status_body = await lab.json("GET", "/api/status")
        assert status_body["config"]["reloads"] == {"ok": 1}


@run_async
async def test_reload_of_a_bad_config_lists_every_problem_and_keeps_the_old_one(
    tmp_path: Path,
) -> None:
    async with admin_lab(tmp_path) as lab:
        digest = lab.balancer.config.digest
        lab.write_config(config_text(destinations=[A, "sip:bad uri"], extra="[nonsense]\nx = 1\n"))
        status, body = await lab.json("POST", "/api/reload")
        assert status == 422, body
        assert body["ok"] is False
        paths = [p["path"] for p in body["problems"]]
        assert len(paths) >= 2, body
        assert any(path.startswith("nonsense") for path in paths), paths
        assert lab.balancer.config.digest == digest
        _, sets = await lab.json("GET", "/api/sets")
        assert [d["uri"] for d in sets["sets"][0]["destinations"]] == list(DESTS)
        _, events = await lab.json("GET", "/api/events")
        assert events["events"][-1]["kind"] == "reload"
        assert "refused" in events["events"][-1]["message"]


@run_async
async def test_reload_warns_about_sections_that_need_a_restart(tmp_path: Path) -> None:
    async with admin_lab(tmp_path) as lab:
        lab.write_config(config_text(extra="[proxy]\nmax_attempts = 5\n"))
        for _ in range(2):  # still pending at the second reload: the running proxy is the old one
            status, body = await lab.json("POST", "/api/reload")
            assert status == 200, body
            assert body["warnings"] == ["[proxy] changed: it takes effect when siplb restarts"]


@run_async
async def test_reload_rereads_the_token(tmp_path: Path) -> None:
    async with admin_lab(tmp_path) as lab:
        lab.write_config(config_text(token="rotated"))
        status, _ = await lab.json("POST", "/api/reload")
        assert status == 200
        assert (await lab.client.get("/api/status", headers=lab.auth)).status == 401
        rotated = {"Authorization": "Bearer rotated"}
        assert (await lab.client.get("/api/status", headers=rotated)).status == 200


@run_async
async def test_reload_without_a_config_file_is_409(tmp_path: Path) -> None:
    async with admin_lab(tmp_path) as lab:
        lab.balancer.config_path = None
        status, body = await lab.json("POST", "/api/reload")
        assert status == 409, body


# ---- events, history, stream ------------------------------------------------------------------
@run_async
async def test_events_after_and_limit(tmp_path: Path) -> None:
    async with admin_lab(tmp_path) as lab:
        for action in ("drain", "enable", "disable", "enable"):
            await lab.json("POST", dest_path(A) + f"/{action}")
        _, body = await lab.json("GET", "/api/events?after=1&limit=2")
        assert body["last_id"] == 4
        assert [e["id"] for e in body["events"]] == [3, 4]
        assert [e["new"] for e in body["events"]] == ["disabled", "up"]
        status, _ = await lab.json("GET", "/api/events?after=x")
        assert status == 400


@run_async
async def test_history_counts_answered_calls_per_second(tmp_path: Path) -> None:
    async with admin_lab(tmp_path) as lab:
        proxy = lab.balancer.proxy
        assert proxy is not None
        accounting = proxy.dispatcher.accounting
        lab.server.sample()
        for i in range(3):
            accounting.setup_started(i, A, 0.0)
            accounting.confirmed(i, 0.0)
        lab.server.meter._last_at = lab.server.meter.times[-1] - 1.0  # a second has passed
        lab.server.sample()
        _, body = await lab.json("GET", "/api/history")
        assert body["destinations"][A][-1] == pytest.approx(3.0, rel=0.05)
        assert body["destinations"][B][-1] == 0.0
        assert body["sets"]["pbx"][-1] == pytest.approx(3.0, rel=0.05)
        _, view = await lab.json("GET", dest_path(A))
        assert (view["calls_total"], view["active_calls"]) == (3, 3)
        assert view["cps"] > 0


async def _read_sse(response: Any) -> tuple[str, Any]:
    event = data = None
    while True:
        line = (await response.content.readline()).decode().rstrip("\n")
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            data = json.loads(line[6:])
        elif line == "" and event is not None:
            return event, data


@run_async
async def test_stream_sends_a_snapshot_then_ticks_and_a_new_snapshot_after_changes(
    tmp_path: Path,
) -> None:
    async with admin_lab(tmp_path) as lab:
        response = await lab.client.get("/api/stream", headers=lab.auth)
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        event, data = await _read_sse(response)
        assert event == "snapshot"
        assert [d["uri"] for d in data["sets"][0]["destinations"]] == list(DESTS)
        assert {"status", "events", "history"} <= data.keys()

        await lab.json("POST", dest_path(A) + "/disable")
        lab.server.sample()
        lab.server.push()
        event, data = await _read_sse(response)
        assert event == "tick"
        assert data["destinations"][0][0] == "disabled"
        assert data["events"][-1]["new"] == "disabled"

        await lab.json("PUT", dest_path(A) + "/weight", json={"weight": 4})  # layout changes
        event, data = await _read_sse(response)
        assert event == "snapshot"
        assert data["sets"][0]["destinations"][0]["weight"] == 4
        response.close()


# ---- the OpenAPI document ---------------------------------------------------------------------
@run_async
async def test_openapi_lists_exactly_the_served_routes(tmp_path: Path) -> None:
    async with admin_lab(tmp_path) as lab:
        served = set()
        for route in lab.server.app.router.routes():
            info = route.resource.get_info() if route.resource is not None else {}
            path = info.get("path") or info.get("formatter") or info.get("prefix")
            if route.method in ("HEAD", "*") or path in ("/", "/static"):
                continue
            path = path.replace("{action}", "ACTION")
            served.add((route.method.lower(), path))
        documented = set()
        for path, operations in OPENAPI["paths"].items():
            for method in operations:
                documented.add((method, path))
        actions = {
            (m, p) for m, p in documented if p.rsplit("/", 1)[-1] in ("drain", "enable", "disable")
        }
        assert {(m, p.rsplit("/", 1)[0] + "/ACTION") for m, p in actions} == {
            (m, p) for m, p in served if p.endswith("ACTION")
        }
        assert documented - actions == {(m, p) for m, p in served if not p.endswith("ACTION")}


@run_async
async def test_dashboard_page_and_files_are_self_contained(tmp_path: Path) -> None:
    async with admin_lab(tmp_path) as lab:
        page = await (await lab.client.get("/")).text()
        assert "/static/dashboard.js" in page
        assert "/static/dashboard.css" in page
        for name in ("dashboard.js", "dashboard.css"):
            response = await lab.client.get(f"/static/{name}")
            assert response.status == 200
            text = await response.text()
            assert not re.search(r"https?://", text)  # no CDN, nothing remote
        assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
