"""Fixtures of the DNS tests: a dnsmasq factory (stopped by PID at teardown), SIPp processes,
and ``siplb run`` with a config whose sets name DNS names."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from e2e import sipp as sp
from e2e.balancer import ADMIN_TOKEN, SiplbProcess, launch
from e2e.conftest import SippLauncher
from e2e.harness import LOOPBACK, HarnessError, free_port

from .dnsmasq import Dnsmasq, Records, dnsmasq_binary


def _require(find: Callable[[], str]) -> None:
    """Fail (never skip) when a binary the test needs is missing."""
    try:
        find()
    except HarnessError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def e2e_workdir(tmp_path: Path) -> Path:
    path = tmp_path / "e2e"
    path.mkdir()
    return path


@pytest.fixture
def dnsmasq(e2e_workdir: Path) -> Iterator[Callable[[Records], Dnsmasq]]:
    """A factory: dnsmasq(records) -> a running server on 127.0.0.1 at a free port."""
    _require(dnsmasq_binary)
    started: list[Dnsmasq] = []

    def start(records: Records) -> Dnsmasq:
        server = Dnsmasq(e2e_workdir, records)
        started.append(server)
        server.start()
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()


@pytest.fixture
def sipp(e2e_workdir: Path) -> Iterator[SippLauncher]:
    _require(sp.sipp_binary)
    launcher = SippLauncher(e2e_workdir)
    try:
        yield launcher
    finally:
        launcher.stop_all()


@pytest.fixture
def balancers() -> Iterator[list[SiplbProcess]]:
    started: list[SiplbProcess] = []
    yield started
    for proc in started:
        code = proc.stop()
        assert code == 0, f"siplb exited with {code} on SIGTERM\n{proc.log_tail()}"


def start_named_siplb(workdir: Path, set_table: str, dns: str) -> SiplbProcess:
    """``siplb run`` with one set ``pbx`` (``set_table``: its keys after ``name``), a ``[dns]``
    section and an admin API on free loopback ports; returned once both answer."""
    port, admin_port = free_port(), free_port()
    config = workdir / "siplb.toml"
    config.write_text(
        f'[[listen]]\naddress = "{LOOPBACK}:{port}"\n\n'
        f'[[sets]]\nname = "pbx"\n{set_table}\n\n'
        "[health]\ninterval = 1.0\ntimeout = 0.5\ndown_after = 2\nup_after = 2\n\n"
        f"[dns]\n{dns}\n\n"
        '[log]\nformat = "json"\nlevel = "info"\n\n'
        f'[admin]\nlisten = "{LOOPBACK}:{admin_port}"\ntoken = "{ADMIN_TOKEN}"\n'
    )
    return launch(workdir, config, (LOOPBACK, port), admin_port, timeout=15.0)
