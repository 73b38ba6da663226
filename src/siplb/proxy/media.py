"""Media anchoring in the proxy core: which calls, which messages, and parking them meanwhile.

The core never talks to an engine. A message whose SDP the engine must rewrite is parked here
and a ``MediaAsk`` goes to the shell (``asks``, drained like ``Proxy.out``); the shell's
``Proxy.media_done(token, sdp, now)`` brings the engine's SDP, and the message goes on with it,
byte for byte as it came but for its body and Content-Length (``siplb.media.sdp.with_body``).
The rules of which message asks what are ``siplb.media.flow``'s.

Which calls: ``anchor = "always"``, ``"never"``, or ``"nat"``: the caller is behind NAT (its
source address is not its top Via's sent-by, or its SDP names a private address while it does
not send from one) or the call goes to a phone registered through us over its own flow. A route
rule's ``media`` overrides it for the calls it routes. The decision is made once, on the initial
INVITE; the call's later messages follow it.

When the engine fails (the shell reports None, or the deadline passes first): ``on_failure =
"forward"`` sends the message on unanchored; ``"reject"`` answers 503 to an INVITE (a response
or an ACK always goes on unanchored: the call is set up already on the other side).
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from siplb.media.asks import DELETE, OFFER, MediaAsk
from siplb.media.flow import (
    Flow,
    MediaCall,
    Tags,
    Waiting,
    engine_tags,
    request_op,
    response_op,
)
from siplb.media.sdp import is_private, is_sdp, names_private, with_body
from siplb.sip import DEFAULT_LIMITS, Limits, ParseError, Request, Response, Via

from .actions import Target
from .context import Context
from .registrar import sent_elsewhere
from .routing import Dispatch, Routed
from .transaction import ServerTransaction

M = TypeVar("M", Request, Response)

ALWAYS, NAT, NEVER = "always", "nat", "never"
REJECT = "reject"


class MediaPolicy(Protocol):
    """What the core reads of ``[media]`` (``siplb.settings.MediaSettings``)."""

    @property
    def anchor(self) -> str: ...
    @property
    def flags(self) -> Sequence[str]: ...
    @property
    def on_failure(self) -> str: ...
    @property
    def timeout(self) -> float: ...
    @property
    def engines(self) -> Sequence[object]: ...


@dataclass(frozen=True, slots=True)
class ParkedRequest:
    """A request with its server transaction made (retransmissions absorbed meanwhile)."""

    request: Request
    txn: ServerTransaction
    listener: int
    via: Via
    source: Target
    dispatch: Dispatch | None


@dataclass(frozen=True, slots=True)
class ParkedResponse:
    """A response on its way upstream: through ``server``, or by its Via when None."""

    response: Response
    server: ServerTransaction | None
    source: Target | None  # where it came from, when known


@dataclass(frozen=True, slots=True)
class ParkedAck:
    """An ACK for a 2xx, forwarded statelessly once its SDP is rewritten."""

    request: Request
    via: Via
    source: Target
    listener: int


Parked = ParkedRequest | ParkedResponse | ParkedAck


class MediaUser(Protocol):
    """Who continues a parked message with what to send on: the engine's SDP in it, or the
    message as it came when the engine failed (for a request, None: answer 503 instead)."""

    def resume_request(
        self, parked: ParkedRequest, request: Request | None, now: float
    ) -> None: ...

    def resume_response(self, parked: ParkedResponse, response: Response, now: float) -> None: ...

    def resume_ack(self, parked: ParkedAck, request: Request, now: float) -> None: ...


def caller_behind_nat(request: Request, via: Via, source: Target) -> bool:
    """The source is not the top Via's sent-by, or the SDP names a private address that the
    source is not (a private caller on a private network is no sign of NAT)."""
    return sent_elsewhere(via, source) or sdp_behind_nat(request, source)


def sdp_behind_nat(message: Request | Response, source: Target) -> bool:
    """The SDP names a private address and its sender does not send from one."""
    return not is_private(source.host) and is_sdp(message) and names_private(message.body)


def received_from(source: Target) -> tuple[str, ...]:
    """The engine's options to take ``source``'s address instead of the SDP's (Kamailio's
    rtpengine module sends ``received-from`` with every command; ``SIP-source-address`` makes
    rtpengine use it)."""
    family = "IP6" if ":" in source.host else "IP4"
    return ("SIP-source-address", f"received-from={family}", f"received-from={source.host}")


class MediaAnchor:
    """The anchored calls of one core and its messages waiting for the engine."""

    __slots__ = (
        "_deadlines",
        "asks",
        "context",
        "deadline",
        "flow",
        "limits",
        "names",
        "policy",
        "user",
    )

    def __init__(
        self,
        policy: MediaPolicy,
        context: Context,
        user: MediaUser,
        *,
        listener_names: Sequence[str | None] = (),
        limits: Limits = DEFAULT_LIMITS,
        flow: Flow[Parked] | None = None,
    ) -> None:
        self.policy = policy
        self.context = context
        self.user = user
        self.names = list(listener_names)
        self.limits = limits
        self.flow: Flow[Parked] = flow or Flow()
        self.asks: list[MediaAsk] = []
        self.deadline: float | None = None  # the heap's (``Timed``)
        self._deadlines: list[tuple[float, int]] = []

    @property
    def patience(self) -> float:
        """How long a parked message waits: one timeout per engine the shell may try, and
        one more for the way there and back."""
        return self.policy.timeout * (len(self.policy.engines) + 1)

    # ---- which calls ---------------------------------------------------------------------------
    def wants(
        self, request: Request, via: Via, source: Target, override: str | None, to_phone: bool
    ) -> bool:
        anchor = override or self.policy.anchor
        if anchor == ALWAYS:
            return True
        if anchor == NAT:
            return to_phone or caller_behind_nat(request, via, source)
        return False

    def take_request(self, parked: ParkedRequest, routed: Routed, now: float) -> bool:
        """A request with its server transaction made: True when it waits for the engine (or
        went on already); a new INVITE decides whether its call is anchored."""
        request = parked.request
        if request.method == "INVITE" and request.to_tag is None:
            if request.body and not is_sdp(request):  # multipart: its SDP is not ours to touch
                self.context.stats["media_not_sdp"] += 1
                return False
            dispatch = parked.dispatch
            override = None if dispatch is None else dispatch.media
            if not self.wants(request, parked.via, parked.source, override, routed.phone):
                return False
            outgoing = self._outgoing(routed, dispatch, parked.listener)
            if self.start_call(request, parked.listener, outgoing, now) is None:
                return False
        return self.request(parked, now)

    def answered(self, request: Request, status: int, now: float) -> None:
        """A final answer to a request: a new INVITE's failure ends its call."""
        call_id = request.call_id
        if status >= 300 and request.method == "INVITE" and request.to_tag is None and call_id:
            self.ended(call_id, now)

    def _outgoing(self, routed: Routed, dispatch: Dispatch | None, incoming: int) -> int:
        """The listener toward the callee (the first destination's, for a set)."""
        target = routed.next_hop
        if target is None and dispatch is not None and dispatch.first is not None:
            spec = dispatch.first.spec
            target = Target(spec.transport, spec.host, spec.port)
        if target is None:
            return incoming
        prefer = incoming if routed.hop_listener is None else routed.hop_listener
        return self.context.listener_for(target, prefer)

    def start_call(
        self, request: Request, incoming: int, outgoing: int, now: float
    ) -> MediaCall[Parked] | None:
        """A new anchored call (None when the table is full: the call goes unanchored). The
        same Call-ID again (an INVITE after a 401 or 407) keeps the entry, so its offer waits
        behind the delete of the failed attempt."""
        call_id = request.call_id
        if call_id is None:
            return None
        caller, flags = _text(request.from_tag), tuple(self.policy.flags)
        direction = self._direction(incoming, outgoing)
        old = self.flow.calls.get(call_id)
        if old is not None:
            old.caller_tag, old.flags, old.direction, old.seen = caller, flags, direction, now
            old.late_invite, old.answer_due, old.last, old.ended = None, False, None, False
            return old
        call: MediaCall[Parked] = MediaCall(call_id, caller, flags, direction, now)
        if not self.flow.add_call(call):
            self.context.stats["media_calls_full"] += 1
            return None
        self.context.stats["media_calls"] += 1
        return call

    def _direction(self, incoming: int, outgoing: int) -> tuple[str, str]:
        """The engine's interfaces toward caller and callee: named after the listeners, when
        the call crosses from one to another (a multi-homed host); else none."""
        names = self.names
        if incoming == outgoing or max(incoming, outgoing) >= len(names):
            return ("", "")
        inside, outside = names[incoming], names[outgoing]
        if not inside or not outside:
            return ("", "")
        return (inside, outside)

    # ---- messages ----------------------------------------------------------------------------
    def request(self, parked: ParkedRequest | ParkedAck, now: float) -> bool:
        """A request of an anchored call; True when it is parked (or resumed already)."""
        request = parked.request
        call = self._call(request)
        if call is None:
            return False
        call.seen = now
        has_sdp = is_sdp(request)
        if request.method == "INVITE" and not request.body:
            call.late_invite = request.cseq.number
            return False
        op = request_op(request.method, has_sdp, call.answer_due)
        if op is None:
            return False
        if op == OFFER:
            call.answer_due = False  # the offer is the request's: its responses answer it
        nat = caller_behind_nat(request, parked.via, parked.source)
        return self._park(call, op, request, parked, now, parked.source if nat else None)

    def response(
        self,
        response: Response,
        server: ServerTransaction | None,
        source: Target | None,
        now: float,
    ) -> bool:
        """A response going upstream; True when it is parked (or resumed already)."""
        call = self._call(response)
        if call is None:
            return False
        call.seen = now
        try:
            cseq = response.cseq
        except ParseError:
            return False
        late = cseq.method == "INVITE" and call.late_invite == cseq.number
        op = response_op(cseq.method, response.status, is_sdp(response), late)
        if op is None:
            return False
        if op == OFFER:
            call.answer_due = True
        nat = source is not None and sdp_behind_nat(response, source)
        parked = ParkedResponse(response, server, source)
        return self._park(call, op, response, parked, now, source if nat else None)

    def ended(self, call_id: bytes, now: float) -> None:
        """BYE, a failed setup, expiry: the engine forgets the call (after what it is busy
        with for it)."""
        call = self.flow.calls.get(call_id)
        if call is None or call.ended:
            return
        call.ended = True
        ask = MediaAsk(0, DELETE, call_id.decode("latin-1"), "", "", b"", "", (), ("", ""))
        self.flow.enqueue(call, Waiting(0, ask, None, b""))
        self._advance(call, now)

    def expire(self, now: float, max_age: float, expired: Sequence[bytes]) -> None:
        """Calls the call accounting let go (``expired``), and calls not seen for
        ``max_age`` (those that never entered it: to a phone, by Route)."""
        for call_id in expired:
            self.ended(call_id, now)
        for call in self.flow.stale(now, max_age):
            self.context.stats["media_expired"] += 1
            self.ended(call.call_id, now)

    # ---- the engine's answers ----------------------------------------------------------------
    def done(self, token: int, sdp: bytes | None, now: float) -> None:
        found = self.flow.finish(token)
        if found is None:
            self.context.stats["media_late"] += 1  # past its deadline, or never ours
            return
        call, item = found
        if sdp is None:
            self._failed(call, item, now)
        else:
            call.last = (_key(item), sdp)
            self._resume(item, sdp, now)
        self._advance(call, now)

    def _failed(self, call: MediaCall[Parked], item: Waiting[Parked], now: float) -> None:
        """The engine failed: the message goes on by ``on_failure``; after a failed offer the
        call is anchored no more (the engine may hold half of it: it is deleted)."""
        self._resume(item, None, now)
        if item.ask.op == OFFER:
            self.ended(call.call_id, now)

    def on_timer(self, now: float) -> None:
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            _, token = heapq.heappop(deadlines)
            if token in self.flow.sent:
                self.context.stats["media_timeouts"] += 1
                self.done(token, None, now)
        self._rearm()

    # ---- parking -----------------------------------------------------------------------------
    def _park(
        self,
        call: MediaCall[Parked],
        op: str,
        message: Request | Response,
        parked: Parked,
        now: float,
        nat: Target | None = None,
    ) -> bool:
        """Queue ``message``'s command behind its call's; ``nat``: the sender is behind NAT at
        that address, so the engine sends its media there (``received-from``), not to the
        private address its SDP names (rtpengine trusts the SDP unless told so)."""
        flow = self.flow
        is_request = isinstance(message, Request)
        tags = Tags(call.call_id.decode("latin-1"), _text(message.from_tag), _text(message.to_tag))
        from_tag, to_tag = engine_tags(tags, op, request=is_request)
        direction = call.direction_from(from_tag) if op == OFFER else ("", "")
        branch = ""
        if is_request:
            try:
                branch = message.top_via().branch or ""
            except ParseError:
                branch = ""
        token = flow.token()
        flags = call.flags if nat is None else (*call.flags, *received_from(nat))
        ask = MediaAsk(
            token, op, tags.call_id, from_tag, to_tag, message.body, branch, flags, direction
        )
        item: Waiting[Parked] = Waiting(token, ask, parked, message.body)
        if not flow.room():
            self.context.stats["media_waiting_full"] += 1
            self._failed(call, item, now)
            return True
        flow.enqueue(call, item)
        self._advance(call, now)
        return True

    def _advance(self, call: MediaCall[Parked], now: float) -> None:
        """Send the call's next command, or answer it from the last one (same SDP again)."""
        flow = self.flow
        while (item := flow.head(call)) is not None and not item.sent:
            if item.ask.op == DELETE:
                flow.pop(call)
                self.asks.append(item.ask)
                self.context.stats["media_deletes"] += 1
                if call.ended:
                    call.last = None
                    if not call.queue:
                        flow.forget(call)
                continue
            last = call.last
            if last is not None and last[0] == _key(item):
                flow.pop(call)
                self.context.stats["media_repeats"] += 1
                self._resume(item, last[1], now)
                continue
            flow.mark_sent(call, item)
            self.asks.append(item.ask)
            self.context.stats[f"media_{item.ask.op}s"] += 1
            heapq.heappush(self._deadlines, (now + self.patience, item.token))
            self._rearm()
            return

    def _resume(self, item: Waiting[Parked], sdp: bytes | None, now: float) -> None:
        """Send the parked message on, with the engine's SDP when there is one."""
        parked = item.parked
        if sdp is None:
            self.context.stats["media_failures"] += 1
        user = self.user
        if isinstance(parked, ParkedResponse):
            user.resume_response(parked, self._rewritten(parked.response, sdp), now)
        elif isinstance(parked, ParkedAck):
            user.resume_ack(parked, self._rewritten(parked.request, sdp), now)
        elif parked is not None:
            request = parked.request
            reject = sdp is None and self.policy.on_failure == REJECT and request.method == "INVITE"
            user.resume_request(parked, None if reject else self._rewritten(request, sdp), now)

    def _rewritten(self, message: M, sdp: bytes | None) -> M:
        if sdp is None:
            return message
        try:
            return with_body(message, sdp, self.limits)
        except ParseError:  # the engine's SDP made it too large: it goes on unanchored
            self.context.stats["media_bad_sdp"] += 1
            return message

    def _rearm(self) -> None:
        deadlines = self._deadlines
        sent = self.flow.sent
        while deadlines and deadlines[0][1] not in sent:
            heapq.heappop(deadlines)
        self.context.heap.schedule(self, deadlines[0][0] if deadlines else None)

    def _call(self, message: Request | Response) -> MediaCall[Parked] | None:
        call_id = message.call_id
        if call_id is None:
            return None
        call = self.flow.calls.get(call_id)
        return None if call is None or call.ended else call


def _text(tag: bytes | None) -> str:
    return "" if tag is None else tag.decode("latin-1")


def _key(item: Waiting[Parked]) -> tuple[str, str, str, bytes]:
    ask = item.ask
    return (ask.op, ask.from_tag, ask.to_tag, item.original)
