"""``bench/run.py --smoke``: the benchmark's machinery works end to end, and cleans up after itself.

It asserts nothing about speed: one short pair at 50 calls/s proves that siplb and Kamailio both
carry every call, that CPU time and memory are read from their process trees, that the results are
written as JSON and a table, and that no process is left behind, also when interrupted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
RUN = REPO / "bench" / "run.py"
SUBJECTS = ("siplb", "kamailio")


def _start(tmp_path: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            str(RUN),
            "--smoke",
            "--out",
            str(tmp_path / "smoke.json"),
            "--workdir",
            str(tmp_path / "work"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO,
    )


def _left_running(workdir: Path) -> list[str]:
    """Processes whose working directory is under ``workdir`` (every process the run starts)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and Path(cwd).is_relative_to(workdir):
            found.append(f"{entry.name} {(entry / 'cmdline').read_bytes()[:120]!r}")
    return found


def test_smoke_run_measures_both_balancers(tmp_path: Path) -> None:
    proc = _start(tmp_path)
    output, _ = proc.communicate(timeout=90)
    assert proc.returncode == 0, output
    report = json.loads((tmp_path / "smoke.json").read_text())
    assert report["complete"] is True
    (pair,) = report["figures"]["smoke"]["pairs"]
    for subject in SUBJECTS:
        (run,) = pair[subject]["runs"]
        assert run["subject"] == subject
        assert run["successful"] == run["calls"] == 100, (subject, run)
        assert run["failed"] == 0, (subject, run)
        assert run["reached_callees"] == 100, (subject, run)
        assert run["cpu_s"] > 0, (subject, run)
        assert run["pss_idle"] > 1_000_000, (subject, run)
        assert run["active_at_sample"] > 0, (subject, run)
        assert pair[subject]["value"] == pytest.approx(run["cpu_ms_per_call"])
    assert pair["ratio"] == pytest.approx(pair["siplb"]["value"] / pair["kamailio"]["value"])
    assert "| Smoke run" in output
    assert _left_running(tmp_path / "work") == []


def test_interrupted_run_stops_every_process(tmp_path: Path) -> None:
    proc = _start(tmp_path)
    workdir = tmp_path / "work"
    deadline = time.monotonic() + 20
    # interrupt once the first balancer and its callees are up
    while time.monotonic() < deadline and len(_left_running(workdir)) < 3:
        time.sleep(0.1)
    assert len(_left_running(workdir)) >= 3, "the smoke run did not start its processes"
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, output
    assert "interrupted" in output
    assert json.loads((tmp_path / "smoke.json").read_text())["complete"] is False
    assert _left_running(workdir) == []
