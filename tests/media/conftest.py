"""Fixtures with real rtpengine processes (see ``engine``); a test that needs one fails (never
skips) when the Debian package ``rtpengine-daemon`` is missing (``make system-deps``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .engine import Engine, running_engine

HERE = Path(__file__).parent
PER_TEST_TIMEOUT = 30.0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(HERE) and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(PER_TEST_TIMEOUT))


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    """One started rtpengine on free loopback ports, stopped after the test."""
    with running_engine(tmp_path / "engine") as started:
        yield started
