"""The parse caches of URIs and name-addrs: the same answers as parsing afresh, errors every
time, and a bounded size whatever the input (``uri._PARSED``, ``nameaddr._PARSED``)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from siplb.sip import ParseError, nameaddr, parse_name_addr, parse_uri, uri

Parse = Callable[[bytes], object]

# (id, cached parser, uncached parser, the module's table, inputs that parse, one that does not)
CASES: list[tuple[str, Parse, Parse, dict[bytes, object], list[bytes], bytes]] = [
    (
        "uri",
        parse_uri,
        uri._parse_uri,
        uri._PARSED,  # type: ignore[arg-type]
        [b"sip:alice@atlanta.example.com;transport=tcp", b"sips:[2001:db8::1]:5061", b"tel:+1"],
        b"sip:a@b;;",
    ),
    (
        "name-addr",
        parse_name_addr,
        nameaddr._parse_name_addr,
        nameaddr._PARSED,  # type: ignore[arg-type]
        [b'"Alice" <sip:alice@a.example.com>;tag=1', b"sip:bob@b.example.com;tag=2", b"<tel:+1>"],
        b"<sip:a@b",
    ),
]


@pytest.mark.parametrize(
    ("cached", "fresh", "inputs"), [(c[1], c[2], c[4]) for c in CASES], ids=[c[0] for c in CASES]
)
def test_the_same_answer_as_parsing_afresh(
    cached: Parse, fresh: Parse, inputs: list[bytes]
) -> None:
    for raw in inputs:
        first = cached(raw)
        assert first == fresh(raw)
        assert cached(raw) is first  # the second time from the table


@pytest.mark.parametrize(
    ("cached", "table", "bad"), [(c[1], c[3], c[5]) for c in CASES], ids=[c[0] for c in CASES]
)
def test_errors_are_raised_every_time_and_not_kept(
    cached: Parse, table: dict[bytes, object], bad: bytes
) -> None:
    for _ in range(2):
        with pytest.raises(ParseError):
            cached(bad)
    assert bad not in table


@pytest.mark.parametrize(
    ("cached", "table"), [(c[1], c[3]) for c in CASES], ids=[c[0] for c in CASES]
)
def test_the_table_stays_bounded(cached: Parse, table: dict[bytes, object]) -> None:
    limit = 4096
    for i in range(limit + 100):
        cached(b"sip:user%d@example.com" % i)
        assert len(table) <= limit
    long = b"sip:" + b"a" * 600 + b"@example.com"
    cached(long)
    assert long not in table  # long inputs are parsed every time, never kept
