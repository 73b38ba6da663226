"""One demo call: its state, its INVITE client transaction with CANCEL, the requests it sends.

``InviteClient`` is sans-IO, like the proxy core: the caller's task feeds it responses and the
time, and sends what it returns.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from siplb.sip import ParseError, Request, Response, SipUri, parse_name_addr, parse_uri

from .wire import T1, T2, TIMER_B, Address, branch_of, new_branch

RING_LIMIT: Final = 10.0  # a call ringing this long without an answer is cancelled
CANCEL_AFTER_RINGING: Final = 0.3  # an on-purpose CANCEL goes this long after the 180
ABANDON_AFTER_CANCEL: Final = 2.0  # when stopping, a CANCELled call waits this long at most


class Outcome(StrEnum):
    COMPLETED = "completed"  # answered, then ended by a BYE that got a 2xx
    CANCELLED = "cancelled"  # cancelled on purpose while ringing (or at exit), 487
    SETUP_FAILED = "setup failed"  # no 2xx: an error response, or no final response
    DROPPED = "dropped"  # answered, but its BYE failed: the PBX no longer knew the call
    UNFINISHED = "unfinished"  # still going when the caller stopped waiting


@dataclass(frozen=True, slots=True)
class CallRecord:
    call_id: str
    pbx: str | None  # the demo PBX that rang or answered (the user part of its Contact)
    started: float
    ended: float
    answered: bool
    outcome: Outcome
    detail: str  # e.g. "487 Request Terminated", "timeout", "408 Request Timeout on BYE"


class Call:
    """The state of one call, owned by its task."""

    def __init__(self, call_id: str, invite: Request, started: float) -> None:
        self.call_id = call_id
        self.invite = invite
        self.branch = branch_of(invite) or ""
        self.started = started
        self.queue: asyncio.Queue[Response | None] = asyncio.Queue()
        self.hangup = False
        self.cancel_on_ring = False
        self.pbx: str | None = None
        self.answered = False
        self.bye_sent = False  # hanging up: the balancer ended the call when the BYE passed
        self.ack: bytes | None = None  # resent when the final response to INVITE comes again
        self.to_value = b""
        self.routes: list[bytes] = []
        self.remote_target = b""
        self.outcome = Outcome.UNFINISHED
        self.detail = "still setting up"

    def end(self, outcome: Outcome, detail: str) -> None:
        self.outcome = outcome
        self.detail = detail

    def wake(self) -> None:
        self.queue.put_nowait(None)

    # ---- messages (RFC 3261 9.1, 12.2.1.1, 17.1.1.3) ---------------------------------------
    def take_answer(self, response: Response) -> None:
        """A 2xx: the dialog's remote tag, route set (12.1.2) and remote target."""
        self.answered = True
        self.detail = "still in the call"
        self.to_value = response.get(b"to") or b""
        self.routes = list(reversed(response.values(b"record-route")))
        try:
            self.remote_target = parse_name_addr(response.values(b"contact")[0]).uri
        except (IndexError, ParseError):  # no usable Contact: keep to the first Request-URI
            self.remote_target = self.invite.uri

    def non_2xx_ack(self, response: Response) -> Request:
        """17.1.1.3: the ACK of a 3xx-6xx, with the INVITE's branch."""
        invite = self.invite
        headers = [(b"Via", invite.get_all(b"via")[0]), (b"Max-Forwards", b"70")]
        headers += [
            (b"From", invite.get(b"from") or b""),
            (b"To", response.get(b"to") or b""),
            (b"Call-ID", invite.get(b"call-id") or b""),
            (b"CSeq", b"1 ACK"),
            (b"Content-Length", b"0"),
        ]
        return Request.build("ACK", invite.uri, headers)

    def dialog_request(self, method: str, cseq: int, sent_by: str) -> Request:
        """12.2.1.1: Request-URI = remote target, Route = the route set (loose routing)."""
        via = f"SIP/2.0/UDP {sent_by};branch={new_branch()};rport".encode("ascii")
        headers = [(b"Via", via), (b"Max-Forwards", b"70")]
        headers += [(b"Route", route) for route in self.routes]
        headers += [
            (b"From", self.invite.get(b"from") or b""),
            (b"To", self.to_value),
            (b"Call-ID", self.call_id.encode("ascii")),
            (b"CSeq", f"{cseq} {method}".encode("ascii")),
            (b"Content-Length", b"0"),
        ]
        return Request.build(method, self.remote_target, headers)

    def next_hop(self, default: Address) -> Address:
        """The first Route entry (loose routing), else the remote target itself."""
        try:
            value = parse_name_addr(self.routes[0]).uri if self.routes else self.remote_target
            uri = parse_uri(value)
        except ParseError:
            return default
        return (uri.host, uri.port or 5060) if isinstance(uri, SipUri) else default


class InviteClient:
    """The INVITE client transaction of one call (17.1.1) with its CANCEL (9.1), sans-IO.

    ``on_timer`` returns what to (re)send, ``on_response`` the final response when it comes;
    ``failure`` says why the caller gave up, when it did.
    """

    def __init__(self, call: Call, now: float) -> None:
        self.call = call
        self.pending = [call.invite.to_bytes()]  # sent at the first on_timer
        self.retransmit_at: float | None = now + T1  # Timer A
        self.interval = T1
        self.give_up_at = now + TIMER_B  # Timer B; after a CANCEL, 64*T1 from it (9.1)
        self.cancel_at: float | None = None
        self.cancel: bytes | None = None
        self.cancelled_at = 0.0
        self.why_cancel = ""
        self.provisional = False
        self.failure: str | None = None

    def wake_at(self) -> float:
        times = [self.give_up_at, self.retransmit_at, self.cancel_at]
        if self.call.hangup and self.cancel is not None:
            times.append(self.cancelled_at + ABANDON_AFTER_CANCEL)
        return min(t for t in times if t is not None)

    def on_timer(self, now: float) -> list[bytes]:
        out, self.pending = self.pending, []
        call = self.call
        if call.hangup and self.provisional and self.cancel is None:
            self.cancel_at = now
            self.why_cancel = "on purpose" if self.why_cancel == "on purpose" else "at exit"
        if self.cancel is None and self.cancel_at is not None and self.cancel_at <= now:
            self.cancel, self.cancel_at = _cancel_request(call.invite).to_bytes(), None
            self.cancelled_at = now
            self.retransmit_at, self.interval, self.give_up_at = now + T1, T1, now + TIMER_B
            out.append(self.cancel)
        stuck = call.hangup and self.cancel is not None
        if now >= self.give_up_at or (stuck and now >= self.cancelled_at + ABANDON_AFTER_CANCEL):
            self.failure = _no_final(self.provisional, self.cancel is not None)
        elif self.retransmit_at is not None and self.retransmit_at <= now:
            out.append(self.cancel or call.invite.to_bytes())
            self.interval = min(2 * self.interval, T2) if self.cancel else 2 * self.interval
            self.retransmit_at = now + self.interval
        return out

    def on_response(self, response: Response, now: float) -> Response | None:
        cseq = response.cseq
        if cseq.number != 1 or branch_of(response) != self.call.branch:
            return None
        if cseq.method == "CANCEL":
            self.retransmit_at = None  # the CANCEL was answered; the INVITE's answer follows
            return None
        if cseq.method != "INVITE":
            return None
        call = self.call
        call.pbx = call.pbx or _pbx_of(response)
        status = response.status
        if status >= 200:
            return response
        if not self.provisional:  # Timer A stops; a ringing limit starts
            self.provisional = True
            self.retransmit_at = None
            self.cancel_at = now + RING_LIMIT
            self.why_cancel = f"no answer in {RING_LIMIT:g} s"
        if status >= 180 and call.cancel_on_ring and self.cancel is None:
            call.cancel_on_ring = False
            self.cancel_at, self.why_cancel = now + CANCEL_AFTER_RINGING, "on purpose"
        return None


def _cancel_request(invite: Request) -> Request:
    """9.1: same Request-URI, top Via, From, To, Call-ID and CSeq number as the INVITE."""
    headers = [(b"Via", invite.get_all(b"via")[0]), (b"Max-Forwards", b"70")]
    headers += [(name, invite.get(name) or b"") for name in (b"From", b"To", b"Call-ID")]
    headers += [(b"CSeq", b"1 CANCEL"), (b"Content-Length", b"0")]
    return Request.build("CANCEL", invite.uri, headers)


def _no_final(provisional: bool, cancelled: bool) -> str:
    if cancelled:
        return "no final response after CANCEL"
    return "no final response after ringing" if provisional else "no response (timeout)"


def _pbx_of(response: Response) -> str | None:
    """The demo PBX a response came from: the user part of its Contact."""
    contacts = response.values(b"contact")
    if not contacts or response.status == 100:
        return None
    try:
        uri = parse_name_addr(contacts[0]).parsed_uri()
    except ParseError:
        return None
    if isinstance(uri, SipUri) and uri.user:
        return uri.user.decode("latin-1")
    return None
