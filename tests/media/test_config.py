"""``[media]``: values, defaults, and every problem with its path."""

from __future__ import annotations

import pytest

from siplb.config import ConfigError, parse_config
from siplb.media.settings import DEFAULT_FLAGS, EngineSpec, MediaSettings

BASE = """\
[[listen]]
address = "127.0.0.1:5060"

[[sets]]
name = "pbx"
destinations = [{ uri = "sip:127.0.0.1:5070" }]
"""


def problems_of(text: str) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        parse_config(BASE + "[media]\n" + text)
    return [(problem.path, problem.message) for problem in info.value.problems]


def test_no_table_anchors_nothing() -> None:
    assert parse_config(BASE).media is None


def test_defaults() -> None:
    config = parse_config(BASE + '[media]\nengines = ["udp:127.0.0.1:2223"]\n')
    assert config.media == MediaSettings(engines=(EngineSpec("127.0.0.1", 2223),))
    assert config.media.flags == DEFAULT_FLAGS
    assert (config.media.anchor, config.media.on_failure) == ("nat", "forward")


def test_every_key() -> None:
    config = parse_config(
        BASE
        + """
[media]
engines = [
  "udp:10.0.0.21:2223",
  "10.0.0.22:2223",
  { address = "udp:[2001:db8::23]:2223", weight = 3 },
]
anchor = "always"
flags = ["replace-origin", "ICE=remove", "trust-address"]
timeout = 0.5
ping_interval = 2
retry_after = 10
on_failure = "reject"
shared = true
max_calls = 5000
max_pending = 50
"""
    )
    assert config.media == MediaSettings(
        engines=(
            EngineSpec("10.0.0.21", 2223),
            EngineSpec("10.0.0.22", 2223),
            EngineSpec("2001:db8::23", 2223, weight=3),
        ),
        anchor="always",
        flags=("replace-origin", "ICE=remove", "trust-address"),
        timeout=0.5,
        ping_interval=2.0,
        retry_after=10.0,
        on_failure="reject",
        shared=True,
        max_calls=5000,
        max_pending=50,
    )
    assert config.media.engines[2].address == "udp:[2001:db8::23]:2223"


ENGINE = 'engines = ["udp:127.0.0.1:2223"]\n'
PROBLEM_CASES = [
    ("", [("media.engines", "at least one engine")]),
    ("engines = []", [("media.engines", "at least one engine")]),
    ('engines = ["udp:127.0.0.1"]', [("media.engines[0]", "udp:IP:port")]),
    ('engines = ["udp:rtp.example:2223"]', [("media.engines[0]", "")]),
    ('engines = ["tcp:127.0.0.1:2223"]', [("media.engines[0]", "over UDP")]),
    ('engines = ["udp:127.0.0.1:0"]', [("media.engines[0]", "port 0")]),
    ('engines = ["udp:127.0.0.1:70000"]', [("media.engines[0]", "")]),
    ("engines = [2223]", [("media.engines[0]", "expected a string")]),
    (
        'engines = ["udp:127.0.0.1:2223", "127.0.0.1:2223"]',
        [("media.engines[1]", "udp:127.0.0.1:2223 is listed twice")],
    ),
    ('engines = [{ address = "udp:127.0.0.1:1", weight = 0 }]', [("media.engines[0].weight", "")]),
    ("engines = [{ weight = 2 }]", [("media.engines[0].address", "")]),
    (
        'engines = [{ address = "udp:127.0.0.1:1", port = 2 }]',
        [("media.engines[0].port", "unknown key")],
    ),
    ('engines = "udp:127.0.0.1:2223"', [("media.engines", "")]),
    (ENGINE + 'anchor = "sometimes"', [("media.anchor", "")]),
    (ENGINE + 'on_failure = "drop"', [("media.on_failure", "")]),
    (ENGINE + "timeout = 0", [("media.timeout", "")]),
    (ENGINE + "timeout = -1.5", [("media.timeout", "")]),
    (ENGINE + "timeout = 60", [("media.timeout", "at most 30 seconds")]),
    (ENGINE + "ping_interval = 0", [("media.ping_interval", "")]),
    (ENGINE + "retry_after = 0", [("media.retry_after", "")]),
    (ENGINE + "max_calls = 0", [("media.max_calls", "")]),
    (ENGINE + "max_pending = 0", [("media.max_pending", "")]),
    (ENGINE + 'shared = "yes"', [("media.shared", "")]),
    (ENGINE + 'flags = ["two words"]', [("media.flags[0]", "one word")]),
    (ENGINE + 'flags = ["ICE="]', [("media.flags[0]", "both parts")]),
    (ENGINE + 'flags = ["ok", "call-id=x"]', [("media.flags[1]", "set by siplb")]),
    (ENGINE + 'engine = "x"', [("media.engine", "unknown key")]),
    # one broken key hides no other problem
    (
        'engines = ["udp:127.0.0.1"]\ntimeout = 0\nflags = [""]',
        [("media.timeout", ""), ("media.engines[0]", ""), ("media.flags[0]", "one word")],
    ),
]


@pytest.mark.parametrize(("text", "expected"), PROBLEM_CASES)
def test_problems(text: str, expected: list[tuple[str, str]]) -> None:
    found = problems_of(text)
    assert [path for path, _ in found] == [path for path, _ in expected], found
    for (_, message), (_, part) in zip(found, expected, strict=True):
        assert part in message, found
