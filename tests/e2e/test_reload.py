"""Reload without dropping calls: a real ``siplb run`` reloads its file (SIGHUP and the admin
API) while a bounded SIPp run goes through it; one destination is removed, another added."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from .balancer import SiplbProcess, start_siplb, write_config
from .conftest import SippLauncher

pytestmark = pytest.mark.e2e

CALLS, RATE, HOLD_MS = 400, 40, 800


@pytest.fixture
def balancers() -> Iterator[list[SiplbProcess]]:
    started: list[SiplbProcess] = []
    yield started
    for proc in started:
        code = proc.stop()
        assert code == 0, f"siplb exited with {code} on SIGTERM\n{proc.log_tail()}"


def _rewrite(lb: SiplbProcess, destinations: list[str], extra: str = "") -> None:
    assert lb.admin_url is not None
    write_config(
        lb.config_path,
        lb.address[1],
        destinations,
        admin_port=urlsplit(lb.admin_url).port,
        extra=extra,
    )


def _uris(lb: SiplbProcess) -> dict[str, dict[str, object]]:
    status, body = lb.api("GET", "/api/sets")
    assert status == 200, body
    sets = body["sets"]  # type: ignore[index]
    return {d["uri"]: d for s in sets for d in s["destinations"]}


def test_reload_during_calls_removes_one_destination_and_adds_another(
    sipp: SippLauncher, e2e_workdir: Path, balancers: list[SiplbProcess]
) -> None:
    a, b, c = sipp.uases(3)
    lb = start_siplb(e2e_workdir, [a.sip_uri, b.sip_uri])
    balancers.append(lb)
    uac = sipp.uac(lb.address, calls=CALLS, rate=RATE, duration_ms=HOLD_MS, timeout_s=60)
    time.sleep(3.0)

    # A broken file is refused with every problem listed; the running config stays.
    _rewrite(lb, [a.sip_uri, "sip:not a uri", c.sip_uri], extra="[bogus]\nkey = 1\n")
    status, refused = lb.api("POST", "/api/reload")
    assert status == 422, refused
    paths = {p["path"] for p in refused["problems"]}  # type: ignore[index]
    assert len(paths) >= 2, refused
    assert set(_uris(lb)) == {a.sip_uri, b.sip_uri}

    # The real change, by SIGHUP: B leaves (it drains its calls), C joins.
    _rewrite(lb, [a.sip_uri, c.sip_uri])
    b_calls_before = int(_uris(lb)[b.sip_uri]["calls_total"])  # type: ignore[call-overload]
    lb.signal(signal.SIGHUP)
    deadline = time.monotonic() + 3.0
    while c.sip_uri not in _uris(lb) and time.monotonic() < deadline:
        time.sleep(0.05)
    during = _uris(lb)
    assert c.sip_uri in during, during
    if b.sip_uri in during:  # still carrying calls: shown as removed and draining
        assert during[b.sip_uri]["removed"] is True
        assert during[b.sip_uri]["state"] in ("draining", "drained")

    result = uac.wait(60)
    stats = result.stats
    assert stats.successful_calls == CALLS, result.describe()
    assert stats.failed_calls == 0, result.describe()

    after = _uris(lb)
    assert set(after) == {a.sip_uri, c.sip_uri}, after  # B's last call ended: it is gone
    # about 280 calls came after the reload, shared by A and C in turn
    assert int(after[c.sip_uri]["calls_total"]) >= 60, after  # type: ignore[call-overload]

    received = [u.stop().stats.calls_received for u in (a, b, c)]
    assert sum(received) == CALLS, received
    assert received[1] <= b_calls_before + RATE * 0.5, received  # nothing new went to B
    _status, events = lb.api("GET", "/api/events?limit=500")
    reloads = [e for e in events["events"] if e["kind"] == "reload"]  # type: ignore[index]
    assert [r["message"].startswith("reloaded") for r in reloads] == [False, True], reloads
    assert "SIGHUP" in reloads[1]["message"]
