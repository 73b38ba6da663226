"""Counted nouns in what siplb prints: "1 listener", "2 listeners", never "1 listeners"."""

from __future__ import annotations


def plural(count: int, noun: str, many: str | None = None) -> str:
    """``count`` and ``noun``, in the plural (``many``, else noun + "s") unless count is 1."""
    return f"{count} {noun if count == 1 else many or noun + 's'}"
