"""The engines as operators see them: ``/api/status`` ``media``, ``/metrics``, ``siplb status``
and a reload, on a real balancer with its admin app and real rtpengines."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from admin.conftest import TOKEN, Lab, admin_lab, config_text, run_async
from siplb.cli import main

from .engine import Engine, running_engine, start_engine
from .test_rtpengine import offer

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def media_table(*engines: Engine, ping_interval: float = 0.2) -> str:
    listed = ", ".join(f'"{engine.address}"' for engine in engines)
    return f"\n[media]\nengines = [{listed}]\ntimeout = 0.3\nping_interval = {ping_interval}\n"


async def scrape(lab: Lab) -> Samples:
    response = await lab.client.get("/metrics", headers=lab.auth)
    assert response.status == 200
    samples: Samples = {}
    for family in text_string_to_metric_families(await response.text()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


async def media_status(lab: Lab) -> dict[str, object]:
    status, body = await lab.json("GET", "/api/status")
    assert status == 200
    media = body["media"]
    assert isinstance(media, dict)
    return media


async def wait_until(check: Callable[[], bool], what: str, deadline: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while not check():
        assert loop.time() < end, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def states(lab: Lab) -> dict[str, str]:
    view = lab.balancer.media_view()
    assert view is not None
    return {reading.address: str(reading.state) for reading in view.engines}


@run_async
async def test_without_media_there_is_no_media_object(tmp_path: Path) -> None:
    async with admin_lab(tmp_path) as lab:
        status, body = await lab.json("GET", "/api/status")
        assert (status, body["media"]) == (200, None)
        assert not any(name.startswith("siplb_media") for name, _ in await scrape(lab))


@run_async
async def test_status_metrics_and_the_cli_show_the_engines(tmp_path: Path) -> None:
    with running_engine(tmp_path / "engine") as engine:
        async with admin_lab(tmp_path, config_text(extra=media_table(engine))) as lab:
            address = engine.address
            await wait_until(lambda: states(lab) == {address: "up"}, "the ping's answer")
            assert lab.balancer.media is not None
            assert await lab.balancer.media.handle(offer("ops-1")) is not None

            media = await media_status(lab)
            (shown,) = media["engines"]  # type: ignore[misc]
            assert shown["address"] == address
            assert (shown["state"], shown["calls"], shown["offers"]) == ("up", 1, 1)
            assert 0 < shown["offer_p50_ms"] <= shown["offer_max_ms"] < 300
            assert shown["failures"] == {}
            assert (media["calls"], media["pending"]) == (1, 0)

            samples = await scrape(lab)
            engine_label = (("engine", address),)
            assert samples[("siplb_media_engine_up", engine_label)] == 1
            assert samples[("siplb_media_calls", engine_label)] == 1
            assert samples[("siplb_media_offer_seconds_count", engine_label)] == 1
            assert (
                samples[("siplb_media_offer_seconds_bucket", (*engine_label, ("le", "+Inf")))] == 1
            )
            offer_failures = (("engine", address), ("op", "offer"))
            assert samples[("siplb_media_failures_total", offer_failures)] == 0

            url = str(lab.client.make_url("")).rstrip("/")
            env = {"SIPLB_ADMIN": url, "SIPLB_ADMIN_TOKEN": TOKEN, "SIPLB_ADMIN_TOKEN_FILE": ""}
            result = await asyncio.to_thread(CliRunner().invoke, main, ["status"], env=env)
            assert result.exit_code == 0, result.output
            lines = result.stdout.splitlines()
            assert "Media: 1 engine, 1 up; 1 call anchored; 0 commands waiting" in lines
            (row,) = [line for line in lines if line.startswith(f"  -> {address}")]
            assert row.split()[2:6] == ["up", "1", "1", "1"]  # state, weight, calls, offers

            engine.kill()
            await wait_until(lambda: states(lab) == {address: "down"}, "the engine down")
            samples = await scrape(lab)
            assert samples[("siplb_media_engine_up", engine_label)] == 0
            ping_failures = (("engine", address), ("op", "ping"))
            assert samples[("siplb_media_failures_total", ping_failures)] >= 1
            media = await media_status(lab)
            assert media["engines"][0]["state"] == "down"  # type: ignore[index]


@run_async
async def test_a_reload_adds_and_removes_engines(tmp_path: Path) -> None:
    first = start_engine(folder=tmp_path / "a")
    second = start_engine(folder=tmp_path / "b")
    try:
        async with admin_lab(tmp_path, config_text(extra=media_table(first))) as lab:
            await wait_until(lambda: states(lab) == {first.address: "up"}, "the first engine")
            lab.write_config(config_text(extra=media_table(second)))
            status, body = await lab.json("POST", "/api/reload")
            assert status == 200, body
            await wait_until(lambda: states(lab) == {second.address: "up"}, "the second engine")
            assert lab.balancer.media is not None
            sdp = await lab.balancer.media.handle(offer("after-reload"))
            assert sdp is not None
            assert second.knows("after-reload")
            # removing [media] waits for a restart, and the reload says so
            lab.write_config(config_text())
            status, body = await lab.json("POST", "/api/reload")
            assert status == 200, body
            assert any("[media]" in warning for warning in body["warnings"]), body
            assert states(lab) == {second.address: "up"}
    finally:
        first.stop()
        second.stop()
