"""No input makes a parser slow: long runs of one character, or of a short pattern, against every
parser in the layer (a regular expression that backtracks exponentially is a denial of service).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

import pytest

from siplb.sip import (
    ParseError,
    StreamFramer,
    parse,
    parse_cseq,
    parse_name_addr,
    parse_uri,
    parse_via,
    split_list,
    tag_of,
)
from siplb.sip.params import parse_params

PARSERS: dict[str, Callable[[bytes], object]] = {
    "parse": parse,
    "parse with a request line": lambda b: parse(b"OPTIONS " + b + b" SIP/2.0\r\n\r\n"),
    "parse with a header": lambda b: parse(b"OPTIONS sip:a@b SIP/2.0\r\nX: " + b + b"\r\n\r\n"),
    "parse_via": parse_via,
    "parse_via after a prefix": lambda b: parse_via(b"SIP/2.0/UDP h;" + b),
    "parse_name_addr": parse_name_addr,
    "parse_name_addr in brackets": lambda b: parse_name_addr(b"<sip:" + b + b">"),
    "parse_uri": parse_uri,
    "parse_uri with user": lambda b: parse_uri(b"sip:" + b + b"@h"),
    "parse_params": lambda b: parse_params(b, "test"),
    "parse_cseq": parse_cseq,
    "tag_of": tag_of,
    "split_list": split_list,
    "framer": lambda b: StreamFramer().feed(b),
}
PIECES = [
    b"a",
    b" ",
    b"a ",
    b"a;",
    b";a",
    b"a=",
    b"=a",
    b'"',
    b'\\"',
    b"<",
    b">",
    b"a<",
    b"%",
    b"%4",
    b"[",
    b"[:",
    b":",
    b"a:",
    b"/",
    b",",
    b"\t",
    b"\r\n ",
    b"a.",
    b"-",
    b"@",
    b"a@",
]
TAILS = [b"", b'"', b"<", b"\x00", b"!", b";", b'"<', b"\x00<", b";<", b"<>", b"=<", b"\r\n\r\n"]


@pytest.mark.parametrize("name", PARSERS)
def test_long_runs_are_fast(name: str) -> None:
    run = PARSERS[name]
    started = time.process_time()
    for piece in PIECES:
        for tail in TAILS:
            data = piece * (4000 // len(piece)) + tail
            with contextlib.suppress(ParseError):
                run(data)
    assert time.process_time() - started < 5.0
