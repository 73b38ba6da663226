"""Which message of an anchored call asks the engine what, and the messages waiting for it.

The rules (RFC 3264 offer/answer carried by RFC 3261, 3262 and 3311 messages)::

    request  INVITE / UPDATE with SDP             -> offer   (from-tag = From, to-tag = To)
    request  INVITE without SDP                   -> nothing; its answers' SDP is an offer (late offer)
    response 1xx / 2xx with SDP, late offer       -> offer   (from-tag = To, to-tag = From)
    response 1xx / 2xx with SDP, otherwise        -> answer  (from-tag = From, to-tag = To)
    request  ACK / PRACK with SDP, offer pending  -> answer  (from-tag = To, to-tag = From)
    BYE, a failed setup, expiry                   -> delete  (the whole call)

The tags are the engine's: its ``from-tag`` always names the side that made the offer (as
Kamailio's rtpengine module swaps them for an offer in a reply and an answer in a request).

One call asks one thing at a time: a message that needs the engine while another of the same
call waits queues behind it, so the engine sees a call's commands in the order of its messages
(a delete never overtakes the offer it ends). The same SDP handed over twice in a row (a 2xx
retransmitted, a 183 and its 200 with one body) gets the engine's last body without asking
again. Everything waiting is counted against one bound; a message that finds it full is
treated as an engine failure.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from .asks import ANSWER, DELETE, OFFER, MediaAsk

P = TypeVar("P")

MAX_WAITING = 4096  # messages parked or queued behind one, all calls together
MAX_CALLS = 100_000  # anchored calls known at once


@dataclass(frozen=True, slots=True)
class Tags:
    """A message's dialog identifiers, as text."""

    call_id: str
    from_tag: str
    to_tag: str


def request_op(method: str, has_sdp: bool, answer_due: bool) -> str | None:
    """What a request of an anchored call asks (None: nothing)."""
    if not has_sdp:
        return None
    if method in ("INVITE", "UPDATE"):
        return OFFER
    if method in ("ACK", "PRACK") and answer_due:
        return ANSWER
    return None


def response_op(method: str, status: int, has_sdp: bool, late: bool) -> str | None:
    """What a response of an anchored call asks: SDP in a 1xx or 2xx to INVITE or UPDATE."""
    if not has_sdp or not 100 < status < 300 or method not in ("INVITE", "UPDATE"):
        return None
    return OFFER if late and method == "INVITE" else ANSWER


def engine_tags(tags: Tags, op: str, *, request: bool) -> tuple[str, str]:
    """The engine's (from-tag, to-tag) for ``op`` carried by a request or a response."""
    swapped = (op == OFFER and not request) or (op == ANSWER and request)
    if swapped:
        return tags.to_tag, tags.from_tag
    return tags.from_tag, tags.to_tag


@dataclass(slots=True)
class Waiting(Generic[P]):
    """A message waiting for the engine (``parked``; None for a delete, which nothing waits
    for), and the command that will free it."""

    token: int
    ask: MediaAsk
    parked: P | None
    original: bytes  # the SDP as received: the key of the engine's last answer
    sent: bool = False


@dataclass(slots=True)
class MediaCall(Generic[P]):
    """One anchored call: who called, how it is anchored, what waits for the engine."""

    call_id: bytes
    caller_tag: str
    flags: tuple[str, ...]
    direction: tuple[str, str]  # (caller side, callee side), ("", "") when one interface
    seen: float
    late_invite: int | None = None  # CSeq of an INVITE sent without SDP, until answered
    answer_due: bool = False  # an offer came in a response: the ACK or PRACK answers it
    queue: deque[Waiting[P]] = field(default_factory=deque)
    last: tuple[tuple[str, str, str, bytes], bytes] | None = None
    ended: bool = False

    def direction_from(self, from_tag: str) -> tuple[str, str]:
        """The direction of an offer made by the side whose tag is ``from_tag``."""
        if from_tag == self.caller_tag:
            return self.direction
        return self.direction[1], self.direction[0]


class Flow(Generic[P]):
    """The anchored calls and the messages waiting for the engine (both bounded)."""

    def __init__(self, max_waiting: int = MAX_WAITING, max_calls: int = MAX_CALLS) -> None:
        self.max_waiting = max_waiting
        self.max_calls = max_calls
        self.calls: dict[bytes, MediaCall[P]] = {}
        self.sent: dict[int, MediaCall[P]] = {}  # token -> call, for asks the shell runs
        self.waiting = 0
        self._next = 0

    def token(self) -> int:
        """A new handle for a parked message (never 0: 0 means nothing waits)."""
        self._next += 1
        return self._next

    def add_call(self, call: MediaCall[P]) -> bool:
        """Remember a new anchored call; False when the table is full."""
        if call.call_id not in self.calls and len(self.calls) >= self.max_calls:
            return False
        self.calls[call.call_id] = call
        return True

    def room(self) -> bool:
        return self.waiting < self.max_waiting

    def enqueue(self, call: MediaCall[P], item: Waiting[P]) -> None:
        call.queue.append(item)
        self.waiting += 1

    def head(self, call: MediaCall[P]) -> Waiting[P] | None:
        return call.queue[0] if call.queue else None

    def mark_sent(self, call: MediaCall[P], item: Waiting[P]) -> None:
        item.sent = True
        if item.ask.op != DELETE:
            self.sent[item.token] = call

    def finish(self, token: int) -> tuple[MediaCall[P], Waiting[P]] | None:
        """The head of the call whose ask ``token`` was, taken off its queue."""
        call = self.sent.pop(token, None)
        if call is None or not call.queue or call.queue[0].token != token:
            return None
        return call, self.pop(call)

    def pop(self, call: MediaCall[P]) -> Waiting[P]:
        item = call.queue.popleft()
        self.waiting -= 1
        return item

    def forget(self, call: MediaCall[P]) -> None:
        """The call is deleted: nothing of it may remain (its queue is empty by then)."""
        if self.calls.get(call.call_id) is call:
            del self.calls[call.call_id]

    def stale(self, now: float, max_age: float) -> Iterator[MediaCall[P]]:
        """Calls not seen for ``max_age`` that are not ending already."""
        limit = now - max_age
        return iter([c for c in self.calls.values() if c.seen < limit and not c.ended])
