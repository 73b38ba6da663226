"""``/metrics``: Prometheus text parsed back with prometheus_client's own parser."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from siplb.admin.metrics import method_label, reason_label
from siplb.proxy.actions import FailedOver, MessageDropped, Target

from .conftest import DESTS, Lab, admin_lab, run_async

A, B = DESTS
SOURCE = Target("udp", "127.0.0.1", 40000)

NAMES = [
    "siplb_build_info",
    "siplb_start_time_seconds",
    "siplb_config_info",
    "siplb_requests",
    "siplb_responses",
    "siplb_local_responses",
    "siplb_retransmissions",
    "siplb_transactions",
    "siplb_calls_active",
    "siplb_probes",
    "siplb_parse_errors",
    "siplb_destination_state",
    "siplb_destination_active_calls",
    "siplb_destination_max_calls",
    "siplb_destination_weight",
    "siplb_destination_calls",
    "siplb_destination_failures",
    "siplb_probe_latency_seconds",
    "siplb_failovers",
    "siplb_dropped",
    "siplb_reloads",
    "siplb_admin_refused",
    "siplb_internal_errors",
    "siplb_requests_refused",
    "siplb_bans_active",
    "siplb_bans",
    "siplb_pending_transactions",
    "siplb_stream_connections_refused",
    "siplb_stream_connections",
    "siplb_stream_buffered_bytes",
    "siplb_admin_requests_refused",
]


async def scrape(lab: Lab) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = await lab.client.get("/metrics", headers=lab.auth)
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for family in text_string_to_metric_families(await response.text()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def options(call_id: str, port: int) -> bytes:
    return (
        f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:40000;branch=z9hG4bK{call_id}\r\n"
        f"Max-Forwards: 70\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:x@y>\r\nCall-ID: {call_id}\r\n"
        f"CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    ).encode()


@run_async
async def test_every_metric_family_is_exposed(tmp_path: Path) -> None:
    async with admin_lab(tmp_path) as lab:
        response = await lab.client.get("/metrics", headers=lab.auth)
        families = {f.name for f in text_string_to_metric_families(await response.text())}
        assert set(NAMES) <= families, set(NAMES) - families
        assert all(name.startswith("siplb_") for name in families)


@run_async
async def test_traffic_counters_come_from_the_proxy(tmp_path: Path) -> None:
    async with admin_lab(tmp_path) as lab:
        proxy = lab.balancer.proxy
        assert proxy is not None
        port = lab.balancer.listeners[0].port
        now = lab.balancer.loop.time()
        for i in range(3):
            proxy.receive(options(f"o{i}", port), SOURCE, 0, now)
        proxy.receive(
            b"FOO sip:x@y SIP/2.0\r\nVia: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bKf\r\n"
            b"From: <sip:a@b>;tag=1\r\nTo: <sip:x@y>\r\nCall-ID: f\r\nCSeq: 1 FOO\r\n"
            b"Content-Length: 0\r\n\r\n",
            SOURCE,
            0,
            now,
        )
        proxy.receive(b"\x00garbage", SOURCE, 0, now)
        proxy.receive(
            b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKnotours\r\n"
            b"From: <sip:a@b>;tag=1\r\nTo: <sip:x@y>\r\nCall-ID: r\r\nCSeq: 1 INVITE\r\n"
            b"Content-Length: 0\r\n\r\n",
            SOURCE,
            0,
            now,
        )
        lab.balancer.driver.flush()
        samples = await scrape(lab)
        assert value(samples, "siplb_requests_total", method="OPTIONS") == 3
        assert value(samples, "siplb_requests_total", method="other") == 1
        assert value(samples, "siplb_responses_total", method="INVITE", **{"class": "2xx"}) == 1
        assert (
            value(samples, "siplb_dropped_total", reason="response whose top Via is not ours") == 1
        )
        errors = {k[1]: v for k, v in samples.items() if k[0] == "siplb_parse_errors_total"}
        assert sum(errors.values()) == 1, errors
        assert value(samples, "siplb_transactions", side="server") >= 3


@run_async
async def test_destination_gauges_state_and_failovers(tmp_path: Path) -> None:
    async with admin_lab(tmp_path) as lab:
        proxy = lab.balancer.proxy
        assert proxy is not None
        proxy.dispatcher.accounting.setup_started(b"c1", A, 0.0)
        proxy.dispatcher.accounting.confirmed(b"c1", 0.0)
        await lab.json("POST", f"/api/sets/pbx/destinations/{B}/drain")
        proxy.events.append(FailedOver("c1", "pbx", B, "timeout"))
        proxy.events.append(FailedOver("c2", "pbx", B, "503"))
        proxy.events.append(MessageDropped("malformed: who knows", SOURCE))
        lab.balancer.driver.flush()
        samples = await scrape(lab)
        pair_a = {"set": "pbx", "destination": A}
        pair_b = {"set": "pbx", "destination": B}
        assert value(samples, "siplb_destination_active_calls", **pair_a) == 1
        assert value(samples, "siplb_destination_calls_total", **pair_a) == 1
        assert value(samples, "siplb_destination_weight", **pair_b) == 1
        states_b = {
            s: value(samples, "siplb_destination_state", **pair_b, state=s)
            for s in ("up", "suspect", "down", "draining", "drained", "disabled")
        }
        assert states_b == {
            "up": 0,
            "suspect": 0,
            "down": 0,
            "draining": 0,
            "drained": 1,
            "disabled": 0,
        }
        assert value(samples, "siplb_destination_state", **pair_a, state="up") == 1
        assert value(samples, "siplb_failovers_total", **pair_b) == 2
        assert value(samples, "siplb_dropped_total", reason="malformed") == 1
        assert value(samples, "siplb_calls_active") == 1


@run_async
async def test_probe_latency_histogram_is_fed_once_per_answer(tmp_path: Path) -> None:
    async with admin_lab(tmp_path) as lab:
        proxy = lab.balancer.proxy
        assert proxy is not None
        assert proxy.prober is not None
        prober = proxy.prober
        for rtt in (0.0008, 0.003, 0.2):
            prober.latency[A].append(rtt)
            prober.answered[A] += 1
        lab.server.sample()
        lab.server.sample()  # nothing new: nothing observed twice
        samples = await scrape(lab)
        assert value(samples, "siplb_probe_latency_seconds_count", destination=A) == 3
        assert value(samples, "siplb_probe_latency_seconds_bucket", destination=A, le="0.001") == 1
        assert value(samples, "siplb_probe_latency_seconds_bucket", destination=A, le="0.005") == 2
        assert value(samples, "siplb_probe_latency_seconds_sum", destination=A) == pytest.approx(
            0.2038
        )
        assert value(samples, "siplb_probe_latency_seconds_count", destination=B) == 0


@run_async
async def test_reload_rebinds_destination_children_and_counts(tmp_path: Path) -> None:
    async with admin_lab(tmp_path) as lab:
        new = "sip:127.0.0.1:29"
        lab.write_config(lab.config_path.read_text().replace(B, new))
        await lab.json("POST", "/api/reload")
        lab.write_config("not toml [")
        await lab.json("POST", "/api/reload")
        samples = await scrape(lab)
        latency = {
            dict(k[1])["destination"]
            for k in samples
            if k[0] == "siplb_probe_latency_seconds_count"
        }
        assert latency == {A, new}
        assert value(samples, "siplb_reloads_total", result="ok") == 1
        assert value(samples, "siplb_reloads_total", result="refused") == 1


LABELS = [
    (method_label, "INVITE", "INVITE"),
    (method_label, "PUBLISH", "PUBLISH"),
    (method_label, "XYZZY", "other"),
    (
        reason_label,
        "body shorter than Content-Length (3 < 500)",
        "body shorter than Content-Length",
    ),
    (reason_label, "unsupported SIP version 7.0", "unsupported SIP version"),
    (reason_label, "unsupported URI scheme 'tel'", "unsupported URI scheme"),
    (reason_label, "missing mandatory header Call-ID", "missing mandatory header Call-ID"),
    (reason_label, "unparseable message (IndexError)", "unparseable message"),
]


@pytest.mark.parametrize(("function", "given", "expected"), LABELS)
def test_labels_are_bounded(function: object, given: str, expected: str) -> None:
    assert function(given) == expected  # type: ignore[operator]
