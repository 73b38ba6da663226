"""The one siplb branch format and its parser (``siplb.cluster.branch``)."""

from __future__ import annotations

import pytest

from siplb.cluster import Member
from siplb.cluster.branch import COOKIE, owner_of, prefix, response_owner, response_tag


def test_prefix_carries_the_cookie_and_the_tag() -> None:
    assert prefix(Member("n7", 3)) == "z9hG4bK-n7.3-"
    assert prefix(Member("n7", 3)).startswith(COOKIE)  # RFC 3261 8.1.1.7


# (branch, member it names)
OWNER_CASES = [
    ("z9hG4bK-n1.0-abc", Member("n1", 0)),
    ("z9hG4bK-n2.5-pabc", Member("n2", 5)),
    ("z9hG4bK-abc123.12-s0123", Member("abc123", 12)),
    ("z9hG4bK-n1.0-", Member("n1", 0)),
    ("z9hG4bK776asdhds", None),  # a phone's branch
    ("z9hG4bK-", None),
    ("z9hG4bK-n1.0", None),  # no unique part
    ("z9hG4bK-n1-abc", None),  # no worker
    ("z9hG4bK-.0-abc", None),  # no node
    ("z9hG4bK-n1.x-abc", None),
    ("z9hG4bK-n1.123456-abc", None),  # a worker number no one has
    ("z9hG4bK-n1.\u0663-abc", None),  # a non-ASCII digit
    ("z9hg4bk-n1.0-abc", None),  # the cookie is case-sensitive
    ("1234", None),
    ("", None),
]


@pytest.mark.parametrize(("branch", "member"), OWNER_CASES)
def test_owner_of(branch: str, member: Member | None) -> None:
    assert owner_of(branch) == member


def test_owner_of_reads_what_prefix_writes() -> None:
    for member in (Member("n1"), Member("n1", 15), Member("zz9", 3)):
        assert owner_of(prefix(member) + "p5a1") == member


def _response(via: bytes, status: bytes = b"SIP/2.0 200 OK") -> bytes:
    return (
        status + b"\r\n" + via + b"\r\n"
        b"Via: SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bK-n9.9-up\r\n"
        b"Call-ID: c1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    )


# (datagram, member its top Via names)
RESPONSE_CASES = [
    (_response(b"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-n1.3-5a1"), Member("n1", 3)),
    (_response(b"v: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK-n1.3-5a1"), Member("n1", 3)),
    (_response(b"VIA : SIP/2.0/UDP 127.0.0.1;rport=5;BRANCH = z9hG4bK-n2.0-p1"), Member("n2", 0)),
    (
        _response(b"Via: SIP/2.0/UDP 127.0.0.1;received=1.2.3.4;branch=z9hG4bK-n1.1-x"),
        Member("n1", 1),
    ),
    # the top Via is someone else's: the siplb branch below it does not count
    (_response(b"Via: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKplain"), None),
    (_response(b"Via: SIP/2.0/UDP 127.0.0.1"), None),
    # two via-parms in one header: the first is the top one
    (_response(b"Via: SIP/2.0/UDP a;branch=z9hG4bKx, SIP/2.0/UDP b;branch=z9hG4bK-n1.1-y"), None),
    (
        _response(b"Via: SIP/2.0/UDP a;branch=z9hG4bK-n1.2-x, SIP/2.0/UDP b;branch=z9hG4bKy"),
        Member("n1", 2),
    ),
    # a request never has an owner by its branch
    (_response(b"Via: SIP/2.0/UDP a;branch=z9hG4bK-n1.1-x", b"INVITE sip:a@b SIP/2.0"), None),
    (_response(b"Via: SIP/2.0/UDP a;branch=z9hG4bK-n\xff.1-x"), None),
    (b"SIP/2.0 200 OK\r\n", None),
    (b"", None),
    (b"\x00\xff garbage", None),
]


@pytest.mark.parametrize(("data", "member"), RESPONSE_CASES)
def test_response_owner(data: bytes, member: Member | None) -> None:
    assert response_owner(data) == member
    if member is not None:
        assert response_tag(data) == member.tag.encode()


def test_response_owner_of_every_truncation_never_raises() -> None:
    data = RESPONSE_CASES[0][0]
    for end in range(len(data) + 1):
        assert response_owner(data[:end]) in (None, Member("n1", 3))
    assert response_owner(data + b"trailing \xff bytes") == Member("n1", 3)
