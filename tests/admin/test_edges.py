"""An operator's first week, against a real ``siplb run`` on loopback: attrs shown by the API
and ``siplb status``, ``siplb status SET`` with its totals row, weight 0, a refused
``siplb reload -c FILE`` that the balancer logs, counts and journals, and probe round trips
measured below the millisecond."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from anycast.responder import answer
from e2e.balancer import ADMIN_TOKEN, SiplbProcess, launch
from e2e.harness import LOOPBACK, free_port
from siplb.cli import main

pytestmark = pytest.mark.e2e

SILENT = f"sip:{LOOPBACK}:9"  # bound by the admin tests' fixture: never answers


class Responder:
    """A destination that answers every request 200 (the probes), on its own thread."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((LOOPBACK, free_port()))
        self.sock.settimeout(0.1)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    @property
    def uri(self) -> str:
        return f"sip:{LOOPBACK}:{self.sock.getsockname()[1]}"

    def _run(self) -> None:
        while not self.stopped.is_set():
            try:
                data, peer = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            self.sock.sendto(answer(data), peer)

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(2.0)
        self.sock.close()


def config(port: int, admin_port: int, live: str, *, broken: bool = False) -> str:
    bad = '\n[[sets]]\nname = "bad"\nhealth = { interval = "often" }\ndestinations = []\n'
    return f"""
[[listen]]
transport = "udp"
address = "{LOOPBACK}:{port}"

[[sets]]
name = "pbx"
destinations = [
  {{ uri = "{live}", attrs = {{ site = "paris", rack = "r7" }} }},
  {{ uri = "{SILENT}", weight = 2 }},
]

[[sets]]
name = "reg"
health = {{ interval = 0.2, timeout = 0.1 }}
destinations = [{{ uri = "{live}" }}]
{bad if broken else ""}
[health]
interval = 1.0
timeout = 0.5

[log]
format = "json"

[admin]
listen = "{LOOPBACK}:{admin_port}"
token = "{ADMIN_TOKEN}"
"""


@pytest.fixture(scope="module")
def responder() -> Iterator[Responder]:
    live = Responder()
    yield live
    live.stop()


@pytest.fixture(scope="module")
def lb(tmp_path_factory: pytest.TempPathFactory, responder: Responder) -> Iterator[SiplbProcess]:
    workdir = tmp_path_factory.mktemp("edges")
    port, admin_port = free_port(), free_port()
    path = workdir / "siplb.toml"
    path.write_text(config(port, admin_port, responder.uri))
    proc = launch(workdir, path, (LOOPBACK, port), admin_port)
    yield proc
    assert proc.stop() == 0, proc.log_tail()


def cli(lb: SiplbProcess, *args: str, admin: bool = True) -> tuple[int, str, str]:
    env = {
        "SIPLB_ADMIN": (lb.admin_url or "") if admin else "",
        "SIPLB_ADMIN_TOKEN": ADMIN_TOKEN,
        "SIPLB_ADMIN_TOKEN_FILE": "",
    }
    result = CliRunner().invoke(main, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


def destinations(lb: SiplbProcess) -> dict[tuple[str, str], dict[str, object]]:
    status, body = lb.api("GET", "/api/sets")
    assert status == 200, body
    return {(s["name"], d["uri"]): d for s in body["sets"] for d in s["destinations"]}  # type: ignore[index]


def wait_for(what: str, check: Callable[[], bool], lb: SiplbProcess, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.02)
    pytest.fail(f"{what} within {timeout} s\n{lb.log_tail()}")


def test_attrs_in_the_api_and_in_status(lb: SiplbProcess, responder: Responder) -> None:
    dests = destinations(lb)
    assert dests[("pbx", responder.uri)]["attrs"] == {"site": "paris", "rack": "r7"}
    assert dests[("pbx", SILENT)]["attrs"] == {}
    code, out, err = cli(lb, "status", "--json")
    assert code == 0, err
    body = json.loads(out)
    shown = {d["uri"]: d["attrs"] for d in body["sets"][0]["destinations"]}
    assert shown == {responder.uri: {"site": "paris", "rack": "r7"}, SILENT: {}}
    code, out, err = cli(lb, "status")
    assert code == 0, err
    head = next(line for line in out.splitlines() if "Destination" in line)
    assert head.split()[-1] == "Attrs"
    row = next(line for line in out.splitlines() if line.startswith(f"  -> {responder.uri}"))
    assert row.split()[-1] == "site=paris,rack=r7"


def test_status_of_one_set_with_its_totals(lb: SiplbProcess, responder: Responder) -> None:
    code, out, err = cli(lb, "status", "reg")
    assert code == 0, err
    lines = out.splitlines()
    assert "reg round-robin" in lines
    assert "pbx round-robin" not in lines
    rows = [line.split()[1] for line in lines if line.startswith("  -> sip:")]
    assert rows == [responder.uri]
    total = lines[-1].split()
    assert total[:6] == ["=", "Total:", "1", "destinations,", "1", "up"], lines[-1]
    code, out, err = cli(lb, "status", "--json", "pbx")
    assert code == 0, err
    assert [s["name"] for s in json.loads(out)["sets"]] == ["pbx"]
    code, _, err = cli(lb, "status", "nope")
    assert code == 1
    assert "no set nope (sets: pbx, reg)" in err


def test_weight_0_takes_a_destination_out_and_back(lb: SiplbProcess, responder: Responder) -> None:
    code, out, err = cli(lb, "dest", "weight", "pbx", SILENT, "0")
    assert code == 0, err
    assert out.strip() == f"{SILENT} in pbx: weight 0 (no new calls in this set)"
    assert destinations(lb)[("pbx", SILENT)]["weight"] == 0
    status, body = lb.api("PUT", f"/api/sets/pbx/destinations/{SILENT}/weight", {"weight": 3})
    assert (status, body["weight"]) == (200, 3)  # type: ignore[index]
    status, body = lb.api("PUT", f"/api/sets/pbx/destinations/{SILENT}/weight", {"weight": -1})
    assert status == 400, body
    _, events = lb.api("GET", "/api/events")
    weights = [e["message"] for e in events["events"] if e["kind"] == "weight"]  # type: ignore[index]
    assert any("0" in m for m in weights), weights


def test_probe_latency_is_measured_below_the_millisecond(
    lb: SiplbProcess, responder: Responder
) -> None:
    def timed() -> bool:
        latency = destinations(lb)[("reg", responder.uri)]["latency_ms"]
        return isinstance(latency, dict) and latency["samples"] >= 5

    wait_for("5 probe answers timed", timed, lb)
    latency = destinations(lb)[("reg", responder.uri)]["latency_ms"]
    assert isinstance(latency, dict)
    # p95 is one measured round trip, and the histogram's sum a sum of them: from a millisecond
    # clock, whole numbers of milliseconds (0.0 for most loopback answers); their size depends
    # on the machine's load, not asserted
    assert latency["p95"] > 0, latency
    total = metric(lb, "siplb_probe_latency_seconds_sum", destination=responder.uri)
    assert total > 0
    assert not (whole(latency["p95"]) and whole(total * 1000)), (latency, total)
    code, out, _ = cli(lb, "status", "reg")
    assert code == 0
    row = next(line for line in out.splitlines() if line.startswith(f"  -> {responder.uri}"))
    avg, _, p95 = row.split()[8].partition("/")
    assert len(avg.split(".")[1]) == len(p95.split(".")[1]) == 3, row


def whole(value: float) -> bool:
    return abs(value - round(value)) < 1e-6


def metric(lb: SiplbProcess, name: str, **labels: str) -> float:
    """One sample of ``/metrics`` (0 when absent)."""
    assert lb.admin_url is not None
    request = urllib.request.Request(lb.admin_url + "/metrics")
    request.add_header("Authorization", f"Bearer {ADMIN_TOKEN}")
    with urllib.request.urlopen(request, timeout=5.0) as response:
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def reloads(lb: SiplbProcess) -> dict[str, float]:
    return {
        result: metric(lb, "siplb_reloads_total", result=result) for result in ("ok", "refused")
    }


def test_a_refused_reload_from_the_cli_leaves_a_trace(
    lb: SiplbProcess, responder: Responder
) -> None:
    before = reloads(lb)
    text = lb.config_path.read_text()
    port = lb.address[1]
    admin_port = int((lb.admin_url or "").rsplit(":", 1)[1])
    lb.config_path.write_text(config(port, admin_port, responder.uri, broken=True))
    try:
        # the admin address comes from the broken file itself (its [admin] is fine)
        code, _, err = cli(lb, "reload", "-c", str(lb.config_path), admin=False)
    finally:
        lb.config_path.write_text(text)
    assert code == 2, err
    assert "the running config stays" in err
    assert "sets[2].health.interval" in err
    assert "sets[2].destinations" in err
    # counted ...
    after = reloads(lb)
    assert after.get("refused", 0) == before.get("refused", 0) + 1, (before, after)
    # ... in the journal, with its problems ...
    _, events = lb.api("GET", "/api/events")
    refused = [e["message"] for e in events["events"] if e["kind"] == "reload"]  # type: ignore[index]
    assert refused, events
    assert "refused" in refused[-1]
    assert "sets[2].health.interval" in refused[-1]
    # ... and logged with every problem
    logged = [e for e in lb.log_lines() if "reload refused" in e.get("msg", "")]
    assert logged, lb.log_tail()
    assert "sets[2].health.interval" in logged[-1]["msg"]
    assert "sets[2].destinations" in logged[-1]["msg"]
    # the running config stays
    assert ("pbx", SILENT) in destinations(lb)


def test_a_file_whose_admin_is_broken_is_refused_locally(lb: SiplbProcess, tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[admin]\nlisten = "nowhere"\n')
    code, _, err = cli(lb, "reload", "-c", str(path), admin=False)
    assert code == 2
    assert "admin.listen" in err
