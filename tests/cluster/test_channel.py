"""Sealed node-to-node frames (``siplb.cluster.channel``): forged, replayed, reordered, old,
stale and malformed frames."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from siplb.cluster import Member
from siplb.cluster.channel import (
    Opened,
    Opener,
    Rejected,
    RejectReason,
    Sealer,
)

SECRET = b"s" * 32
B = Member("n2", 1)
NOW = 1_700_000_000.0


def _reason(result: Opened | Rejected) -> RejectReason | None:
    return result.reason if isinstance(result, Rejected) else None


def test_a_sealed_frame_opens() -> None:
    frame = Sealer(SECRET, B, boot=1).seal(1, b"payload", NOW)
    assert Opener(SECRET).open(frame, NOW + 0.01) == Opened(B, 1, b"payload")


def test_an_empty_payload_opens() -> None:
    frame = Sealer(SECRET, B, boot=1).seal(255, b"", NOW)
    assert Opener(SECRET).open(frame, NOW) == Opened(B, 255, b"")


def test_forged() -> None:
    frame = Sealer(b"x" * 32, B, boot=1).seal(1, b"payload", NOW)  # another secret
    assert _reason(Opener(SECRET).open(frame, NOW)) is RejectReason.FORGED
    good = Sealer(SECRET, B, boot=1).seal(1, b"payload", NOW)
    for at in range(len(good)):  # any bit flipped anywhere
        bad = good[:at] + bytes((good[at] ^ 1,)) + good[at + 1 :]
        assert _reason(Opener(SECRET).open(bad, NOW)) in {
            RejectReason.FORGED,
            RejectReason.MALFORMED,
        }


def test_replayed() -> None:
    frame = Sealer(SECRET, B, boot=1).seal(1, b"p", NOW)
    opener = Opener(SECRET)
    assert isinstance(opener.open(frame, NOW), Opened)
    assert _reason(opener.open(frame, NOW)) is RejectReason.REPLAYED


def test_reordered_within_the_window_and_too_old() -> None:
    sealer = Sealer(SECRET, B, boot=1)
    frames = [sealer.seal(1, str(n).encode(), NOW) for n in range(100)]
    opener = Opener(SECRET, window=64)
    assert isinstance(opener.open(frames[70], NOW), Opened)
    assert isinstance(opener.open(frames[10], NOW), Opened)  # 60 behind: within the window
    assert _reason(opener.open(frames[10], NOW)) is RejectReason.REPLAYED
    assert _reason(opener.open(frames[5], NOW)) is RejectReason.REPLAYED  # 65 behind: too old
    assert isinstance(opener.open(frames[69], NOW), Opened)
    assert isinstance(opener.open(frames[99], NOW), Opened)
    assert _reason(opener.open(frames[69], NOW)) is RejectReason.REPLAYED


def test_a_new_boot_starts_a_new_window_and_an_old_boot_is_stale() -> None:
    opener = Opener(SECRET)
    old, new = Sealer(SECRET, B, boot=1), Sealer(SECRET, B, boot=2)
    early = old.seal(1, b"a", NOW)
    assert isinstance(opener.open(old.seal(1, b"b", NOW), NOW), Opened)
    assert isinstance(opener.open(new.seal(1, b"c", NOW), NOW), Opened)  # seq 1 again
    assert _reason(opener.open(early, NOW)) is RejectReason.STALE


@pytest.mark.parametrize("skew", [-5.1, 5.1, float("nan"), float("inf")])
def test_stale_stamp(skew: float) -> None:
    frame = Sealer(SECRET, B, boot=1).seal(1, b"p", NOW + skew)
    assert _reason(Opener(SECRET, max_skew=5.0).open(frame, NOW)) is RejectReason.STALE


def test_truncated_frames_are_malformed_or_forged() -> None:
    frame = Sealer(SECRET, B, boot=1).seal(1, b"payload", NOW)
    for end in range(len(frame)):
        assert _reason(Opener(SECRET).open(frame[:end], NOW)) in {
            RejectReason.MALFORMED,
            RejectReason.FORGED,
        }


def test_the_sender_table_is_bounded() -> None:
    opener = Opener(SECRET, max_senders=4)
    for n in range(10):
        assert isinstance(
            opener.open(Sealer(SECRET, Member(f"n{n}"), 1).seal(1, b"", NOW), NOW), Opened
        )
    assert opener.senders == 4


def test_an_authentic_frame_from_no_member_is_malformed() -> None:
    frame = Sealer(SECRET, Member("no-dash"), boot=1).seal(1, b"p", NOW)
    assert _reason(Opener(SECRET).open(frame, NOW)) is RejectReason.MALFORMED


def test_a_short_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="32"):
        Sealer(b"short", B, 1)
    with pytest.raises(ValueError, match="32"):
        Opener(b"short")


@given(st.binary(max_size=200))
def test_garbage_never_raises(frame: bytes) -> None:
    assert _reason(Opener(SECRET).open(frame, NOW)) in {
        RejectReason.MALFORMED,
        RejectReason.FORGED,
    }
