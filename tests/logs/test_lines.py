"""What a real ``siplb run`` writes: JSON lines with fields for a health state change, the
date in human lines, one line per (worker-tagged) worker, a port in use named, repeats left
out, and one debug line per SIP message of a real SIPp call."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from e2e import sipp as sp
from e2e.balancer import ADMIN_TOKEN, admin_request
from e2e.cluster import wait_for
from e2e.harness import LOOPBACK, free_port

from .run import Run, start

pytestmark = pytest.mark.e2e


@pytest.fixture
def runs() -> Iterator[list[Run]]:
    started: list[Run] = []
    yield started
    for run in started:
        run.stop()


@pytest.fixture
def uases() -> Iterator[list[sp.SippProcess]]:
    started: list[sp.SippProcess] = []
    yield started
    sp.stop_all(started)


def state_lines(run: Run, uri: str, new: str) -> list[dict[str, object]]:
    return [
        entry
        for entry in run.json()
        if entry.get("event") == "StateChanged"
        and entry.get("destination") == uri
        and entry.get("new") == new
    ]


def test_a_health_state_change_is_a_json_line_with_its_fields(
    tmp_path: Path, runs: list[Run], uases: list[sp.SippProcess]
) -> None:
    uas = sp.start_uas(tmp_path, max_calls=10)
    uases.append(uas)
    admin = f"{LOOPBACK}:{free_port()}"
    extra = f'\n[admin]\nlisten = "{admin}"\ntoken = "{ADMIN_TOKEN}"\n'
    run = start(tmp_path, "--log-format", "json", destinations=[uas.sip_uri], extra=extra)
    runs.append(run)
    wait_for("up", lambda: bool(state_lines(run, uas.sip_uri, "up")), timeout=10.0)
    dest = f"http://{admin}/api/sets/pbx/destinations/{quote(uas.sip_uri, safe='')}"
    status, _ = admin_request(dest + "/drain", "POST", {}, token=ADMIN_TOKEN)
    assert status == 200
    status, _ = admin_request(dest + "/enable", "POST", {}, token=ADMIN_TOKEN)
    assert status == 200
    bans = f"http://{admin}/api/bans"
    body = {"host": "192.0.2.7", "seconds": 60}
    status, _ = admin_request(bans, "POST", body, token=ADMIN_TOKEN)
    assert status in (200, 201)
    actions = [e for e in run.json() if e.get("event") == "admin"]
    assert [(e.get("action"), e.get("destination"), e.get("set")) for e in actions[:2]] == [
        ("draining", uas.sip_uri, "pbx"),
        ("enabled", uas.sip_uri, "pbx"),
    ]
    assert (actions[2]["action"], actions[2]["source"], actions[2]["seconds"]) == (
        "ban",
        "192.0.2.7",
        60,
    )
    sp.stop_all([uas])
    wait_for("down", lambda: bool(state_lines(run, uas.sip_uri, "down")), timeout=10.0)
    (down,) = state_lines(run, uas.sip_uri, "down")
    assert down["level"] == "warning"
    assert down["set"] == "pbx"
    assert down["old"] == "up"
    assert isinstance(down["cause"], str)
    assert down["cause"]
    assert down["msg"] == f"destination {uas.sip_uri}: up -> down ({down['cause']})"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", str(down["ts"]))
    (listening,) = [e for e in run.json() if str(e["msg"]).startswith("listening on")]
    assert listening["listener"] == "edge"
    assert listening["transport"] == "udp"
    assert listening["address"] == f"{LOOPBACK}:{run.address[1]}"
    added = f"sip:{LOOPBACK}:{free_port()}"
    config = tmp_path / "siplb.toml"
    config.write_text(
        config.read_text().replace(
            f'"{uas.sip_uri}" }}', f'"{uas.sip_uri}" }},\n  {{ uri = "{added}" }}'
        )
    )
    run.process.signal(signal.SIGHUP)
    wait_for("reload", lambda: any(e.get("event") == "reload" for e in run.json()), timeout=10.0)
    (reload,) = [e for e in run.json() if e.get("event") == "reload"]
    assert (reload["ok"], reload["trigger"], reload["added"]) == (True, "SIGHUP", [f"pbx {added}"])
    assert run.stop() == 0
    node = [e for e in run.json() if e.get("event") == "node"]
    assert node[0]["new"] == "drained"


def test_human_lines_carry_the_date(tmp_path: Path, runs: list[Run]) -> None:
    run = start(tmp_path, destinations=[f"sip:{LOOPBACK}:{free_port()}"])
    runs.append(run)
    run.wait_line("listening", "listening on udp")
    line = next(line for line in run.lines() if "listening on udp" in line)
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
    assert re.match(rf"{stamp} INFO    siplb: listening on udp {LOOPBACK}:\d+ listener=edge$", line)


@pytest.mark.parametrize("fmt", ["human", "json"])
def test_each_worker_says_which_it_is(tmp_path: Path, runs: list[Run], fmt: str) -> None:
    run = start(
        tmp_path,
        "--log-format",
        fmt,
        destinations=[f"sip:{LOOPBACK}:{free_port()}"],
        extra="\n[proxy]\nworkers = 2\n",
    )
    runs.append(run)
    run.wait_line("worker 1", "worker 1 of 2 started")
    run.wait_line("worker 0", "worker 0 of 2 started")
    if fmt == "json":
        started = {e["msg"]: e.get("worker") for e in run.json() if "of 2 started" in str(e["msg"])}
        assert started == {"worker 0 of 2 started": 0, "worker 1 of 2 started": 1}
        parent = [e for e in run.json() if str(e["msg"]).startswith("worker 0 started (pid")]
        assert parent
        assert "worker" not in parent[0]  # the parent is no worker
    else:
        lines = run.lines()
        assert any(" siplb [w0]: worker 0 of 2 started" in line for line in lines)
        assert any(" siplb [w1]: worker 1 of 2 started" in line for line in lines)
    assert run.stop() == 0


@pytest.mark.parametrize(("transport", "workers"), [("udp", 1), ("udp", 2), ("tcp", 1), ("tcp", 2)])
def test_a_port_in_use_names_the_listener(tmp_path: Path, transport: str, workers: int) -> None:
    kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, kind) as busy:
        busy.bind((LOOPBACK, 0))
        if transport == "tcp":
            busy.listen()
        port = busy.getsockname()[1]
        config = tmp_path / "siplb.toml"
        udp = free_port()
        listen = f'[[listen]]\ntransport = "{transport}"\naddress = "{LOOPBACK}:{port}"\n'
        listen += 'name = "edge"\n'
        if transport == "tcp":
            listen += f'\n[[listen]]\ntransport = "udp"\naddress = "{LOOPBACK}:{udp}"\n'
        config.write_text(
            f'{listen}\n[[sets]]\nname = "pbx"\ndestinations = [{{ uri = "sip:{LOOPBACK}:9" }}]\n'
            f"\n[proxy]\nworkers = {workers}\n"
        )
        done = subprocess.run(
            [sys.executable, "-m", "siplb", "run", "-c", str(config)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            cwd=tmp_path,
        )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    wanted = f"cannot listen on listener 'edge' ({transport} {LOOPBACK}:{port}): "
    assert wanted + "Address already in use" in done.stderr, done.stderr


def test_a_refusing_destination_logs_once_in_a_while(tmp_path: Path, runs: list[Run]) -> None:
    """A TCP destination on a closed port refuses every probe (five a second here): one line."""
    closed = free_port()
    uri = f"sip:{LOOPBACK}:{closed};transport=tcp"
    health = "interval = 0.2\ntimeout = 0.1\ndown_after = 1\nup_after = 1\nwithdraw_delay = 0\n"
    run = start(tmp_path, destinations=[uri], health=health)
    runs.append(run)
    refused = f"cannot connect to tcp:{LOOPBACK}:{closed}"
    run.wait_line("first refusal", refused)
    start_at = time.monotonic()
    time.sleep(3.0)  # a span to count lines over (absence has no condition to wait for)
    span = time.monotonic() - start_at
    assert span >= 3.0
    lines = [line for line in run.lines() if refused in line]
    assert len(lines) == 1, lines  # ~15 probes refused meanwhile
    assert run.stop() == 0


def test_debug_lines_follow_one_real_call(
    tmp_path: Path, runs: list[Run], uases: list[sp.SippProcess]
) -> None:
    uas = sp.start_uas(tmp_path, max_calls=10)
    uases.append(uas)
    run = start(
        tmp_path, "--log-format", "json", "--log-level", "debug", destinations=[uas.sip_uri]
    )
    runs.append(run)
    wait_for("up", lambda: bool(state_lines(run, uas.sip_uri, "up")), timeout=10.0)
    result = sp.run_uac(run.address, tmp_path, calls=1, rate=1.0, timeout_s=20.0)
    assert result.stats.successful_calls == 1, result.errors
    traced = [e for e in run.json() if e["logger"] == "siplb.sip" and e.get("call_id")]
    calls = {e["call_id"] for e in traced if str(e["first_line"]).startswith("INVITE")}
    assert len(calls) == 1
    (call_id,) = calls
    mine = [e for e in traced if e["call_id"] == call_id]
    firsts = [str(e["first_line"]).split(" ")[0] for e in mine]
    for wanted in ("INVITE", "ACK", "BYE"):
        assert wanted in firsts, firsts
    assert "SIP/2.0" in firsts  # the PBX's answers
    invite = next(e for e in mine if str(e["first_line"]).startswith("INVITE"))
    assert invite["decision"] == "forwarded"
    assert invite["to"] == f"udp:{uas.host}:{uas.port}"
    assert f"forwarded to udp:{uas.host}:{uas.port}" in str(invite["msg"])
    assert str(invite["source"]).startswith(f"udp:{LOOPBACK}:")
    ok = [e for e in mine if str(e["first_line"]).startswith("SIP/2.0 200")]
    assert ok
    assert all(e["decision"] == "forwarded" for e in ok)
