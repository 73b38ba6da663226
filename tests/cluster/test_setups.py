"""Calls in setup every node knows of (``siplb.cluster.setups``) and drained members
(``Ownership(drained=...)``): pure tables, no I/O."""

from __future__ import annotations

from siplb.cluster import Member, Ownership
from siplb.cluster.setups import CallEnded, Setup, SetupEnded, Setups

A = Member("a", 0)
B = Member("b", 0)
C = Member("c", 0)


def setup(call_id: bytes = b"c1@x", owner: Member = A, attempts: int = 1) -> Setup:
    invite = b"INVITE sip:b@x SIP/2.0\r\nCall-ID: " + call_id + b"\r\n\r\n"
    return Setup(
        call_id,
        owner,
        invite,
        ("10.0.0.1", 5060),
        0,
        "pbx",
        "sip:p:5070",
        "z9hG4bK-a.0-1",
        attempts,
    )


def test_notes_survive_the_wire() -> None:
    one = setup()
    assert Setup.decode(one.encode()) == one
    assert SetupEnded.decode(SetupEnded(b"c1@x", B).encode()) == SetupEnded(b"c1@x", B)
    assert CallEnded.decode(CallEnded(b"c1@x").encode()) == CallEnded(b"c1@x")


def test_broken_notes_are_refused() -> None:
    good = setup().encode()
    head, _, invite = good.partition(b"\n")
    for bad in (
        b"",
        b"{}\nINVITE",
        head,
        head + b"\n",
        b"not json\n" + invite,
        head.replace(b'"a.0"', b'"A B"') + b"\n" + invite,
        head.replace(b'"listener":0', b'"listener":999') + b"\n" + invite,
    ):
        assert Setup.decode(bad) is None, bad
    assert SetupEnded.decode(b"no-newline") is None
    assert SetupEnded.decode(b"a.0\n") is None
    assert CallEnded.decode(b"") is None


def test_the_latest_attempt_counts_and_only_its_owner_ends_it() -> None:
    table = Setups(ttl=10.0)
    table.heard(setup(attempts=1), 0.0)
    table.heard(setup(owner=B, attempts=2), 1.0)  # adopted by b
    assert table.owner(b"c1@x") == B
    assert table.ended(b"c1@x", A) is None  # a's end comes late: b has it now
    assert table.owner(b"c1@x") == B
    assert table.ended(b"c1@x", B) is not None
    assert table.owner(b"c1@x") is None


def test_setups_expire_and_are_bounded() -> None:
    table = Setups(ttl=10.0, limit=3)
    for n in range(5):
        table.heard(setup(b"c%d" % n), float(n))
    assert len(table) == 3
    assert [s.call_id for s in table] == [b"c2", b"c3", b"c4"]  # the oldest went first
    assert table.expire(12.5) == 1
    assert [s.call_id for s in table] == [b"c3", b"c4"]


def test_orphans_are_the_setups_of_members_gone() -> None:
    table = Setups(ttl=10.0)
    table.heard(setup(b"c1", A), 0.0)
    table.heard(setup(b"c2", B), 0.0)
    assert [s.call_id for s in table.orphaned((B, C))] == [b"c1"]
    assert [s.call_id for s in table.owned_by(B)] == [b"c2"]


def test_a_drained_member_owns_no_new_keys_but_its_branches() -> None:
    ownership = Ownership(A, (A, B, C), drained=(B,))
    keys = [b"k%d" % n for n in range(3000)]
    owners = {ownership.owner_of_key(k) for k in keys}
    assert owners == {A, C}
    assert ownership.is_live(B)
    assert ownership.named(b"b.0") == B
    # only the drained member's share moves: the others keep theirs
    before = Ownership(A, (A, B, C))
    moved = [k for k in keys if before.owner_of_key(k) != ownership.owner_of_key(k)]
    assert all(before.owner_of_key(k) == B for k in moved)


def test_when_every_member_is_drained_they_all_serve() -> None:
    ownership = Ownership(A, (A, B), drained=(A, B))
    assert set(ownership.serving) == {A, B}
