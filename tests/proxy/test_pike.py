"""Per-source rates and bans (siplb.proxy.pike): budgets per class, the decaying score, bounds."""

from __future__ import annotations

import pytest

from siplb.proxy.pike import FORGOTTEN_SCORE, BanTable, BanView, RateClass, RateLimiter, trim
from siplb.settings import RateSettings

INVITE, REGISTER, OTHER = RateClass.INVITE, RateClass.REGISTER, RateClass.OTHER
SMALL = RateSettings(window=1.0, invite=2, register=3, other=5, ban_time=60.0, max_ban_time=600.0)

# (requests as (class, now), index of the first request that offends, or None)
BUDGET_CASES = [
    pytest.param([(INVITE, 0.0)] * 2, None, id="invite budget reached"),
    pytest.param([(INVITE, 0.0)] * 3, 2, id="invite budget passed"),
    pytest.param([(REGISTER, 0.0)] * 3, None, id="register budget reached"),
    pytest.param([(REGISTER, 0.0)] * 4, 3, id="register budget passed"),
    pytest.param([(OTHER, 0.0)] * 5, None, id="other budget reached"),
    pytest.param([(OTHER, 0.0)] * 6, 5, id="other budget passed"),
    pytest.param(
        [(INVITE, 0.0)] * 2 + [(REGISTER, 0.1)] * 3 + [(OTHER, 0.2)] * 5,
        None,
        id="each class has its own budget",
    ),
    pytest.param([(INVITE, 0.0), (INVITE, 0.5), (INVITE, 1.0), (INVITE, 1.5)], None, id="window"),
    pytest.param([(INVITE, 0.0), (INVITE, 0.5), (INVITE, 0.99)], 2, id="same window"),
]


@pytest.mark.parametrize(("requests", "offending"), BUDGET_CASES)
def test_per_class_budgets_per_window(
    requests: list[tuple[RateClass, float]], offending: int | None
) -> None:
    limiter = RateLimiter(SMALL)
    offences = [limiter.count("192.0.2.1", cls, now) for cls, now in requests]
    first = next((i for i, o in enumerate(offences) if o is not None), None)
    assert first == offending
    if first is not None:
        offence = offences[first]
        assert offence is not None
        assert (offence.rate_class, offence.seconds, offence.offences) == (
            requests[first][0],
            60.0,
            1,
        )


def test_sources_are_counted_apart() -> None:
    limiter = RateLimiter(SMALL)
    assert [limiter.count(f"192.0.2.{i}", INVITE, 0.0) for i in range(10)] == [None] * 10


def offend(limiter: RateLimiter, key: str, now: float) -> float:
    """Make ``key`` go over its INVITE budget at ``now``; the ban's length."""
    for _ in range(SMALL.invite):
        assert limiter.count(key, INVITE, now) is None
    offence = limiter.count(key, INVITE, now)
    assert offence is not None
    return offence.seconds


# (times of successive offences of one source, the ban lengths they get)
SCORE_CASES = [
    pytest.param([0.0], [60.0], id="first offence"),
    pytest.param([0, 60, 180, 420], [60, 120, 240, 480], id="offending as each ban ends doubles"),
    pytest.param([0, 60, 180, 420, 900, 1500], [60, 120, 240, 480, 600, 600], id="capped"),
    pytest.param([0, 3600, 7200, 10800], [60] * 4, id="once an hour stays at ban_time"),
    pytest.param([0, 60, 780], [60, 120, 120], id="one half-life after the ban: one doubling"),
    pytest.param([0, 60, 1380], [60, 120, 120], id="two half-lives: score 0.5 rounds up"),
    pytest.param([0, 60, 1980], [60, 120, 60], id="three half-lives: back to ban_time"),
]


@pytest.mark.parametrize(("times", "lengths"), SCORE_CASES)
def test_ban_length_doubles_with_a_decaying_score(times: list[float], lengths: list[float]) -> None:
    limiter = RateLimiter(SMALL)  # score_half_life 600
    assert [offend(limiter, "192.0.2.1", now) for now in times] == lengths


# (offence times, now, expected score): the score decays from the end of the last ban
DECAY_CASES = [
    pytest.param([], 0.0, 0.0, id="never offended"),
    pytest.param([0.0], 0.0, 1.0, id="just offended"),
    pytest.param([0.0], 60.0, 1.0, id="not while banned"),
    pytest.param([0.0], 660.0, 0.5, id="one half-life after the ban"),
    pytest.param([0.0], 1860.0, 0.125, id="three half-lives"),
    pytest.param([0.0, 0.0], 720.0, 1.0, id="two offences, one half-life"),
]


@pytest.mark.parametrize(("times", "now", "score"), DECAY_CASES)
def test_the_score_halves_every_half_life(times: list[float], now: float, score: float) -> None:
    limiter = RateLimiter(SMALL)
    for at in times:
        offend(limiter, "192.0.2.1", at)
    assert limiter.score("192.0.2.1", now) == pytest.approx(score)


def test_the_score_is_capped_so_that_it_decays_in_bounded_time() -> None:
    limiter = RateLimiter(SMALL)  # 600 / 60: the ban is capped from a score of about 3.3 on
    for i in range(50):
        offend(limiter, "192.0.2.1", float(i))
    assert limiter.score("192.0.2.1", 50.0) < 5.0
    limiter.expire(50.0 + 600.0 + 600.0 * 9)
    assert limiter.scored == 0


def test_expire_forgets_ended_windows_and_decayed_scores() -> None:
    limiter = RateLimiter(SMALL)
    limiter.count("192.0.2.1", OTHER, 0.0)
    limiter.count("192.0.2.2", OTHER, 0.5)
    offend(limiter, "192.0.2.3", 0.5)
    limiter.expire(1.0)
    assert (limiter.tracked, limiter.scored) == (1, 1)
    limiter.expire(1.5)
    assert limiter.tracked == 0
    ended = 60.5  # the ban's end
    assert limiter.score("192.0.2.3", ended + 600.0 * 6) == pytest.approx(FORGOTTEN_SCORE)
    limiter.expire(ended + 600.0 * 6 - 1.0)
    assert limiter.scored == 1
    limiter.expire(ended + 600.0 * 6 + 1.0)
    assert limiter.scored == 0


def test_tracked_sources_never_exceed_max_sources() -> None:
    settings = RateSettings(invite=1, max_sources=50)
    limiter = RateLimiter(settings)
    for i in range(500):
        key = f"10.0.{i // 256}.{i % 256}"
        limiter.count(key, INVITE, i * 0.001)
        limiter.count(key, INVITE, i * 0.001)  # an offence: a score too
        assert limiter.tracked <= 50
        assert limiter.scored <= 50
    assert limiter.scored == 50


def test_reconfigure_keeps_counts_and_trims_to_a_smaller_bound() -> None:
    limiter = RateLimiter(RateSettings(invite=5))
    for i in range(20):
        limiter.count(f"10.0.0.{i}", INVITE, 0.0)
    limiter.count("10.0.0.19", INVITE, 0.0)
    limiter.reconfigure(RateSettings(invite=2, max_sources=10))
    assert limiter.tracked == 10
    assert limiter.count("10.0.0.19", INVITE, 0.0) is not None  # 3 > 2


def test_forget_forgives() -> None:
    limiter = RateLimiter(SMALL)
    offend(limiter, "192.0.2.1", 0.0)
    limiter.forget("192.0.2.1")
    assert limiter.score("192.0.2.1", 0.0) == 0.0
    assert offend(limiter, "192.0.2.1", 1.0) == 60.0


# ---- the ban table ------------------------------------------------------------------------------

# (bans as (key, until, reason), the views ban() returns as (until, offences) or None)
BAN_CASES = [
    pytest.param([("a", 10.0, "rate")], [(10.0, 1)], id="new ban"),
    pytest.param(
        [("a", 10.0, "rate"), ("a", 20.0, "scanner")], [(10.0, 1), (20.0, 2)], id="longer"
    ),
    pytest.param([("a", 20.0, "rate"), ("a", 10.0, "rate")], [(20.0, 1), None], id="shorter: no"),
    pytest.param([("a", 20.0, "rate"), ("a", 20.0, "rate")], [(20.0, 1), None], id="same: no echo"),
    pytest.param([("a", 10.0, "x"), ("b", 10.0, "x")], [(10.0, 1), (10.0, 1)], id="two hosts"),
]


@pytest.mark.parametrize(("bans", "views"), BAN_CASES)
def test_a_ban_is_new_or_longer_or_nothing(
    bans: list[tuple[str, float, str]], views: list[tuple[float, int] | None]
) -> None:
    table = BanTable(100)
    made = [table.ban(key, until, reason) for key, until, reason in bans]
    assert [None if v is None else (v.until, v.offences) for v in made] == views


def test_bans_end_in_order_and_are_listed_by_end() -> None:
    table = BanTable(100)
    table.ban("a", 30.0, "rate")
    table.ban("b", 10.0, "rate")
    table.ban("c", 20.0, "rate", offences=4)
    table.ban("b", 40.0, "scanner")  # made longer: its first end is stale
    assert [b.host for b in table.active(0.0)] == ["c", "a", "b"]
    assert table.active(0.0)[0] == BanView("c", "rate", 20.0, 4)
    assert table.expire(15.0) == []
    assert table.expire(30.0) == ["c", "a"]
    assert table.is_banned("b", 39.9)
    assert not table.is_banned("b", 40.0)
    assert table.expire(50.0) == ["b"]
    assert len(table) == 0


def test_a_full_table_drops_the_ban_that_ends_first() -> None:
    table = BanTable(3)
    for key, until in [("a", 30.0), ("b", 10.0), ("c", 20.0), ("d", 40.0)]:
        table.ban(key, until, "rate")
    assert sorted(b.host for b in table) == ["a", "c", "d"]
    table.resize(1)
    assert [b.host for b in table] == ["d"]


def test_the_heap_stays_small_when_one_ban_is_made_longer_many_times() -> None:
    table = BanTable(10)
    for i in range(10_000):
        table.ban("a", float(i + 1), "rate")
    assert len(table._ends) < 100
    assert table.expire(9999.0) == []
    assert table.expire(10_000.0) == ["a"]


def test_trim_drops_the_oldest_entries() -> None:
    table = {str(i): i for i in range(10)}
    trim(table, 3)
    assert table == {"7": 7, "8": 8, "9": 9}
    trim(table, -1)
    assert table == {}
