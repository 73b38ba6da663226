"""``[health] sets`` / ``withdraw_delay`` and ``[announce]``: values, defaults, problems."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from siplb.cli import main
from siplb.config import ConfigError, parse_config
from siplb.settings import AnnounceSettings, NodeHealthSettings

BASE = """\
[[listen]]
address = "127.0.0.1:5060"

[[sets]]
name = "pbx"
destinations = [{ uri = "sip:127.0.0.1:5070" }]

[[sets]]
name = "reg"
destinations = [{ uri = "sip:127.0.0.1:5080" }]

[admin]
"""


def problems_of(text: str) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    return [(problem.path, problem.message) for problem in info.value.problems]


def test_defaults_without_the_keys() -> None:
    config = parse_config(BASE)
    assert config.readiness == NodeHealthSettings("any", 1.0)
    assert config.announce is None


def test_values_and_probe_keys_side_by_side() -> None:
    config = parse_config(
        BASE
        + """
[health]
interval = 2.0
timeout = 0.5
sets = ["pbx", "reg"]
withdraw_delay = 2.5

[announce]
prefixes = ["10.99.0.1/32", "2001:db8::/48"]
interval = 0.1
timeout = 0.3
med = 50
communities = ["65000:007", "65000:2"]
"""
    )
    assert config.readiness == NodeHealthSettings(("pbx", "reg"), 2.5)
    assert config.health.interval == 2.0  # the probes' keys still reach the probes
    assert config.announce == AnnounceSettings(
        prefixes=("10.99.0.1/32", "2001:db8::/48"),
        next_hop="self",
        interval=0.1,
        timeout=0.3,
        med=50,
        communities=("65000:7", "65000:2"),
    )


@pytest.mark.parametrize("policy", ["any", "every"])
def test_named_policies(policy: str) -> None:
    config = parse_config(BASE + f'[health]\nsets = "{policy}"\n')
    assert config.readiness.sets == policy


CASES = [
    ('[health]\nsets = "some"\n', "health.sets", 'must be "any", "every"'),
    ("[health]\nsets = []\n", "health.sets", "an empty list asks nothing"),
    ('[health]\nsets = ["pbx", "nope"]\n', "health.sets[1]", "unknown set 'nope'"),
    ('[health]\nsets = ["pbx", "pbx"]\n', "health.sets[1]", "named twice"),
    ("[health]\nsets = 3\n", "health.sets", "a list of set names (got 3)"),
    ("[health]\nsets = [1]\n", "health.sets", "(got an array)"),
    ("[health]\nwithdraw_delay = -1\n", "health.withdraw_delay", "greater than or equal to 0"),
    ("[health]\nwithdraw_delay = 61\n", "health.withdraw_delay", "less than or equal to 60"),
    ("[health]\nwithdraw = 1\n", "health.withdraw", "unknown key"),
    ("[announce]\n", "announce.prefixes", "required key is missing"),
    ("[announce]\nprefixes = []\n", "announce.prefixes", "at least one prefix"),
    ('[announce]\nprefixes = ["10.99.0.1"]\n', "announce.prefixes[0]", "10.99.0.1/32"),
    ('[announce]\nprefixes = ["10.99.0.1/24"]\n', "announce.prefixes[0]", "host bits set"),
    ('[announce]\nprefixes = ["pbx/32"]\n', "announce.prefixes[0]", "not a prefix"),
    (
        '[announce]\nprefixes = ["10.99.0.1/32", "10.99.0.1/32"]\n',
        "announce.prefixes[1]",
        "same prefix as prefixes[0]",
    ),
    (
        '[announce]\nprefixes = ["10.99.0.1/32"]\nnext_hop = "router"\n',
        "announce.next_hop",
        'must be "self" or an IP address',
    ),
    (
        '[announce]\nprefixes = ["10.99.0.1/32"]\nnext_hop = "2001:db8::1"\n',
        "announce.next_hop",
        "other family",
    ),
    (
        '[announce]\nprefixes = ["10.99.0.1/32"]\ninterval = 0.6\ntimeout = 0.5\n',
        "announce.timeout",
        "at most 1 s",
    ),
    ('[announce]\nprefixes = ["10.99.0.1/32"]\ninterval = 0\n', "announce.interval", ""),
    ('[announce]\nprefixes = ["10.99.0.1/32"]\nmed = -1\n', "announce.med", ""),
    ('[announce]\nprefixes = ["10.99.0.1/32"]\nmed = 4294967296\n', "announce.med", ""),
    (
        '[announce]\nprefixes = ["10.99.0.1/32"]\ncommunities = ["65000:65536"]\n',
        "announce.communities[0]",
        "each 0 to 65535",
    ),
    (
        '[announce]\nprefixes = ["10.99.0.1/32"]\ncommunities = ["no-export"]\n',
        "announce.communities[0]",
        "AS:value",
    ),
    ('[announce]\nprefixes = ["10.99.0.1/32"]\nnexthop = "self"\n', "announce.nexthop", "next_hop"),
]


@pytest.mark.parametrize(("extra", "path", "text"), CASES)
def test_problems(extra: str, path: str, text: str) -> None:
    found = problems_of(BASE + extra)
    assert [p for p, _ in found] == [path], found
    assert text in found[0][1]


def test_announce_needs_the_admin_api() -> None:
    text = BASE.replace("[admin]\n", "") + '[announce]\nprefixes = ["10.99.0.1/32"]\n'
    assert problems_of(text) == [
        ("announce", "needs [admin]: siplb announce checks the node by GET /api/health")
    ]


def test_several_problems_at_once_with_probe_problems_too() -> None:
    found = problems_of(
        BASE
        + '[health]\ninterval = 0.1\ntimeout = 0.5\nsets = ["x"]\n'
        + '[announce]\nprefixes = ["10.0.0.1/8"]\nmed = "high"\n'
    )
    assert sorted(path for path, _ in found) == [
        "announce.med",
        "announce.prefixes[0]",
        "health.sets[0]",
        "health.timeout",
    ]


def test_check_accepts_and_rejects(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text(BASE + '[announce]\nprefixes = ["10.99.0.1/32"]\n')
    bad = tmp_path / "bad.toml"
    bad.write_text(BASE + '[announce]\nprefixes = ["10.99.0.1"]\n')
    runner = CliRunner()
    assert runner.invoke(main, ["check", "-c", str(good)]).exit_code == 0
    result = runner.invoke(main, ["check", "-c", str(bad)])
    assert result.exit_code == 2
    assert "announce.prefixes[0]" in result.stderr
