"""Calls in setup, known to every node: who owns each, and what continuing it takes.

With an address every node shares (an ``anycast`` listener), any node may receive any datagram
of a call. The node that takes a new INVITE tells every other live node about each attempt it
makes: a ``Setup`` with the INVITE as it arrived, where from, and the destination and downstream
branch of the attempt. Every node keeps them in its ``Setups`` until the owner says the setup
ended (its final answer went upstream) or they expire (``ttl``, past Timer C).

The table serves two rules:

- **pin**: while the owner is live, every datagram of the Call-ID goes to it, even when the
  members changed since (a node joined, or the owner was drained and gets no new calls): a call
  in setup stays where it started, and only new calls move;
- **adopt**: when the owner is gone, the node that now owns the Call-ID by rendezvous continues
  the setup: the same INVITE, to the same destination, with the same branch, so the PBX sees a
  retransmission of the request it has, not a second call (``Proxy.adopt``).

A BYE that passes a node which does not count its call (the call moved since, or its node is
drained) is told to the others as ``CallEnded``, so the node that counts it stops counting it.

The table is bounded (``limit`` entries; the oldest goes first) and costs one dict lookup per
datagram that has a Call-ID. Frames carry a Setup as one JSON line and the INVITE's bytes.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

from siplb.cluster.member import Member, parse_tag

LIMIT = 50_000  # calls in setup remembered, cluster-wide


@dataclass(frozen=True, slots=True)
class Setup:
    """One attempt of a call in setup, as its owner made it."""

    call_id: bytes
    owner: Member
    invite: bytes  # the INVITE as it arrived at the balancer
    source: tuple[str, int]  # where it came from (UDP)
    listener: int  # the listener it arrived on (the same index on every node)
    set_name: str
    uri: str  # the destination of this attempt
    branch: str  # our Via branch on the downstream hop
    attempts: int  # this attempt's number (1: the first destination)
    proceeding: bool = False  # the destination answered it provisionally (17.1.1.2)

    def encode(self) -> bytes:
        head = {
            "call_id": self.call_id.decode("latin-1"),
            "owner": self.owner.tag,
            "source": [self.source[0], self.source[1]],
            "listener": self.listener,
            "set": self.set_name,
            "uri": self.uri,
            "branch": self.branch,
            "attempts": self.attempts,
            "proceeding": self.proceeding,
        }
        return json.dumps(head, separators=(",", ":")).encode() + b"\n" + self.invite

    @classmethod
    def decode(cls, payload: bytes) -> Setup | None:
        """A Setup from a frame's payload; ``None`` when it is not one."""
        head, newline, invite = payload.partition(b"\n")
        if not newline or not invite:
            return None
        try:
            value = json.loads(head)
            owner = parse_tag(str(value["owner"]))
            if owner is None:
                return None
            host, port = value["source"]
            setup = cls(
                str(value["call_id"]).encode("latin-1"),
                owner,
                invite,
                (str(host), int(port)),
                int(value["listener"]),
                str(value["set"]),
                str(value["uri"]),
                str(value["branch"]),
                int(value["attempts"]),
                bool(value.get("proceeding", False)),
            )
        except (ValueError, KeyError, TypeError, UnicodeEncodeError):
            return None
        if not setup.call_id or not 0 <= setup.listener < 256:
            return None
        return setup


@dataclass(frozen=True, slots=True)
class SetupEnded:
    """``owner``'s setup of ``call_id`` ended: its final answer went upstream."""

    call_id: bytes
    owner: Member

    def encode(self) -> bytes:
        return self.owner.tag.encode("ascii") + b"\n" + self.call_id

    @classmethod
    def decode(cls, payload: bytes) -> SetupEnded | None:
        tag, newline, call_id = payload.partition(b"\n")
        owner = parse_tag(tag.decode("ascii", "replace")) if newline else None
        return None if owner is None or not call_id else cls(call_id, owner)


@dataclass(frozen=True, slots=True)
class CallEnded:
    """A BYE passed a node that did not count the call (it moved since its setup, or its node
    was drained): the node that counts it stops counting it."""

    call_id: bytes

    def encode(self) -> bytes:
        return self.call_id

    @classmethod
    def decode(cls, payload: bytes) -> CallEnded | None:
        return cls(payload) if 0 < len(payload) <= 1024 else None


CallNote = Setup | SetupEnded | CallEnded


class Setups:
    """The calls in setup every node knows of (see the module's rules), by Call-ID."""

    __slots__ = ("_by_call", "_until", "limit", "ttl")

    def __init__(self, ttl: float, limit: int = LIMIT) -> None:
        self.ttl = ttl
        self.limit = limit
        self._by_call: OrderedDict[bytes, Setup] = OrderedDict()
        self._until: dict[bytes, float] = {}

    def __len__(self) -> int:
        return len(self._by_call)

    def __iter__(self) -> Iterator[Setup]:
        return iter(list(self._by_call.values()))

    def get(self, call_id: bytes) -> Setup | None:
        return self._by_call.get(call_id)

    def owner(self, call_id: bytes) -> Member | None:
        """The member a call in setup is pinned to, or ``None``."""
        setup = self._by_call.get(call_id)
        return None if setup is None else setup.owner

    def heard(self, setup: Setup, now: float) -> None:
        """An attempt made (by this member or another): the latest one counts."""
        by_call = self._by_call
        by_call.pop(setup.call_id, None)
        by_call[setup.call_id] = setup
        self._until[setup.call_id] = now + self.ttl
        while len(by_call) > self.limit:
            oldest, _ = by_call.popitem(last=False)
            del self._until[oldest]

    def ended(self, call_id: bytes, owner: Member) -> Setup | None:
        """``owner`` says the setup ended; an end from a member that no longer owns the setup
        (it was adopted since) changes nothing."""
        setup = self._by_call.get(call_id)
        if setup is None or setup.owner != owner:
            return None
        del self._by_call[call_id]
        del self._until[call_id]
        return setup

    def expire(self, now: float) -> int:
        """Forget setups past their ``ttl``; returns how many."""
        gone = [call_id for call_id, until in self._until.items() if until <= now]
        for call_id in gone:
            del self._by_call[call_id]
            del self._until[call_id]
        return len(gone)

    def owned_by(self, member: Member) -> list[Setup]:
        return [setup for setup in self._by_call.values() if setup.owner == member]

    def orphaned(self, live: tuple[Member, ...]) -> list[Setup]:
        """The setups whose owner is no longer live."""
        alive = set(live)
        return [setup for setup in self._by_call.values() if setup.owner not in alive]
