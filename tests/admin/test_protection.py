"""Protection made visible: ``GET /api/protection``, operator bans (``POST /api/bans``,
``DELETE /api/bans/{host}``), the refusal and ban metrics, the journal's summed refusals and
bans, and ``siplb status | bans | ban | unban``.

Requests go through the lab's real proxy core (``proxy.receive``) from documentation addresses
(RFC 5737), which are not destinations, so the admission stage judges them.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from siplb.admin.journal import BAN_LINES, MAX_REASONS, TALLY_WINDOW, Recorder
from siplb.admin.views import merge_refused
from siplb.cli import main
from siplb.proxy.actions import MessageDropped, Target
from siplb.proxy.admission import BanLifted, SourceBanned

from .conftest import TOKEN, Lab, admin_lab, config_text, run_async, served_admin
from .test_metrics import scrape, value

FLOODER = "192.0.2.7"
DENIED = "198.51.100.1"
CALLER = "192.0.2.8"
BUDGET = 5  # [protection.rate] other
PROTECTED = f"""
[protection.rate]
other = {BUDGET}

[[acl]]
action = "deny"
source = ["198.51.100.0/24"]
"""
GOOD = {"Authorization": f"Bearer {TOKEN}"}
WRONG = {"Authorization": "Bearer not-it"}


def options(n: int, host: str) -> bytes:
    return (
        f"OPTIONS sip:x@203.0.113.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {host}:5060;branch=z9hG4bKo{n}\r\n"
        f"Max-Forwards: 70\r\nFrom: <sip:a@{host}>;tag=1\r\nTo: <sip:x@y>\r\n"
        f"Call-ID: o{n}@{host}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def invite(host: str) -> bytes:
    return (
        f"INVITE sip:100@pbx SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {host}:5060;branch=z9hG4bKinv1\r\n"
        f"Max-Forwards: 70\r\nFrom: <sip:a@{host}>;tag=1\r\nTo: <sip:100@pbx>\r\n"
        f"Call-ID: call1@{host}\r\nCSeq: 1 INVITE\r\nContact: <sip:a@{host}>\r\n"
        f"Content-Length: 0\r\n\r\n"
    ).encode()


def send(lab: Lab, data: bytes, host: str) -> None:
    proxy = lab.balancer.proxy
    assert proxy is not None
    proxy.receive(data, Target("udp", host, 5060), 0, lab.balancer.loop.time())
    lab.balancer.driver.flush()


def flood(lab: Lab, count: int, host: str = FLOODER, first: int = 0) -> None:
    for n in range(first, first + count):
        send(lab, options(n, host), host)


# ---- counting each refusal once ---------------------------------------------------------------
@run_async
async def test_refusals_are_counted_once_per_reason(tmp_path: Path) -> None:
    async with admin_lab(tmp_path, extra=PROTECTED) as lab:
        flood(lab, 20)  # BUDGET admitted, then one over the rate (banned), then 14 banned
        flood(lab, 3, DENIED)
        send(lab, invite(CALLER), CALLER)  # pending: its destinations never answer
        proxy = lab.balancer.proxy
        assert proxy is not None
        assert proxy.admission is not None
        # the admission stage counts its verdicts (banned datagrams too), the core its own
        assert proxy.admission.drops["rate"] == 1
        assert "refused:rate" not in proxy.stats
        assert proxy.admission.drops["banned"] == 20 - BUDGET - 1
        samples = await scrape(lab)
        refused = {
            dict(k[1])["reason"]: v
            for k, v in samples.items()
            if k[0] == "siplb_requests_refused_total"
        }
        assert refused == {
            "rate": 1,
            "banned": 20 - BUDGET - 1,
            "acl": 3,
            "blocklist": 0,  # every admission reason is there from the start
            "scanner": 0,
        }
        assert value(samples, "siplb_bans_active") == 1
        assert value(samples, "siplb_bans_total", reason="rate") == 1
        # the admitted OPTIONS and the INVITE wait for destinations that never answer
        assert value(samples, "siplb_pending_transactions") == proxy.pending == BUDGET + 1
        assert value(samples, "siplb_internal_errors_total") == 0


@run_async
async def test_stream_admin_and_internal_error_counters(tmp_path: Path) -> None:
    text = '[[listen]]\ntransport = "tcp"\naddress = "127.0.0.1:0"\n\n' + config_text(
        extra="[tcp]\nmax_per_source = 1\n"
    )
    async with admin_lab(tmp_path, text) as lab:
        port = lab.balancer.listeners[0].port
        first = await asyncio.open_connection("127.0.0.1", port)
        second = await asyncio.open_connection("127.0.0.1", port)
        pool = lab.balancer.driver.pool
        for _ in range(200):
            if pool.refused:
                break
            await asyncio.sleep(0.01)
        await lab.client.get("/api/status", headers=WRONG)
        await lab.client.get("/api/status")
        proxy = lab.balancer.proxy
        assert proxy is not None
        proxy.stats["internal_errors"] += 2  # what Balancer counts when a handler raises
        samples = await scrape(lab)
        assert value(samples, "siplb_stream_connections_refused_total", reason="per_source") == 1
        assert value(samples, "siplb_stream_connections", direction="inbound") == 1
        assert value(samples, "siplb_stream_buffered_bytes") == 0
        assert value(samples, "siplb_admin_requests_refused_total", reason="wrong token") == 1
        assert value(samples, "siplb_admin_requests_refused_total", reason="missing token") == 1
        assert value(samples, "siplb_internal_errors_total") == 2
        _, body = await lab.json("GET", "/api/protection")
        assert body["streams"]["refused"] == {"per_source": 1}
        assert body["admin_refused"] == {"wrong token": 1, "missing token": 1}
        assert body["internal_errors"] == 2
        for _, writer in (first, second):
            writer.close()


MERGES = [
    # the core's refusals in stats (refused:<reason>), the admission stage's in drops
    ({"refused:relay": 2, "refused:overload": 3}, None, {"relay": 2, "overload": 3}),
    (
        {"refused:relay": 2, "refused:overload": 3},
        {"rate": 2, "banned": 9},
        {"relay": 2, "rate": 2, "banned": 9, "overload": 3},
    ),
    ({"dropped": 5, "requests": 7}, {"acl": 1}, {"acl": 1}),
    ({}, {}, {}),
]


@pytest.mark.parametrize(("stats", "drops", "expected"), MERGES)
def test_merge_refused_sums_the_core_and_the_admission_stage(
    stats: dict[str, int], drops: dict[str, int] | None, expected: dict[str, int]
) -> None:
    assert merge_refused(stats, drops) == expected


@run_async
async def test_workers_are_summed(tmp_path: Path) -> None:
    async with admin_lab(tmp_path, extra=PROTECTED) as lab:
        flood(lab, BUDGET + 3)  # worker 0 (this process): 1 rate, 2 banned
        balancer = lab.balancer

        def row(worker: int, stats: dict[str, int], **more: Any) -> dict[str, Any]:
            return {
                "worker": worker,
                "stats": stats,
                "requests": {},
                "responses": [],
                "transactions": [0, 0],
                "calls": 0,
                **more,
            }

        assert balancer.proxy is not None
        rows = [
            row(0, dict(balancer.proxy.stats)),  # as Worker.own_counters() sends it
            row(1, {"refused:overload": 2, "internal_errors": 1}, drops={"rate": 4}),
            row(2, {}, drops={"rate": 1, "banned": 10}, pending=3),
        ]
        balancer.worker_counters = lambda: rows  # type: ignore[method-assign]
        samples = await scrape(lab)
        assert value(samples, "siplb_requests_refused_total", reason="rate") == 1 + 4 + 1
        assert value(samples, "siplb_requests_refused_total", reason="banned") == 2 + 10
        assert value(samples, "siplb_requests_refused_total", reason="overload") == 2
        # worker 0's own pending count is read from its proxy
        assert value(samples, "siplb_pending_transactions") == BUDGET + 0 + 3
        assert value(samples, "siplb_internal_errors_total") == 1


# ---- the API ------------------------------------------------------------------------------------
@run_async
async def test_protection_shape(tmp_path: Path) -> None:
    async with admin_lab(tmp_path, extra=PROTECTED) as lab:
        flood(lab, 10)
        send(lab, invite(CALLER), CALLER)
        status, body = await lab.json("GET", "/api/protection")
        assert status == 200, body
        assert body["admission"] is True
        assert body["refused"] == {"banned": 4, "rate": 1}
        assert list(body["refused"]) == ["banned", "rate"]  # most first
        assert body["refused_total"] == 5
        assert body["bans_active"] == 1
        [ban] = body["bans"]
        assert ban["host"] == FLOODER
        assert ban["reason"] == "rate"
        assert ban["offences"] == 1
        assert 0 < ban["seconds_left"] <= 60
        assert ban["until"] > 1e9  # epoch seconds
        assert body["pending"]["transactions"] == BUDGET + 1
        assert body["pending"]["top_sources"] == [
            {"host": FLOODER, "pending": BUDGET},
            {"host": CALLER, "pending": 1},
        ]
        assert set(body["streams"]) == {"refused", "inbound", "outbound", "buffered_bytes"}
        status, body = await lab.json("GET", "/api/protection?limit=0")
        assert (status, body["bans"], body["bans_active"]) == (200, [], 1)
        status, body = await lab.json("GET", "/api/protection?limit=x")
        assert status == 400


BAN_AUTH = [
    (True, "POST", {}, 401),
    (True, "POST", WRONG, 401),
    (True, "POST", GOOD, 200),
    (True, "DELETE", {}, 401),
    (True, "DELETE", WRONG, 401),
    (False, "POST", {}, 403),
    (False, "POST", WRONG, 403),
    (False, "DELETE", {}, 403),
]


@pytest.mark.parametrize(("configured", "method", "headers", "expected"), BAN_AUTH)
@run_async
async def test_ban_changes_need_the_token(
    tmp_path: Path, configured: bool, method: str, headers: dict[str, str], expected: int
) -> None:
    async with admin_lab(tmp_path, token=TOKEN if configured else None) as lab:
        if method == "POST":
            body = {"host": FLOODER, "seconds": 60}
            response = await lab.client.post("/api/bans", json=body, headers=headers)
        else:
            response = await lab.client.delete(f"/api/bans/{FLOODER}", headers=headers)
        assert response.status == expected, await response.text()
        proxy = lab.balancer.proxy
        assert proxy is not None
        assert proxy.admission is not None
        now = lab.balancer.loop.time()
        assert proxy.admission.is_banned(FLOODER, now) is (expected == 200)


BAD_BANS = [
    ([1, 2], "the body must be JSON"),
    ({"seconds": 60}, "host must be an IP address"),
    ({"host": "pbx.example.com", "seconds": 60}, "host must be an IP address"),
    ({"host": FLOODER}, "seconds must be a number"),
    ({"host": FLOODER, "seconds": True}, "seconds must be a number"),
    ({"host": FLOODER, "seconds": 0}, "seconds must be above 0"),
    ({"host": FLOODER, "seconds": 1e12}, "seconds must be above 0"),
    ({"host": FLOODER, "seconds": 60, "reason": ""}, "reason must be a text"),
    ({"host": FLOODER, "seconds": 60, "reason": "x" * 101}, "reason must be a text"),
    ({"host": FLOODER, "seconds": 60, "reason": "a\nb"}, "printable"),
]


@pytest.mark.parametrize(("body", "message"), BAD_BANS)
@run_async
async def test_bad_ban_requests(tmp_path: Path, body: Any, message: str) -> None:
    async with admin_lab(tmp_path) as lab:
        status, answer = await lab.json("POST", "/api/bans", json=body)
        assert status == 400
        assert message in answer["error"]


@run_async
async def test_operator_ban_drops_then_unban_admits(tmp_path: Path) -> None:
    async with admin_lab(tmp_path, extra=PROTECTED) as lab:
        body = {"host": f"::ffff:{FLOODER}", "seconds": 120, "reason": "seen in the SBC logs"}
        status, ban = await lab.json("POST", "/api/bans", json=body)
        assert status == 200, ban
        assert ban["host"] == FLOODER  # its canonical spelling
        assert ban["reason"] == "seen in the SBC logs"
        assert 119 <= ban["seconds_left"] <= 120
        flood(lab, 2)
        _, body = await lab.json("GET", "/api/protection")
        assert body["refused"] == {"banned": 2}
        assert [b["host"] for b in body["bans"]] == [FLOODER]
        samples = await scrape(lab)
        assert value(samples, "siplb_bans_total", reason="operator") == 1  # bounded label
        _, events = await lab.json("GET", "/api/events")
        kinds = [(e["kind"], e.get("host")) for e in events["events"]]
        assert ("ban", FLOODER) in kinds

        status, lifted = await lab.json("DELETE", f"/api/bans/{FLOODER}")
        assert (status, lifted) == (200, {"host": FLOODER, "lifted": True})
        flood(lab, 1, first=100)
        _, body = await lab.json("GET", "/api/protection")
        assert body["refused"] == {"banned": 2}
        assert body["bans_active"] == 0
        status, answer = await lab.json("DELETE", f"/api/bans/{FLOODER}")
        assert status == 404
        assert "no ban" in answer["error"]
        _, events = await lab.json("GET", "/api/events")
        assert ("unban", FLOODER) in [(e["kind"], e.get("host")) for e in events["events"]]


@run_async
async def test_a_destination_cannot_be_banned(tmp_path: Path) -> None:
    async with admin_lab(tmp_path) as lab:
        status, answer = await lab.json(
            "POST", "/api/bans", json={"host": "127.0.0.1", "seconds": 60}
        )
        assert status == 409
        assert "trusted" in answer["error"]


# ---- the journal: summed, bounded -------------------------------------------------------------
class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_ten_thousand_drops_make_a_handful_of_entries() -> None:
    clock = FakeClock()
    recorder = Recorder(clock)
    refused: Counter[str] = Counter()
    recorder.refusals = lambda: refused
    for n in range(10_000):
        clock.now += 0.003  # 30 s of a flood
        refused["rate" if n % 100 == 0 else "banned"] += 1
        recorder.observe(
            MessageDropped(f"{n} invite requests in 1 s", Target("udp", FLOODER, 5060)), 0.0
        )
        if n % 333 == 0:  # a dashboard reads the journal every second
            recorder.journal.after(recorder.journal.last_id)
    clock.now += TALLY_WINDOW
    entries = recorder.journal.after(0)
    assert 2 <= len(entries) <= 10, [e.message for e in entries]
    assert {e.kind for e in entries} == {"refused"}
    totals: Counter[str] = Counter()
    for entry in entries:
        totals[entry.cause or "?"] += entry.count or 0
    assert totals == {"rate": 100, "banned": 9_900}
    assert len(recorder.drops) == MAX_REASONS + 1  # the label counter stays bounded
    assert recorder.drops["other"] > 0
    assert re.fullmatch(r"\d+ requests refused in \d+ s: (rate|banned)", entries[0].message)


def test_a_wave_of_bans_gets_a_few_lines() -> None:
    clock = FakeClock()
    recorder = Recorder(clock)
    offset = 0.0
    for n in range(500):
        host = f"203.0.113.{n % 250}" if n < 250 else f"2001:db8::{n}"
        recorder.observe(SourceBanned(host, "scanner", clock.now + 3600, 1), offset)
    for n in range(100):
        recorder.observe(BanLifted(f"203.0.113.{n}"), offset)
    clock.now += TALLY_WINDOW
    entries = recorder.journal.after(0)
    bans = [e for e in entries if e.kind == "ban"]
    assert len(bans) == BAN_LINES + 1
    assert bans[0].message == "203.0.113.0 banned for 60 min (scanner, offence 1)"
    assert bans[-1].count == 500 - BAN_LINES
    assert "more sources banned" in bans[-1].message
    unbans = [e for e in entries if e.kind == "unban"]
    assert [e.count for e in unbans] == [100]  # the window's lines were used by the bans
    assert recorder.bans == {"scanner": 500}


@run_async
async def test_journal_sums_real_drops(tmp_path: Path) -> None:
    async with admin_lab(tmp_path, extra=PROTECTED) as lab:
        recorder = lab.balancer.recorder
        clock = FakeClock(recorder.clock() + TALLY_WINDOW)
        recorder.clock = clock
        recorder.settle()  # the first window starts at the fake time
        flood(lab, 2_000)
        clock.now += TALLY_WINDOW
        _, body = await lab.json("GET", "/api/events")
        summed = {e["cause"]: e["count"] for e in body["events"] if e["kind"] == "refused"}
        assert summed == {"rate": 1, "banned": 2_000 - BUDGET - 1}
        assert [e["kind"] for e in body["events"]].count("ban") == 1
        assert len(body["events"]) <= 4


# ---- the dashboard page -------------------------------------------------------------------------
@run_async
async def test_dashboard_loads_the_protection_panel(tmp_path: Path) -> None:
    async with admin_lab(tmp_path) as lab:
        page = await (await lab.client.get("/")).text()
        assert '<script src="/static/protection.js"></script>' in page
        assert 'id="protection"' in page
        response = await lab.client.get("/static/protection.js")
        assert response.status == 200
        script = await response.text()
        assert not re.search(r"https?://", script)
        assert "authHeaders()" in script  # the token the way dashboard.js sends it
        assert "?token=" not in script


# ---- the CLI --------------------------------------------------------------------------------------
async def cli(url: str, *args: str, token: str | None = TOKEN) -> tuple[int, str, str]:
    env = {"SIPLB_ADMIN": url, "SIPLB_ADMIN_TOKEN": token or "", "SIPLB_ADMIN_TOKEN_FILE": ""}
    result = await asyncio.to_thread(CliRunner().invoke, main, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


@run_async
async def test_cli_ban_bans_status_unban(tmp_path: Path) -> None:
    async with served_admin(tmp_path, config_text(extra=PROTECTED)) as balancer:
        assert balancer.admin is not None
        url = balancer.admin.url
        code, out, err = await cli(url, "ban", FLOODER, "--seconds", "600", "--reason", "test")
        assert code == 0, err
        assert re.fullmatch(rf"{FLOODER} banned for (10m00s|9m59s) \(test\)\n", out), out
        code, out, err = await cli(url, "bans")
        assert code == 0, err
        lines = out.splitlines()
        assert lines[0] == "1 ban in force"
        assert lines[1].split() == ["Host", "Reason", "Left", "Offences"]
        assert lines[2].split()[:2] == [FLOODER, "test"]
        assert lines[2].split()[-1] == "1"

        proxy = balancer.proxy
        assert proxy is not None
        proxy.receive(options(1, FLOODER), Target("udp", FLOODER, 5060), 0, balancer.loop.time())
        code, out, err = await cli(url, "status")
        assert code == 0, err
        lines = out.splitlines()
        calls = next(i for i, line in enumerate(lines) if line.startswith("Calls:"))
        assert lines[calls + 1] == (
            "Protection: 1 refused (banned 1); 1 ban in force; 0 pending transactions"
        )
        code, out, _ = await cli(url, "status", "--json")
        assert code == 0
        assert '"bans_active": 1' in out

        code, out, err = await cli(url, "unban", FLOODER)
        assert (code, out.strip()) == (0, f"ban on {FLOODER} lifted"), err
        code, _, err = await cli(url, "unban", FLOODER)
        assert code == 1
        assert f"no ban on {FLOODER}" in err
        code, out, _ = await cli(url, "bans")
        assert out.strip() == "0 bans in force"


CLI_REFUSALS = [
    (("ban", FLOODER), "wrong", "wrong token"),
    (("ban", "127.0.0.1"), TOKEN, "trusted"),
    (("ban", "not-an-ip"), TOKEN, "host must be an IP address"),
    (("unban", FLOODER), None, "missing token"),
]


@pytest.mark.parametrize(("args", "token", "message"), CLI_REFUSALS)
@run_async
async def test_cli_refusals(
    tmp_path: Path, args: tuple[str, ...], token: str | None, message: str
) -> None:
    async with served_admin(tmp_path) as balancer:
        assert balancer.admin is not None
        code, _, err = await cli(balancer.admin.url, *args, token=token)
        assert code == 1
        assert message in err
