"""``[capture]``: values, defaults, and every problem with its path."""

from __future__ import annotations

import pytest

from siplb.config import ConfigError, parse_config
from siplb.settings import CaptureSettings

BASE = """\
[[listen]]
address = "127.0.0.1:5060"

[[sets]]
name = "pbx"
destinations = [{ uri = "sip:127.0.0.1:5070" }]
"""


def problems_of(text: str) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    return [(problem.path, problem.message) for problem in info.value.problems]


def test_no_table_captures_nothing() -> None:
    assert parse_config(BASE).capture is None


def test_defaults() -> None:
    config = parse_config(BASE + '[capture]\nhep = "udp:127.0.0.1:9060"\n')
    assert config.capture == CaptureSettings("127.0.0.1", 9060)
    assert config.capture.what == frozenset({"received", "sent"})
    assert config.capture.queue == 10000


def test_every_key() -> None:
    config = parse_config(
        BASE
        + """
[capture]
hep = "tcp:[2001:db8::50]:9061"
node_id = 2001
node_name = "edge-1"
password = "myhep"
what = ["sent"]
methods = ["INVITE", "BYE"]
queue = 500
"""
    )
    assert config.capture == CaptureSettings(
        host="2001:db8::50",
        port=9061,
        transport="tcp",
        node_id=2001,
        node_name="edge-1",
        password="myhep",
        what=frozenset({"sent"}),
        methods=frozenset({"INVITE", "BYE"}),
        queue=500,
    )
    assert "myhep" not in repr(config.capture)


PROBLEM_CASES = [
    ("node_id = 1", [("capture.hep", 'required: the collector, like "udp:192.0.2.50:9060"')]),
    ('hep = "sctp:127.0.0.1:9060"', [("capture.hep", "must be")]),
    ('hep = "udp:127.0.0.1"', [("capture.hep", "")]),
    ('hep = "udp:127.0.0.1:0"', [("capture.hep", "port 0")]),
    ('hep = "udp:collector.example:9060"', [("capture.hep", "DNS name")]),
    ("hep = 9060", [("capture.hep", "expected a string")]),
    ('hep = "udp:127.0.0.1:9060"\nnode_id = -1', [("capture.node_id", "")]),
    ('hep = "udp:127.0.0.1:9060"\nnode_id = 4294967296', [("capture.node_id", "")]),
    ('hep = "udp:127.0.0.1:9060"\nwhat = ["both"]', [("capture.what[0]", "")]),
    ('hep = "udp:127.0.0.1:9060"\nwhat = []', [("capture.what", "captures nothing")]),
    ('hep = "udp:127.0.0.1:9060"\nqueue = 0', [("capture.queue", "")]),
    ('hep = "udp:127.0.0.1:9060"\npassword = ""', [("capture.password", "")]),
    ('hep = "udp:127.0.0.1:9060"\nmethods = []', [("capture.methods", "")]),
    ('hep = "udp:127.0.0.1:9060"\nsnaplen = 1', [("capture.snaplen", "unknown key")]),
    # a broken collector hides no other problem
    (
        'hep = "x"\nwhat = []\nqueue = 0',
        [("capture.hep", ""), ("capture.queue", ""), ("capture.what", "")],
    ),
]


@pytest.mark.parametrize(("table", "expected"), PROBLEM_CASES)
def test_problems_carry_their_path(table: str, expected: list[tuple[str, str]]) -> None:
    found = sorted(problems_of(BASE + "[capture]\n" + table + "\n"))
    assert [path for path, _ in found] == [path for path, _ in expected]
    for (_, message), (_, part) in zip(found, expected, strict=True):
        assert part in message
