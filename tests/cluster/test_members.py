"""Who is live (``siplb.cluster.members``), with a fake clock: heartbeats, leaving, silence,
and a store's snapshot on its own clock."""

from __future__ import annotations

import pytest

from siplb.cluster import LeaveCause, Member, MemberJoined, MemberLeft, Membership, parse_tag

ME, B, C = Member("n1"), Member("n2"), Member("n3")
DEAD_AFTER = 0.7


def test_alone_at_first() -> None:
    view = Membership(ME, DEAD_AFTER)
    assert view.live == (ME,)
    assert view.ownership().alone
    assert view.version == 0


def test_a_heartbeat_joins_and_silence_leaves() -> None:
    view = Membership(ME, DEAD_AFTER)
    assert view.heard(B, 1.0, {"peer": "127.0.0.2:5070"}) == MemberJoined(B, 1.0)
    assert view.heard(B, 1.2) is None  # already live
    assert view.live == (ME, B)
    assert view.info(B) == {"peer": "127.0.0.2:5070"}
    assert view.last_heard(B) == 1.2
    assert view.expire(1.9) == []  # 0.7 since last heard: not more than dead_after
    assert view.expire(1.91) == [MemberLeft(B, 1.91, LeaveCause.SILENT)]
    assert view.live == (ME,)
    assert view.info(B) is None
    assert view.heard(B, 5.0) == MemberJoined(B, 5.0)  # came back: joins again


def test_leaving_on_purpose() -> None:
    view = Membership(ME, DEAD_AFTER)
    view.heard(B, 1.0)
    assert view.left(B, 1.1) == MemberLeft(B, 1.1, LeaveCause.LEFT)
    assert view.left(B, 1.2) is None
    assert view.left(C, 1.2) is None


def test_me_never_leaves() -> None:
    view = Membership(ME, DEAD_AFTER)
    assert view.heard(ME, 1.0) is None
    assert view.left(ME, 2.0) is None
    assert view.expire(100.0) == []
    assert view.live == (ME,)


def test_version_and_ownership_follow_changes() -> None:
    view = Membership(ME, DEAD_AFTER)
    first = view.ownership()
    assert view.ownership() is first  # the same until the members change
    view.heard(C, 1.0)
    view.heard(B, 1.0)
    assert view.version == 2
    assert view.live == (ME, B, C)
    assert view.ownership().live == (ME, B, C)
    view.expire(2.0)
    assert view.version == 4
    assert view.ownership().alone


# Store stamps (seconds of the store's clock) are far from ours: only their movement counts.
STORE = 1_700_000_000.0


def test_observe_follows_stamps_that_move() -> None:
    view = Membership(ME, DEAD_AFTER)
    events = view.observe({ME: STORE, B: STORE - 0.1}, now=10.0)
    assert events == [MemberJoined(B, 10.0)]
    # B's stamp moves: heard again at our now, whatever its value
    assert view.observe({ME: STORE + 0.2, B: STORE + 0.1}, now=10.2) == []
    assert view.last_heard(B) == 10.2
    # B stops: still for dead_after of OUR clock -> gone, though the store still lists it
    assert view.observe({ME: STORE + 0.4, B: STORE + 0.1}, now=10.6) == []
    assert view.observe({ME: STORE + 1.0, B: STORE + 0.1}, now=10.95) == [
        MemberLeft(B, 10.95, LeaveCause.SILENT)
    ]
    # ... and its stale entry does not bring it back; a moving stamp does
    assert view.observe({ME: STORE + 1.2, B: STORE + 0.1}, now=11.2) == []
    assert view.observe({ME: STORE + 1.4, B: STORE + 1.35}, now=11.4) == [MemberJoined(B, 11.4)]


def test_observe_a_member_gone_from_the_store_left() -> None:
    view = Membership(ME, DEAD_AFTER)
    view.observe({ME: STORE, B: STORE, C: STORE}, now=1.0)
    assert view.live == (ME, B, C)
    assert view.observe({ME: STORE + 0.2, C: STORE + 0.2}, now=1.2) == [
        MemberLeft(B, 1.2, LeaveCause.LEFT)
    ]
    assert view.live == (ME, C)


def test_observe_a_dead_members_leftover_does_not_join() -> None:
    view = Membership(ME, DEAD_AFTER)
    # C's stamp is 5 s older than the newest one on the store's clock: a leftover
    assert view.observe({ME: STORE, C: STORE - 5.0}, now=1.0) == []
    assert view.observe({ME: STORE + 0.2, C: STORE + 0.15}, now=1.2) == [MemberJoined(C, 1.2)]


def test_observe_without_me_keeps_me() -> None:
    view = Membership(ME, DEAD_AFTER)
    assert view.observe({}, now=1.0) == []  # a store that restarted empty
    assert view.live == (ME,)


# (tag, member)
TAGS = [
    ("n1.0", Member("n1", 0)),
    ("abc.15", Member("abc", 15)),
    ("n1", None),
    ("n1.", None),
    (".1", None),
    ("n-1.1", None),
    ("n1.-1", None),
    ("n1.999999", None),
]


@pytest.mark.parametrize(("tag", "member"), TAGS)
def test_parse_tag(tag: str, member: Member | None) -> None:
    assert parse_tag(tag) == member
    if member is not None:
        assert member.tag == tag
