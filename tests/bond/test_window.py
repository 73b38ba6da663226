"""The sliding window of numbers seen (siplb/bond/window.py): replay and duplicate checks."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from siplb.bond.window import SeenWindow

# (numbers offered in order, what accept() says for each), with a window of 8
CASES = [
    ([1, 2, 3], [True, True, True]),
    ([1, 1], [True, False]),
    ([5, 3, 4, 3], [True, True, True, False]),
    ([20, 13, 12], [True, True, False]),  # 12 is 8 below 20: outside the window
    ([0, 100, 0], [True, True, False]),
    ([3, 2, 1, 0, 9, 2, 4], [True, True, True, True, True, False, True]),
]


@pytest.mark.parametrize(("numbers", "expected"), CASES)
def test_accept(numbers: list[int], expected: list[bool]) -> None:
    window = SeenWindow(size=8)
    assert [window.accept(n) for n in numbers] == expected


def test_a_leap_far_ahead_is_cheap() -> None:
    window = SeenWindow(size=8)
    window.record(5)
    window.record(10**15)  # shifting the bit set that far would take petabytes
    assert window.check(10**15 - 1)
    assert not window.check(5)
    assert not window.check(10**15)


def test_check_records_nothing() -> None:
    window = SeenWindow(size=8)
    assert window.check(4)
    assert window.check(4)
    window.record(4)
    assert not window.check(4)


@given(st.lists(st.integers(min_value=0, max_value=300), max_size=200))
def test_a_number_is_accepted_at_most_once(numbers: list[int]) -> None:
    window = SeenWindow(size=64)
    accepted = [n for n in numbers if window.accept(n)]
    assert len(accepted) == len(set(accepted))
