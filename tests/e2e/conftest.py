"""Fixtures of the end-to-end tests: SIPp and Kamailio processes, stopped at teardown."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from . import kamailio as kam
from . import sipp as sp
from .harness import Address, HarnessError


class SippLauncher:
    """Starts SIPp processes in one work directory and remembers them for teardown."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.started: list[sp.SippProcess] = []

    def uas(self, scenario: str | Path = "uas.xml", **kwargs: Any) -> sp.SippProcess:
        proc = sp.start_uas(self.workdir, scenario, **kwargs)
        self.started.append(proc)
        return proc

    def uases(
        self, count: int, scenario: str | Path = "uas.xml", **kwargs: Any
    ) -> list[sp.SippProcess]:
        return [self.uas(scenario, **kwargs) for _ in range(count)]

    def uac(
        self, target: Address, scenario: str | Path = "uac.xml", **kwargs: Any
    ) -> sp.SippProcess:
        proc = sp.start_uac(target, self.workdir, scenario, **kwargs)
        self.started.append(proc)
        return proc

    def run_uac(
        self, target: Address, scenario: str | Path = "uac.xml", **kwargs: Any
    ) -> sp.SippResult:
        return self.uac(target, scenario, **kwargs).wait()

    def stop_uases(self) -> list[sp.SippResult]:
        """Stop every callee started here (gracefully); their results in start order."""
        return sp.stop_all(p for p in self.started if p.role == "uas")

    def stop_all(self) -> list[sp.SippResult]:
        return sp.stop_all(self.started)


def _require(find: Callable[[], str]) -> None:
    """Fail (never skip) the test when a binary the harness needs is missing."""
    try:
        find()
    except HarnessError as exc:
        message = str(exc)
    else:
        return
    pytest.fail(message, pytrace=False)


@pytest.fixture
def e2e_workdir(tmp_path: Path) -> Path:
    """Where the processes of one test keep their logs, statistics and configs."""
    path = tmp_path / "e2e"
    path.mkdir()
    return path


@pytest.fixture
def sipp(e2e_workdir: Path) -> Iterator[SippLauncher]:
    _require(sp.sipp_binary)
    launcher = SippLauncher(e2e_workdir)
    try:
        yield launcher
    finally:
        launcher.stop_all()


@pytest.fixture
def kamailio(e2e_workdir: Path) -> Iterator[Callable[..., kam.KamailioProcess]]:
    """A factory: kamailio(destinations, **start_kamailio options) -> running Kamailio."""
    _require(kam.kamailio_binary)
    _require(kam.kamailio_module_dir)
    started: list[kam.KamailioProcess] = []

    def start(destinations: Sequence[str], **kwargs: Any) -> kam.KamailioProcess:
        proc = kam.start_kamailio(destinations, e2e_workdir, **kwargs)
        started.append(proc)
        return proc

    try:
        yield start
    finally:
        for proc in started:
            proc.stop()
