"""Inputs that once broke the SIP layer (tests/vectors/fuzz): ``ParseError`` or nothing."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from siplb.sip import ParseError, parse

from .test_properties import only_parse_errors

FOUND = sorted((Path(__file__).parent.parent / "vectors" / "fuzz").glob("*.bin"))

# (id, bytes, what parse must do: a status hint, or None to accept)
CASES: list[tuple[str, bytes, int | None]] = [
    ("one header with an empty name", b"OPTIONS sip:a@b SIP/2.0\r\n: x\r\n\r\n", 400),
    ("an empty name, folded", b"OPTIONS sip:a@b SIP/2.0\r\n:To\r\n x\r\n\r\n", 400),
    ("no header at all", b"OPTIONS sip:a@b SIP/2.0\r\n\r\n", None),
]


def test_there_are_found_inputs() -> None:
    assert FOUND


@pytest.mark.parametrize("path", FOUND, ids=[p.name for p in FOUND])
def test_found_input(path: Path) -> None:
    started = time.process_time()
    only_parse_errors(path.read_bytes())
    assert time.process_time() - started < 1.0


@pytest.mark.parametrize(("data", "hint"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_regression(data: bytes, hint: int | None) -> None:
    parse(b"OPTIONS sip:a@b SIP/2.0\r\n\r\n")  # the names memo now knows "no header"
    for _ in range(2):
        if hint is None:
            assert parse(data).header_names() == []
        else:
            with pytest.raises(ParseError) as info:
                parse(data)
            assert info.value.status_hint == hint
