"""Shared NAT bindings: exactly one live member keeps each one open, moving when it dies."""

from __future__ import annotations

from siplb.cluster import Member, Ownership
from siplb.cluster.bindings import Assignment, BindingShare

A, B, C = Member("n1"), Member("n2"), Member("n3")
FLOWS = [f"udp:198.51.100.{n}:40000" for n in range(1, 61)]


def owned_by(ownership: Ownership, member: Member) -> list[str]:
    return sorted(f for f in FLOWS if ownership.owner_of_key(f.encode()) == member)


def test_each_binding_is_kept_by_exactly_one_member_and_moves_with_its_death() -> None:
    table = dict.fromkeys(FLOWS, 1000.0)
    shares = {m: BindingShare() for m in (A, B, C)}
    three = {m: Ownership(m, [A, B, C]) for m in (A, B, C)}
    for member, share in shares.items():
        assignment = share.assign(table, three[member], now=0.0)
        assert assignment.adopt == tuple(owned_by(three[member], member))
        assert assignment.release == ()
    assert sorted(f for s in shares.values() for f in s.kept) == sorted(FLOWS)
    two = {m: Ownership(m, [B, C]) for m in (B, C)}  # A died
    moved = {m: shares[m].assign(table, two[m], now=1.0) for m in (B, C)}
    from_a = set(owned_by(three[A], A))
    assert set(moved[B].adopt) | set(moved[C].adopt) == from_a  # only A's share moves
    assert (moved[B].release, moved[C].release) == ((), ())
    assert sorted(shares[B].kept | shares[C].kept) == sorted(FLOWS)
    assert not shares[B].kept & shares[C].kept


def test_a_member_that_comes_back_takes_its_share_back() -> None:
    table = dict.fromkeys(FLOWS, 1000.0)
    share = BindingShare()
    share.assign(table, Ownership(B, [B]), now=0.0)
    back = share.assign(table, Ownership(B, [A, B]), now=1.0)
    assert back.adopt == ()
    assert set(back.release) == set(owned_by(Ownership(B, [A, B]), A))


def test_a_binding_learned_here_but_owned_elsewhere_is_released_at_once() -> None:
    ownership = Ownership(A, [A, B])
    share = BindingShare()
    mine, theirs = owned_by(ownership, A)[0], owned_by(ownership, B)[0]
    assert share.learned(mine, ownership)
    assert not share.learned(theirs, ownership)
    assert share.kept == {mine}
    assert share.assign({mine: 10.0, theirs: 10.0}, ownership, now=0.0) == Assignment()


def test_expired_and_vanished_bindings_are_released_and_the_owner_removes_expired_ones() -> None:
    ownership = Ownership(A)
    share = BindingShare()
    share.assign({"udp:a:1": 10.0, "udp:b:1": 10.0, "udp:c:1": 10.0}, ownership, now=0.0)
    share.gone("udp:c:1")  # unregistered here
    assignment = share.assign({"udp:a:1": 5.0}, ownership, now=6.0)
    assert assignment == Assignment((), ("udp:a:1", "udp:b:1"), ("udp:a:1",))
    assert share.kept == set()
