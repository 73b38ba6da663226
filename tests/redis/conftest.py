"""Fixtures with real Redis processes (see ``redis_servers``); a test here that needs one is
failed (never skipped) when the Debian packages ``redis-server`` and ``redis-sentinel`` are missing
(``make system-deps`` installs them)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from redis_servers import RedisServer, SentinelGroup, redis_available, running_redis

HERE = Path(__file__).parent
PER_TEST_TIMEOUT = 30.0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(HERE) and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(PER_TEST_TIMEOUT))


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with running_redis(tmp_path / "redis") as server:
        yield server


@pytest.fixture
def sentinel_group(tmp_path: Path) -> Iterator[SentinelGroup]:
    if not redis_available():
        pytest.fail("redis-sentinel is not installed (make system-deps)")
    group = SentinelGroup(tmp_path)
    try:
        group.start()
        yield group
    finally:
        group.stop()
