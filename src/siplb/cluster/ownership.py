"""Who owns a datagram, and any other key (docs/design.md section 4, "one ownership model").

The rule, the same between the workers of a node and between nodes:
- a response whose top Via branch is a siplb branch naming a LIVE member: that member (its
  client transaction, probe or keepalive sent the request);
- any other datagram with a Call-ID (a request; a response to someone else's request, or naming
  a member that is gone): rendezvous hashing of the Call-ID over the live members, so an INVITE,
  its retransmissions, CANCEL, ACK and the dialog's BYE all meet at one member, and a member
  leaving moves only its own share;
- a datagram with no Call-ID (not SIP enough to own): the member that received it (it answers
  or drops it).

The same rendezvous picks the owner of other keys: a destination's prober and health owner, a
NAT binding's keepalive sender.

A drained member is live but not serving: it still owns the responses its branches name and the
keys pinned to it (``siplb.cluster.setups``: its calls in setup), but rendezvous gives it no
share, so new calls go to the others. When every member is drained they all serve again.

Rendezvous (highest random weight) hashing, over slots: a key falls in one of ``SLOTS``
slots (``crc32(key) % SLOTS``, stable across processes and runs, never ``hash()``), and each
slot is owned by the member with the highest score ``mix64(slot ^ seed(member))``: a 64-bit
per-member seed, precomputed, and the splitmix64 finalizer, a bijection with full avalanche, so
the scores of one slot are independent and each member wins a fair share. Removing a member
moves only the slots it had won; adding one takes a fair share from each. An ``Ownership``
fills its slot table lazily, so a datagram costs one Call-ID search, one CRC and one index,
whatever the number of members, and a membership change costs nothing until keys arrive.

Cost of ``Ownership.owner`` per datagram, measured (Python 3.11, one core) with
``.venv/bin/python -m timeit -s "from siplb.cluster import Member, Ownership;
o = Ownership(Member('n1'), [Member('n1', w) for w in range(N)]); d = DATAGRAM" "o.owner(d)"``
where DATAGRAM is the RFC 3261 24.2 INVITE (owned by its Call-ID) or a 200 OK whose top Via
branch names ``n1.1`` (owned by its branch):

    members N            1        2        4        16
    INVITE (Call-ID)     0.03 us  0.65 us  0.65 us  0.68 us
    200 OK (branch)      0.03 us  0.72 us  0.76 us  0.71 us

The first key of a slot after a membership change costs one score per member (16 members:
about 6 us), once.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from collections.abc import Sequence
from typing import Final

from siplb.cluster.branch import response_tag
from siplb.cluster.member import Member

SLOTS: Final = 1 << 14  # keys are spread over this many slots (share error ~0.5% at 3 members)

# RFC 3261 20.8 (Call-ID) and 7.3.3 (compact form "i")
_CALL_ID: Final = re.compile(rb"\n(?:call-id|i)[ \t]*:[ \t]*([^\r\n]*)", re.IGNORECASE)
_MASK: Final = (1 << 64) - 1


def call_id(data: bytes) -> bytes | None:
    """The Call-ID of raw datagram ``data`` without parsing it, or ``None``."""
    match = _CALL_ID.search(data)
    return None if match is None else match[1].strip()


def slot(key: bytes) -> int:
    """The slot ``key`` falls in: stable across processes and runs."""
    return zlib.crc32(key) % SLOTS


def mix64(x: int) -> int:
    """The splitmix64 finalizer: a bijection on 64-bit integers with full avalanche."""
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def seed(member: Member) -> int:
    """The 64-bit per-member seed rendezvous scores with."""
    digest = hashlib.blake2b(member.tag.encode(), digest_size=8, person=b"siplb-member")
    return int.from_bytes(digest.digest(), "little")


def rendezvous(key: bytes, members: Sequence[Member]) -> Member:
    """The member that owns ``key`` among ``members`` (not empty); the order does not matter."""
    return _winner(slot(key), [(seed(m), m) for m in members])


def _winner(at: int, seeds: Sequence[tuple[int, Member]]) -> Member:
    best, owner = -1, seeds[0][1]
    for s, member in seeds:
        score = mix64(at ^ s)
        if score > best or (score == best and member < owner):
            best, owner = score, member
    return owner


class Ownership:
    """The live members as one member sees them, and who owns what among them."""

    __slots__ = ("_by_tag", "_seeds", "_slots", "alone", "live", "me", "serving")

    def __init__(
        self, me: Member, live: Sequence[Member] = (), drained: Sequence[Member] = ()
    ) -> None:
        self.me = me
        self.live: tuple[Member, ...] = tuple(sorted({me, *live}))
        self.alone = len(self.live) == 1
        # the members rendezvous shares keys among: the live ones not drained (all, if all are)
        out = set(drained)
        self.serving: tuple[Member, ...] = tuple(m for m in self.live if m not in out) or self.live
        self._by_tag = {m.tag.encode(): m for m in self.live}
        self._seeds = [(seed(m), m) for m in self.serving]
        self._slots: list[Member | None] = [] if self.alone else [None] * SLOTS

    def is_live(self, member: Member) -> bool:
        return member in self.live

    def owner(self, data: bytes) -> Member:
        """The member that must handle datagram ``data`` (see the module's rules)."""
        if self.alone:
            return self.me
        tag = response_tag(data)
        if tag is not None and (named := self._by_tag.get(tag)) is not None:
            return named
        match = _CALL_ID.search(data)
        if match is None:
            return self.me
        return self.owner_of_key(match[1].strip())

    def owner_of_key(self, key: bytes) -> Member:
        """The member that owns ``key`` (a Call-ID, a destination URI, a binding)."""
        if self.alone:
            return self.me
        at = zlib.crc32(key) % SLOTS
        owner = self._slots[at]
        if owner is None:
            owner = self._slots[at] = _winner(at, self._seeds)
        return owner

    def owns_key(self, key: bytes) -> bool:
        return self.alone or self.owner_of_key(key) == self.me

    def named(self, tag: bytes) -> Member | None:
        """The live member whose tag is ``tag`` (a branch's), or ``None``."""
        return self._by_tag.get(tag)

    def __repr__(self) -> str:
        return f"Ownership(me={self.me.tag}, live=[{', '.join(m.tag for m in self.live)}])"
