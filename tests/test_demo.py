"""``siplb demo``: the demo PBX answers like a PBX, the screen renders, and whole runs of the demo
(the CLI as a subprocess, and the coroutine with a short script) answer every call they should."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import os
import random
import re
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from siplb.demo import Demo, DemoResult, DemoSettings
from siplb.demo.call import Outcome
from siplb.demo.pbx import DemoPbx
from siplb.demo.screen import Frame, Row, Totals, render
from siplb.sip import Request, Response, parse

SRC = Path(__file__).resolve().parents[1] / "src"
LOOPBACK = "127.0.0.1"


def free_demo_port() -> int:
    """A port P with P, P+10, P+11 and P+12 free on loopback UDP (the balancer and its PBXs)."""
    rng = random.Random()
    for _ in range(500):
        port = rng.randrange(20000, 30000)
        if all(_udp_free(p) for p in (port, port + 10, port + 11, port + 12)):
            return port
    raise RuntimeError("no free loopback ports for the demo")


def _udp_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


# ---- the demo PBX, driven over a real socket ------------------------------------------------


def _request(method: str, branch: str, *, call_id: str = "c1", cseq: int = 1) -> bytes:
    headers = [
        (b"Via", f"SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK{branch}".encode()),
        (b"Record-Route", b"<sip:127.0.0.1:5060;lr>"),
        (b"From", b"<sip:a@127.0.0.1>;tag=f1"),
        (b"To", b"<sip:b@127.0.0.1>"),
        (b"Call-ID", call_id.encode()),
        (b"CSeq", f"{cseq} {method}".encode()),
        (b"Content-Length", b"0"),
    ]
    return Request.build(method, b"sip:b@127.0.0.1", headers).to_bytes()


async def _exchange(pbx: DemoPbx, sends: list[bytes], *, wait: float = 0.15) -> list[Response]:
    """Send datagrams to the PBX from one socket; collect what comes back within ``wait``."""
    loop = asyncio.get_running_loop()
    got: list[Response] = []

    class Collect(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
            message = parse(data)
            assert isinstance(message, Response)
            got.append(message)

    transport, _ = await loop.create_datagram_endpoint(Collect, local_addr=(LOOPBACK, 0))
    try:
        for data in sends:
            transport.sendto(data, (pbx.host, pbx.port))
            await asyncio.sleep(0.02)
        await asyncio.sleep(wait)
    finally:
        transport.close()
    return got


def _statuses(responses: list[Response]) -> list[tuple[int, str]]:
    return [(r.status, r.cseq.method) for r in responses]


# name -> (datagrams sent, answering, expected (status, CSeq method) in order)
PBX_CASES: dict[str, tuple[list[bytes], bool, list[tuple[int, str]]]] = {
    "options": ([_request("OPTIONS", "o1")], True, [(200, "OPTIONS")]),
    "options retransmitted": (
        [_request("OPTIONS", "o2"), _request("OPTIONS", "o2")],
        True,
        [(200, "OPTIONS"), (200, "OPTIONS")],
    ),
    "invite rings": ([_request("INVITE", "i1")], True, [(100, "INVITE"), (180, "INVITE")]),
    "invite cancelled": (
        [_request("INVITE", "i2"), _request("CANCEL", "i2")],
        True,
        [(100, "INVITE"), (180, "INVITE"), (200, "CANCEL"), (487, "INVITE")],
    ),
    "cancel for nothing": ([_request("CANCEL", "x1")], True, [(481, "CANCEL")]),
    "bye for an unknown call": ([_request("BYE", "b1", cseq=2)], True, [(481, "BYE")]),
    "other method": ([_request("REGISTER", "r1")], True, [(405, "REGISTER")]),
    "ack absorbed": ([_request("ACK", "a1")], True, []),
    "silent when stopped": ([_request("OPTIONS", "o3"), _request("INVITE", "i3")], False, []),
}


@pytest.mark.parametrize("name", list(PBX_CASES))
def test_demo_pbx_answers(name: str) -> None:
    sends, answering, expected = PBX_CASES[name]

    async def scenario() -> list[Response]:
        pbx = DemoPbx("pbx9", LOOPBACK, 0, ring=(5.0, 5.0))
        await pbx.start()
        if not answering:
            pbx.stop_answering(asyncio.get_running_loop().time())
        try:
            return await _exchange(pbx, sends)
        finally:
            pbx.close()

    assert _statuses(asyncio.run(scenario())) == expected


def test_demo_pbx_answers_a_call_and_forgets_it_after_a_crash() -> None:
    async def scenario() -> tuple[list[Response], list[Response], list[Response]]:
        pbx = DemoPbx("pbx9", LOOPBACK, 0, ring=(0.05, 0.05))
        await pbx.start()
        try:
            call = await _exchange(pbx, [_request("INVITE", "i9", call_id="k1")], wait=0.2)
            assert pbx.active_calls == 1
            bye = await _exchange(pbx, [_request("BYE", "b9", call_id="k1", cseq=2)])
            assert pbx.active_calls == 0
            await _exchange(pbx, [_request("INVITE", "i10", call_id="k2")], wait=0.2)
            loop = asyncio.get_running_loop()
            pbx.stop_answering(loop.time())
            pbx.start_answering(loop.time())
            after = await _exchange(pbx, [_request("BYE", "b10", call_id="k2", cseq=2)])
            assert len(pbx.outages) == 1
            return call, bye, after
        finally:
            pbx.close()

    call, bye, after = asyncio.run(scenario())
    assert _statuses(call) == [(100, "INVITE"), (180, "INVITE"), (200, "INVITE")]
    ok = call[-1]
    assert ok.get(b"record-route") == b"<sip:127.0.0.1:5060;lr>"
    assert ok.to_tag is not None
    assert ok.to_tag == call[1].to_tag
    assert (ok.get(b"contact") or b"").startswith(b"<sip:pbx9@127.0.0.1:")
    assert ok.body.startswith(b"v=0\r\n")
    assert ok.get(b"content-type") == b"application/sdp"
    assert _statuses(bye) == [(200, "BYE")]
    assert _statuses(after) == [(481, "BYE")]  # restarted: it knows no call from before


# ---- the screen ---------------------------------------------------------------------------------

FRAME = Frame(
    elapsed=13.2,
    listen="127.0.0.1:5060",
    set_name="demo-pbx",
    algorithm="round-robin",
    rows=[
        Row("pbx1", "sip:127.0.0.1:5070", "up", "config", 1, 4, 0.4, True, 4),
        Row("pbx2", "sip:127.0.0.1:5071", "down", "probe timeout", 1, 2, None, False, 0),
    ],
    totals=Totals(40, 30, 6, 2, 20, 3, 2, 0, 1, 30, 3),
    now="pbx2 is down",
    events=["  12.0 s  script: pbx2 stopped answering"],
)


@pytest.mark.parametrize("colour", [False, True])
def test_render_shows_every_destination_and_the_totals(colour: bool) -> None:
    text = render(FRAME, colour=colour)
    assert ("\x1b[" in text) is colour
    plain = re.sub(r"\x1b\[[0-9;]*m", "", text)
    assert re.search(r"pbx1 +sip:127\.0\.0\.1:5070 +up +config +1 +4 +answering +4 +0\.4 ms", plain)
    assert re.search(r"pbx2 +sip:127\.0\.0\.1:5071 +down +probe timeout +1 +2 +SILENT +0 +-", plain)
    assert "placed 40  answered 30  in call 6  setting up 2" in plain
    assert "completed 20  cancelled 3  lost with a stopped pbx 2  failed 0" in plain
    assert "failovers 1" in plain
    assert "now      pbx2 is down" in plain
    assert "script: pbx2 stopped answering" in plain


def test_render_says_where_the_dashboard_is() -> None:
    shown = dataclasses.replace(FRAME, dashboard="http://127.0.0.1:8080/  (admin token t0k)")
    lines = render(shown, colour=False).splitlines()
    assert lines[1] == "dashboard    http://127.0.0.1:8080/  (admin token t0k)"
    plain = render(FRAME, colour=False).splitlines()
    assert not any(line.startswith("dashboard") for line in plain)


# ---- whole runs -----------------------------------------------------------------------------

BAD_SETTINGS = {
    "no calls": DemoSettings(cps=0),
    "port too high": DemoSettings(port=65530),
    "script backwards": DemoSettings(down_at=9, up_at=3),
    "negative duration": DemoSettings(duration=-1),
}


@pytest.mark.parametrize("name", list(BAD_SETTINGS))
def test_bad_settings_exit_2_before_binding(name: str) -> None:
    out = io.StringIO()

    async def run() -> DemoResult:
        return await Demo(BAD_SETTINGS[name], out).run()

    result = asyncio.run(run())
    assert result.exit_code == 2
    assert out.getvalue().startswith("siplb demo: ")


@pytest.fixture
def demo_port() -> int:
    return free_demo_port()


def test_cli_demo_answers_calls(demo_port: int) -> None:
    """``siplb demo --duration 4 --no-table``: calls answered, none failed, a summary, exit 0."""
    path = [str(SRC), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in path if p)}
    args = ["demo", "--duration", "4", "--no-table", "--port", str(demo_port), "--admin-port", "0"]
    proc = subprocess.run(
        [sys.executable, "-m", "siplb", *args],
        capture_output=True,
        text=True,
        timeout=40,
        env=env,
        check=False,
    )
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert f"demo PBXs on udp 127.0.0.1:{demo_port + 10}-{demo_port + 12}" in out
    assert re.search(
        r"dashboard and admin API on http://127\.0\.0\.1:\d+/ +\(admin token \S+\)", out
    )
    summary = out[out.index("summary after") :]
    line = " ".join(summary.splitlines()[1:3]).removeprefix("  calls")
    totals = {key: int(value) for key, value in re.findall(r"([a-z][a-z ]*?) +(\d+)", line)}
    assert totals["placed"] >= 12  # 4 calls/s for 4 s
    assert totals["answered"] >= 6
    assert totals["completed"] == totals["answered"]
    assert totals["lost with a stopped pbx"] == 0
    assert totals["failed"] == 0
    assert totals["completed"] + totals["cancelled"] == totals["placed"]
    assert totals["in call"] == totals["setting up"] == totals["hanging up"] == 0
    assert "balancer held no call when it stopped" in out
    assert "result: ok" in out


def test_demo_pbx_goes_down_and_comes_back_without_failing_a_call(demo_port: int) -> None:
    """pbx2 stops answering at 2 s and answers again at 6 s: the balancer marks it down, fails
    calls over, marks it up again and sends it calls; no call fails that its crash explains not."""
    settings = DemoSettings(
        duration=11.0,
        cps=8.0,
        port=demo_port,
        table=False,
        down_at=2.0,
        up_at=6.0,
        hold=(1.0, 3.0),
        seed=7,
        admin_port=0,
    )
    out = io.StringIO()
    given_up: dict[str, int] = {}
    served: list[tuple[int, object]] = []
    samples: list[tuple[float, int, int]] = []

    async def run() -> tuple[DemoResult, float]:
        demo = Demo(settings, out)
        reader = asyncio.create_task(_read_admin(demo, served))
        sampler = asyncio.create_task(_sample(demo, samples))
        result = await demo.run()
        await reader
        sampler.cancel()
        assert demo.caller is not None
        given_up.update(demo.caller.given_up)
        return result, demo.t0

    result, t0 = asyncio.run(run())
    text = out.getvalue()
    assert result.exit_code == 0, text
    assert result.unexplained == (), text

    pbx2 = [(at, state) for at, name, state in result.states if name == "pbx2"]
    down = next(at for at, state in pbx2 if state == "down")
    up = next(at for at, state in pbx2 if state == "up" and at > down)
    assert 2.0 < down < 5.0, pbx2  # two failures (probes or INVITEs) after the crash
    assert 6.0 < up < 9.0, pbx2  # two answered probes after it came back
    assert "destination pbx2: suspect -> down" in text or "destination pbx2: up -> down" in text

    records = result.records
    assert result.totals.failovers >= 1  # INVITEs sent to pbx2 before it was marked down
    assert any(r.outcome is Outcome.COMPLETED and r.pbx in ("pbx1", "pbx3") for r in records)
    # while the balancer showed pbx2 down, no new call reached it
    assert not [r for r in records if r.pbx == "pbx2" and down < r.started - t0 < up - 0.15]
    # once up again it takes calls again
    assert any(r.pbx == "pbx2" and r.answered and r.started - t0 > up for r in records)
    # every failure is a call pbx2 was in when it stopped answering
    failures = [r for r in records if r.outcome not in (Outcome.COMPLETED, Outcome.CANCELLED)]
    assert {r.pbx for r in failures} <= {"pbx2"}, failures
    assert all(r.started - t0 < 2.0 + 0.1 for r in failures), failures
    assert "result: ok" in text

    # the last table and the totals describe the same calls: each PBX's count at the balancer
    # is the calls the caller gave up on when stopping (cancelled, no final response yet)
    last = result.last
    assert last is not None
    assert last.totals.in_call == last.totals.setting_up == last.totals.hanging_up == 0
    assert {row.name: row.active_calls for row in last.rows} == {
        name: given_up.get(name, 0) for name in ("pbx1", "pbx2", "pbx3")
    }
    assert sum(row.active_calls for row in last.rows) == last.totals.given_up
    assert [row.pbx_calls for row in last.rows] == [0, 0, 0]
    # and so do the tables during the run (a call in flight may be seen by one side only)
    differ = [(at, table, caller) for at, table, caller in samples if table != caller]
    assert len(samples) >= 30
    assert len(differ) <= len(samples) // 10, differ
    # the dashboard and admin API ran with the demo, behind the token it printed
    assert [status for status, _ in served] == [401, 200, 200], served
    sets = served[2][1]
    assert isinstance(sets, dict)
    assert [len(s["destinations"]) for s in sets["sets"]] == [3]


async def _sample(demo: Demo, samples: list[tuple[float, int, int]]) -> None:
    """Every 0.25 s: the calls in the table (the balancer's count) and by the caller's totals."""
    while True:
        await asyncio.sleep(0.25)
        if demo.caller is None or demo.balancer is None or not demo.live:
            continue
        frame = demo.frame()
        t = frame.totals
        table = sum(row.active_calls for row in frame.rows)
        samples.append((frame.elapsed, table, t.in_call + t.setting_up + t.given_up))


async def _read_admin(demo: Demo, served: list[tuple[int, object]]) -> None:
    """Once the demo's admin API listens: /api/status without the token, then the page and
    /api/sets with it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5.0
    # the demo offers nothing to await for its start: polled, bounded by the deadline
    while not demo.dashboard and loop.time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    assert demo.dashboard.startswith("http://127.0.0.1:"), demo.dashboard
    url = demo.dashboard.split("/  ")[0]
    for path, token in (("/api/status", None), ("/", demo.token), ("/api/sets", demo.token)):
        served.append(await asyncio.to_thread(_get, url + path, token))


def _get(url: str, token: str | None) -> tuple[int, object]:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5.0) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    try:
        return status, json.loads(body)
    except json.JSONDecodeError:
        return status, body.decode(errors="replace")
