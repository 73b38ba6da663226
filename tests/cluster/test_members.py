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
