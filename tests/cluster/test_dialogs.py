"""Established dialogs shared by members: the accounting's diff (what changed since the last
drain) and a survivor's orphans (the dead member's dialogs whose Call-ID it owns)."""

from __future__ import annotations

import pytest

import siplb.dispatch.accounting as accounting_module
from siplb.cluster import Member, Ownership
from siplb.cluster.dialogs import Orphans, dialog_value
from siplb.dispatch.accounting import CallAccounting, DialogChanges, Established

URI = "sip:10.0.0.2:5060"
OTHER = "sip:10.0.0.3:5060"
MAX_AGE = 7200.0
A, B, C = Member("n1"), Member("n2"), Member("n3")


def answered(accounting: CallAccounting, key: bytes, uri: str = URI, now: float = 0.0) -> None:
    accounting.setup_started(key, uri, now)
    accounting.confirmed(key, now + 1)


def test_nothing_is_journaled_until_something_drains() -> None:
    accounting = CallAccounting()
    answered(accounting, b"early")
    first = accounting.dialog_changes(100, MAX_AGE)
    assert first == DialogChanges((Established(b"early", URI, 1 + MAX_AGE),), ())
    assert accounting.dialog_changes(100, MAX_AGE) == DialogChanges()  # drained


def test_only_confirmed_dialogs_are_published_and_their_end_once() -> None:
    accounting = CallAccounting()
    accounting.dialog_changes(100, MAX_AGE)
    accounting.setup_started(b"ringing", URI, 0.0)
    accounting.setup_started(b"failed", URI, 0.0)
    accounting.ended(b"failed")  # never confirmed: never published, never removed
    answered(accounting, b"up", OTHER, now=2.0)
    assert accounting.dialog_changes(100, MAX_AGE) == DialogChanges(
        (Established(b"up", OTHER, 3 + MAX_AGE),), ()
    )
    accounting.ended(b"up")
    accounting.ended(b"up")  # a retransmitted BYE
    assert accounting.dialog_changes(100, MAX_AGE) == DialogChanges((), (b"up",))


def test_in_dialog_activity_republishes_the_later_expiry() -> None:
    accounting = CallAccounting()
    accounting.dialog_changes(100, MAX_AGE)
    answered(accounting, b"long")
    accounting.dialog_changes(100, MAX_AGE)
    accounting.touch(b"long", 5000.0)  # a re-INVITE
    changes = accounting.dialog_changes(100, MAX_AGE)
    assert changes.established == (Established(b"long", URI, 5000 + MAX_AGE),)


def test_a_dialog_that_ends_before_the_drain_is_only_removed() -> None:
    accounting = CallAccounting()
    accounting.dialog_changes(100, MAX_AGE)
    answered(accounting, b"short")
    accounting.ended(b"short")
    assert accounting.dialog_changes(100, MAX_AGE) == DialogChanges((), (b"short",))


def test_a_key_set_up_again_after_its_end_is_published_again() -> None:
    accounting = CallAccounting()
    accounting.dialog_changes(100, MAX_AGE)
    answered(accounting, b"again")
    accounting.ended(b"again")
    answered(accounting, b"again", now=10.0)
    assert accounting.dialog_changes(100, MAX_AGE) == DialogChanges(
        (Established(b"again", URI, 11 + MAX_AGE),), ()
    )


def test_each_drain_is_bounded_and_the_rest_waits() -> None:
    accounting = CallAccounting()
    accounting.dialog_changes(100, MAX_AGE)
    for n in range(25):
        answered(accounting, b"c%d" % n)
    sizes = []
    while changes := accounting.dialog_changes(10, MAX_AGE).established:
        sizes.append(len(changes))
    assert sizes == [10, 10, 5]


def test_the_journal_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(accounting_module, "JOURNAL_LIMIT", 3)
    accounting = CallAccounting()
    accounting.dialog_changes(1, MAX_AGE)
    for n in range(5):
        answered(accounting, b"c%d" % n)
    assert accounting.journal_overflow == 2
    assert len(accounting.dialog_changes(100, MAX_AGE).established) == 3


def dialogs(count: int, expires: float = 1000.0) -> dict[str, dict[str, object]]:
    return {f"call-{n}@host": dialog_value(URI, expires) for n in range(count)}


def test_each_survivor_keeps_the_dead_members_dialogs_it_owns() -> None:
    dead = dialogs(300)
    survivors = [Ownership(B, [B, C]), Ownership(C, [B, C])]
    tables = [Orphans() for _ in survivors]
    kept = [table.take(A, dead, own, now=0.0) for table, own in zip(tables, survivors, strict=True)]
    assert sum(kept) == 300  # every dialog kept by exactly one survivor
    assert all(count > 50 for count in kept)
    for call_id in dead:
        owner = survivors[0].owner_of_key(call_id.encode())
        holders = [own.me for own, table in zip(survivors, tables, strict=True) if call_id in table]
        assert holders == [owner]


def test_expired_malformed_and_overflowing_dialogs_are_not_kept() -> None:
    orphans = Orphans(limit=2)
    read = {
        "gone": dialog_value(URI, 5.0),
        "broken": {"uri": URI},
        "text": {"uri": URI, "expires": "soon"},
        **dialogs(3),
    }
    assert orphans.take(A, read, Ownership(B, [B]), now=10.0) == 2
    assert orphans.refused == 1
    assert len(orphans) == 2


def test_an_orphan_is_closed_once_by_its_bye() -> None:
    orphans = Orphans()
    orphans.take(A, dialogs(2), Ownership(B, [B]), now=0.0)
    closed = orphans.close("call-0@host")
    assert closed is not None
    assert (closed.member, closed.uri, closed.expires) == (A, URI, 1000.0)
    assert orphans.close("call-0@host") is None
    assert orphans.close("never") is None
    assert len(orphans) == 1
    assert orphans.per_uri() == {URI: 1}


def test_orphans_expire_at_their_expiry() -> None:
    orphans = Orphans()
    orphans.take(
        A, {"early": dialog_value(URI, 50.0), "late": dialog_value(URI, 90.0)}, Ownership(B), 0.0
    )
    orphans.close("late")
    assert orphans.expire(49.0) == 0
    assert orphans.expire(50.0) == 1
    assert orphans.expire(100.0) == 0  # "late" was closed already
    assert len(orphans) == 0
