"""Two real rtpengines behind siplb; one is killed during a bounded SIPp run (100 calls at
20/s, each with SDP both ways). No call fails: an offer that meets the dead engine goes on to
the other within the same wait, and the calls set up after the kill are all on the live one."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from e2e import sipp as sp
from e2e.balancer import launch, write_config
from e2e.harness import LOOPBACK, free_port
from media.engine import Engine, running_engine

from .common import wait_up

pytestmark = pytest.mark.e2e

CALLS, RATE = 100, 20.0
KILL_AFTER = 2.0  # seconds into the run: about 40 calls placed


def offers(engine: Engine) -> int:
    """Offers the engine took, from its own log (its calls are deleted by the time we look)."""
    path = engine.folder / "rtpengine.log"
    text = path.read_text(errors="replace") if path.exists() else ""
    return text.count("Received command 'offer'")


def test_a_dead_engine_costs_no_call(tmp_path: Path) -> None:
    sp.sipp_binary()
    with (
        running_engine(tmp_path / "e1") as first,
        running_engine(tmp_path / "e2") as second,
    ):
        uas = sp.start_uas(tmp_path, "uas.xml")
        try:
            port = free_port()
            config = tmp_path / "siplb.toml"
            media = (
                f'\n[media]\nengines = ["{first.address}", "{second.address}"]\n'
                'anchor = "always"\ntimeout = 0.3\n'
            )
            write_config(config, port, [uas.sip_uri], extra=media)
            siplb = launch(tmp_path, config, (LOOPBACK, port), None)
            try:
                wait_up(siplb, uas.sip_uri)
                killer = threading.Timer(KILL_AFTER, first.kill)
                killer.start()
                result = sp.run_uac(
                    (LOOPBACK, port), tmp_path, "uac.xml", calls=CALLS, rate=RATE, timeout_s=30
                )
                killer.join()
                after = offers(second)
            finally:
                siplb.stop()
        finally:
            uas.stop()
    stats = result.stats
    assert stats.successful_calls == CALLS, result.describe()
    assert stats.failed_calls == 0, result.describe()
    # the live engine took at least every call placed after the kill
    assert after >= CALLS - RATE * (KILL_AFTER + 0.5), (after, second.log())
    assert offers(first) > 0  # and the first had its share before it died
