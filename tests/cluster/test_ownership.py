"""Who owns a datagram or a key (``siplb.cluster.ownership``): the rule, evenness, minimal
disruption."""

from __future__ import annotations

import random

import pytest

from siplb.cluster import Member, Ownership, rendezvous
from siplb.cluster.ownership import call_id

N1 = [Member("n1", w) for w in range(4)]


def _request(call: bytes = b"call-1", header: bytes = b"Call-ID") -> bytes:
    return (
        b"INVITE sip:bob@example.com SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bK-n1.1-abc\r\n"
        b"From: <sip:a@b>;tag=1\r\nTo: <sip:bob@example.com>\r\n"
        + header
        + b": "
        + call
        + b"\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    )


def _response(branch: bytes, call: bytes = b"call-1") -> bytes:
    return (
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=" + branch + b"\r\n"
        b"Via: SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bK-n1.2-up\r\n"
        b"Call-ID: " + call + b"\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    )


BY_CALL = rendezvous(b"call-1", N1)

# (datagram, owner among n1.0 .. n1.3 as seen by n1.2)
CASES = [
    # requests: by Call-ID, whatever branch their Via carries
    (_request(), BY_CALL),
    (_request(b"other@host"), rendezvous(b"other@host", N1)),
    (_request(b" call-1 ", b"i"), BY_CALL),  # compact form, spaces around
    (_request(header=b"CALL-ID"), BY_CALL),
    # a response naming a live member: that member
    (_response(b"z9hG4bK-n1.3-5a1"), Member("n1", 3)),
    (_response(b"z9hG4bK-n1.0-p5a1"), Member("n1", 0)),
    # naming a member not live (another node, a worker that is gone), or foreign: by Call-ID
    (_response(b"z9hG4bK-n2.3-5a1"), BY_CALL),
    (_response(b"z9hG4bK-n1.7-5a1"), BY_CALL),
    (_response(b"z9hG4bKplain"), BY_CALL),
    # no Call-ID: the member that received it
    (b"\x00\xff garbage", Member("n1", 2)),
    (b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP a;branch=z9hG4bKx\r\n\r\n", Member("n1", 2)),
]


@pytest.mark.parametrize(("data", "owner"), CASES)
def test_owner(data: bytes, owner: Member) -> None:
    assert Ownership(Member("n1", 2), N1).owner(data) == owner


def test_alone_owns_everything() -> None:
    alone = Ownership(Member("n1"))
    assert alone.alone
    assert alone.live == (Member("n1"),)
    for data, _ in CASES:
        assert alone.owner(data) == Member("n1")
    assert alone.owner_of_key(b"sip:a") == Member("n1")
    assert alone.owns_key(b"sip:a")


def test_live_is_sorted_and_includes_me() -> None:
    ownership = Ownership(Member("n2", 1), [Member("n1", 1), Member("n1", 0), Member("n1", 0)])
    assert ownership.live == (Member("n1", 0), Member("n1", 1), Member("n2", 1))
    assert not ownership.alone


def test_every_member_agrees_and_the_order_does_not_matter() -> None:
    members = [Member(f"n{i}", w) for i in range(3) for w in range(2)]
    views = [
        Ownership(me, random.Random(i).sample(members, len(members)))
        for i, me in enumerate(members)
    ]
    for n in range(500):
        key = f"{n}@host".encode()
        owners = {view.owner_of_key(key) for view in views}
        assert owners == {rendezvous(key, members)}
        assert sum(view.owns_key(key) for view in views) == 1


def test_the_mapping_is_stable_across_runs() -> None:
    # pinned: members of different versions or processes must agree on every key
    members = [Member("n1", 0), Member("n1", 1), Member("n2", 0)]
    assert [rendezvous(f"k{n}".encode(), members).tag for n in range(8)] == [
        "n2.0",
        "n1.1",
        "n1.1",
        "n1.1",
        "n1.1",
        "n2.0",
        "n1.0",
        "n1.0",
    ]


def test_call_id() -> None:
    assert call_id(_request(b"abc@h")) == b"abc@h"
    assert call_id(_request(b"abc@h ", b"i")) == b"abc@h"
    assert call_id(b"garbage") is None


@pytest.mark.parametrize("size", [2, 3, 4, 16])
def test_shares_are_even(size: int) -> None:
    members = [Member("n1", w) for w in range(size)]
    ownership = Ownership(members[0], members)
    keys = 20_000
    counts = dict.fromkeys(members, 0)
    for n in range(keys):
        counts[ownership.owner_of_key(f"{n}-4242@127.0.0.1".encode())] += 1
    fair = keys / size
    assert all(abs(count - fair) < 0.1 * fair for count in counts.values()), counts


def test_a_member_leaving_moves_only_its_own_share() -> None:
    members = [Member("n1"), Member("n2"), Member("n3")]
    before = Ownership(members[0], members)
    after = Ownership(members[0], members[:2])  # n3 left
    keys = [f"{n}-call@10.0.0.{n % 7}".encode() for n in range(10_000)]
    moved = [key for key in keys if before.owner_of_key(key) != after.owner_of_key(key)]
    owned_by_n3 = [key for key in keys if before.owner_of_key(key) == Member("n3")]
    assert moved == owned_by_n3
    assert 3000 < len(moved) < 3700  # about a third


def test_a_member_joining_takes_a_fair_share_from_each() -> None:
    members = [Member("n1"), Member("n2"), Member("n3")]
    before = Ownership(members[0], members)
    after = Ownership(members[0], [*members, Member("n4")])
    keys = [f"{n}@h".encode() for n in range(10_000)]
    moved = [key for key in keys if before.owner_of_key(key) != after.owner_of_key(key)]
    assert {after.owner_of_key(key) for key in moved} == {Member("n4")}
    assert 2200 < len(moved) < 2800  # about a quarter
