"""siplb.announce: the commands ExaBGP gets for each check's result."""

from __future__ import annotations

import pytest

from siplb.announce import (
    Announcer,
    Check,
    Verdict,
    announce_commands,
    withdraw_commands,
)
from siplb.settings import AnnounceSettings

ONE = AnnounceSettings(prefixes=("10.99.0.1/32",))
TWO = AnnounceSettings(
    prefixes=("10.99.0.1/32", "2001:db8::1/128"),
    next_hop="self",
    med=100,
    communities=("65000:1", "65000:2"),
)
ANNOUNCE = ["announce route 10.99.0.1/32 next-hop self"]
WITHDRAW = ["withdraw route 10.99.0.1/32 next-hop self"]
FAILURES = [Verdict.UNHEALTHY, Verdict.TIMEOUT, Verdict.REFUSED, Verdict.FAILED]


def test_attributes_of_every_route() -> None:
    assert announce_commands(TWO) == [
        "announce route 10.99.0.1/32 next-hop self med 100 community [65000:1 65000:2]",
        "announce route 2001:db8::1/128 next-hop self med 100 community [65000:1 65000:2]",
    ]
    assert withdraw_commands(TWO) == [
        "withdraw route 10.99.0.1/32 next-hop self",
        "withdraw route 2001:db8::1/128 next-hop self",
    ]
    explicit = AnnounceSettings(prefixes=("192.0.2.10/32",), next_hop="192.0.2.1")
    assert announce_commands(explicit) == ["announce route 192.0.2.10/32 next-hop 192.0.2.1"]


def test_nothing_is_announced_before_a_healthy_check() -> None:
    announcer = Announcer(ONE)
    for verdict in FAILURES:
        assert announcer.checked(Check(verdict)) == []
    assert not announcer.announced


@pytest.mark.parametrize("failure", FAILURES)
def test_announce_once_withdraw_at_the_first_failure_announce_again(failure: Verdict) -> None:
    announcer = Announcer(ONE)
    assert announcer.checked(Check(Verdict.HEALTHY)) == ANNOUNCE
    assert announcer.checked(Check(Verdict.HEALTHY)) == []
    assert announcer.checked(Check(failure, "why")) == WITHDRAW
    assert announcer.checked(Check(failure, "why")) == []
    assert announcer.checked(Check(Verdict.HEALTHY)) == ANNOUNCE


def test_every_state_and_result() -> None:
    """From each state, each result: the commands and the state after (a transition table)."""
    for announced in (False, True):
        for verdict in Verdict:
            announcer = Announcer(ONE)
            announcer.announced = announced
            healthy = verdict is Verdict.HEALTHY
            expected = [] if healthy == announced else (ANNOUNCE if healthy else WITHDRAW)
            assert announcer.checked(Check(verdict)) == expected
            assert announcer.announced is healthy
