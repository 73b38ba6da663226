"""``[[sets]] health``: a set's probe settings over ``[health]``'s, problems with their paths,
and the dispatcher checking each destination with its set's settings."""

from __future__ import annotations

import random

import pytest

from siplb.config import ConfigError, parse_config
from siplb.dispatch import Dispatcher, HealthSettings, State

BASE = """
[[listen]]
address = "127.0.0.1:5060"

[health]
interval = 1.0
timeout = 0.5
down_after = 3

[[sets]]
name = "pbx"
destinations = [{ uri = "sip:10.0.0.1" }]

[[sets]]
name = "reg"
{health}
destinations = [{ uri = "sip:10.0.0.2" }, { uri = "sip:10.0.0.1" }]
"""


def config_with(health: str) -> str:
    return BASE.replace("{health}", health)


def test_the_keys_given_override_health() -> None:
    config = parse_config(
        config_with('health = { interval = 5.0, timeout = 2.0, dead_codes = [408, "5xx"] }')
    )
    pbx, reg = config.sets
    assert pbx.health is None
    assert reg.health is not None
    assert (reg.health.interval, reg.health.timeout) == (5.0, 2.0)
    assert reg.health.down_after == 3  # from [health]
    assert reg.health.dead_codes == frozenset({408, *range(500, 600)})
    assert config.health.interval == 1.0


def test_probe_first_per_set() -> None:
    config = parse_config(config_with("health = { probe_first = false }"))
    disp = Dispatcher(config.sets, config.health, random.Random(1), now=0.0)
    assert disp.health.state("sip:10.0.0.2") is State.UP
    # listed first by "pbx", which has no health of its own: probing
    assert disp.health.state("sip:10.0.0.1") is State.PROBING


PROBLEMS = [
    ("health = { interval = 0.2 }", "sets[1].health.interval", "must be less than interval"),
    ("health = { timeout = 2.0 }", "sets[1].health.timeout", "must be less than interval"),
    ("health = { bogus = 1 }", "sets[1].health.bogus", "unknown key"),
    ('health = { interval = "often" }', "sets[1].health.interval", ""),
    ('health = { dead_codes = ["500-599"] }', "sets[1].health.dead_codes[0]", "code class"),
    ("health = { down_after = 0 }", "sets[1].health.down_after", ""),
    ("health = { sets = 'any' }", "sets[1].health.sets", "unknown key"),  # the node's key
    ('health = "fast"', "sets[1].health", ""),
]


@pytest.mark.parametrize(("table", "path", "message"), PROBLEMS)
def test_problems_name_their_path(table: str, path: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(config_with(table))
    found = {p.path: p.message for p in caught.value.problems}
    assert path in found, found
    assert message in found[path]


def test_a_reload_gives_a_kept_destination_its_new_settings() -> None:
    config = parse_config(config_with(""))
    disp = Dispatcher(config.sets, config.health, random.Random(1), now=0.0)
    assert disp.health_settings("sip:10.0.0.2") == config.health
    fast = parse_config(config_with("health = { interval = 0.2, timeout = 0.1, down_after = 1 }"))
    disp.health.probe_result("sip:10.0.0.2", True, 1.0)
    disp.replace_sets(fast.sets, now=2.0)
    assert disp.health_settings("sip:10.0.0.2") == fast.sets[1].health
    assert disp.health.state("sip:10.0.0.2") is State.UP  # kept
    disp.health.probe_result("sip:10.0.0.2", False, 3.0)
    assert disp.health.state("sip:10.0.0.2") is State.DOWN  # down_after = 1 now
    assert disp.health_settings("sip:10.0.0.1") == HealthSettings(
        interval=1.0, timeout=0.5, down_after=3
    )
