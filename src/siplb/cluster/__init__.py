"""Pure cluster rules: membership, ownership, what members share and how views merge.

- ``member``: ``Member(node, worker)`` and its tag ``node.worker``;
- ``branch``: the siplb Via branch, made and read in one place;
- ``ownership``: who owns a datagram or a key (rendezvous over the live members);
- ``members``: who is live, from heartbeats or a store's snapshot;
- ``leases``: ``max_calls`` shared by capacity leases;
- ``view``: what members publish (calls, health, operator actions), merged;
- ``channel``: sealed node-to-node frames with a replay window.
"""

from siplb.cluster.member import Member, parse_tag
from siplb.cluster.members import LeaveCause, MemberJoined, MemberLeft, Membership
from siplb.cluster.ownership import Ownership, rendezvous

__all__ = [
    "LeaveCause",
    "Member",
    "MemberJoined",
    "MemberLeft",
    "Membership",
    "Ownership",
    "parse_tag",
    "rendezvous",
]
