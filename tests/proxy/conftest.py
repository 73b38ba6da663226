"""A proxy test runs in milliseconds; a stuck timer loop must fail fast, not hang the suite."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).parent
PER_TEST_TIMEOUT = 10.0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(HERE) and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(PER_TEST_TIMEOUT))
