"""The admission stage (docs/design.md 3 step 2): what a datagram goes through before any server
transaction exists, in this order, each step once per datagram:

1. blocklist and bans, before parsing (a banned source costs a lookup, not a parse);
2. ownership: a datagram another member owns is handed to it, and nothing else is done here
   (on a node, only datagrams that arrived on an address every node shares: ``shared``; a call
   in setup is pinned to the node that has it, ``siplb.cluster.setups``);
3. (the core parses the datagram);
4. ACL, rate limits and scanner signatures (``admission.Admission``);
5. the overload guard (``overload.OverloadGuard``): past its threshold a new INVITE gets one
   stateless 503, before any other work, even 100 Trying.

Alone (one member) the ownership step is one attribute test; without ``[protection]`` steps 1
and 4 are skipped.
"""

from __future__ import annotations

from siplb.cluster import Member
from siplb.cluster.branch import response_tag
from siplb.cluster.ownership import Ownership, call_id
from siplb.cluster.setups import Setups
from siplb.sip import Request

from .actions import Target
from .admission import Admission
from .context import Context
from .overload import OverloadGuard
from .routing import Refusal


class AdmissionStage:
    __slots__ = ("admission", "context", "overload", "ownership", "shared")

    def __init__(
        self, context: Context, admission: Admission | None, overload: OverloadGuard
    ) -> None:
        self.context = context
        self.admission = admission  # None only where a test wants a bare core
        self.overload = overload
        self.ownership: Ownership | None = None  # None: alone, everything is ours
        self.shared: frozenset[int] | None = None  # listeners whose datagrams any member owns

    def members_changed(self, ownership: Ownership, shared: frozenset[int] | None = None) -> None:
        """``shared``: the listeners whose address other members receive on too (None: all of
        them, as for the workers of one node); a datagram on any other listener is ours."""
        self.ownership = None if ownership.alone else ownership
        self.shared = shared

    # ---- before parsing --------------------------------------------------------------------------
    def source_refused(self, source: Target, now: float) -> bool:
        """Step 1: a blocked or banned source (counted by reason in ``admission.drops``)."""
        admission = self.admission
        if admission is None or admission.check_source(source.host, now) is None:
            return False
        self.context.stats["dropped"] += 1
        return True

    def owner(self, data: bytes, listener: int) -> Member | None:
        """Step 2: the member that owns ``data`` when it is not this one, else None."""
        ownership = self.ownership
        if ownership is None:
            return None
        shared = self.shared
        if shared is not None and listener not in shared:
            return None  # this node's own address: the datagram is its own
        setups = self.context.setups
        if setups is None or not len(setups):
            owner = ownership.owner(data)
        else:
            owner = _pinned_owner(data, ownership, setups)
        return None if owner == ownership.me else owner

    # ---- after parsing ---------------------------------------------------------------------------
    def check(
        self,
        request: Request,
        source: Target,
        listener: int,
        now: float,
        *,
        new_call: bool,
    ) -> Refusal | None:
        """Steps 4 and 5 for a parsed request; ``new_call``: an INVITE that would start a call
        (no To tag, no server transaction yet, the proxy accepting calls)."""
        admission = self.admission
        if admission is not None:
            verdict = admission.check_request(request, source.host, listener, now)
            self.take_events()
            if verdict is not None:  # counted by reason in admission.drops
                return Refusal(verdict.status, verdict.detail or verdict.reason, verdict.reason)
        if new_call:
            refused = self.overload.admit(now)
            if refused is not None:
                self.context.stats["refused:overload"] += 1
                return Refusal(503, refused, "overload", self.context.retry_after())
        return None

    def take_events(self) -> None:
        """The admission stage's bans and lifts, for the shell (log, kernel set, workers)."""
        admission = self.admission
        if admission is not None and admission.events:
            self.context.events.extend(admission.events)
            admission.events.clear()


def _pinned_owner(data: bytes, ownership: Ownership, setups: Setups) -> Member:
    """``Ownership.owner`` with calls in setup pinned to their live owner."""
    tag = response_tag(data)
    if tag is not None and (named := ownership.named(tag)) is not None:
        return named  # a response: the member whose branch it is, while it lives
    key = call_id(data)
    if key is None:
        return ownership.me
    pinned = setups.owner(key)
    if pinned is not None and ownership.is_live(pinned):
        return pinned
    return ownership.owner_of_key(key)
