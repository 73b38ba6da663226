"""RFC 3261 section 17 transactions as seen by a stateful proxy, with RFC 6026's Accepted state.

Server transactions absorb request retransmissions and retransmit the last response; client
transactions retransmit over UDP, time out, and send the ACK for a non-2xx final response. Both are
pure: they append ``Send`` actions to a shared list and keep their next deadline in a
``TimerHeap``; the proxy core is their transaction user (TU).

States (17.1.1, 17.1.2, 17.2.1, 17.2.2; RFC 6026 7.1, 7.2):

    INVITE client      Calling -> Proceeding -> Completed (3xx-6xx, Timer D) / Accepted (2xx, M)
    non-INVITE client  Trying  -> Proceeding -> Completed (Timer K)
    INVITE server      Proceeding -> Completed (3xx-6xx; G, H) -> Confirmed (ACK; I)
                       Proceeding -> Accepted (2xx; L)
    non-INVITE server  Trying -> Proceeding -> Completed (Timer J)

A client transaction in Calling/Trying also times out after ``failover_timeout`` without any
response, so the proxy can try the next destination long before Timer B (32 s); once a provisional
arrived an INVITE waits up to Timer C (16.6 step 11).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol

from siplb.sip import Request, Response, Via

from .actions import Send, Target
from .build import make_ack
from .timers import TimerHeap, Timers


def server_key(request: Request, via: Via) -> tuple[str, ...]:
    """17.2.3: branch + sent-by + method (ACK and CANCEL matched to INVITE by the caller)."""
    branch = via.branch
    method = "INVITE" if request.method == "ACK" else request.method
    if branch is not None and branch.startswith("z9hG4bK"):
        return (branch, via.sent_by, method)
    # RFC 2543 peers: no magic cookie, match on the dialog and CSeq (17.2.3, last paragraph)
    cseq = request.cseq.number if request.has(b"cseq") else 0
    return (
        (request.call_id or b"").decode("latin-1"),
        (request.from_tag or b"").decode("latin-1"),
        str(cseq),
        via.sent_by,
        method,
    )


class TxState(StrEnum):
    CALLING = "calling"
    TRYING = "trying"
    PROCEEDING = "proceeding"
    COMPLETED = "completed"
    CONFIRMED = "confirmed"
    ACCEPTED = "accepted"
    TERMINATED = "terminated"


class ClientUser(Protocol):
    """What a client transaction reports to its transaction user."""

    def on_response(self, txn: ClientTransaction, response: Response, now: float) -> None: ...

    def on_failure(self, txn: ClientTransaction, cause: str, now: float) -> None: ...


class ClientOwner(Protocol):
    """Who keeps the client transaction table: told when a transaction ends, so it can forget
    it (the transaction never touches the table itself)."""

    def client_terminated(self, txn: ClientTransaction) -> None: ...


class ServerUser(Protocol):
    def server_terminated(self, txn: ServerTransaction) -> None: ...

    def server_answered(
        self, txn: ServerTransaction, request: Request | None, status: int, now: float
    ) -> None:
        """The first final response went out (``status``), or the transaction ended without
        one (``status`` 0); ``request`` is the request answered, while it is still known."""


class ClientUserless:
    """The TU of a transaction whose responses nobody waits for (a CANCEL we send)."""

    def on_response(self, txn: ClientTransaction, response: Response, now: float) -> None:
        return None

    def on_failure(self, txn: ClientTransaction, cause: str, now: float) -> None:
        return None


NO_USER = ClientUserless()


class ServerTransaction:
    __slots__ = (
        "_g_at",
        "_g_interval",
        "_heap",
        "_last",
        "_out",
        "_timers",
        "_user",
        "_wait_at",
        "context",
        "deadline",
        "invite",
        "key",
        "last_status",
        "listener",
        "request",
        "source",
        "state",
    )

    def __init__(
        self,
        key: tuple[str, ...],
        request: Request,
        source: Target,
        listener: int,
        user: ServerUser,
        heap: TimerHeap,
        out: list[Send],
        timers: Timers,
    ) -> None:
        self.key = key
        # the request and the TU's context, until the final response: then only what the
        # transaction still sends is kept (the last response while Completed, nothing while
        # Accepted), so the 64*T1 it lingers costs little memory
        self.request: Request | None = request
        self.source = source
        self.listener = listener
        self.invite = request.method == "INVITE"
        self.state = TxState.PROCEEDING if self.invite else TxState.TRYING
        self.deadline: float | None = None
        self.context: object | None = None  # the proxy's response context, if any
        self.last_status = 0
        self._user = user
        self._heap = heap
        self._out = out
        self._timers = timers
        self._last: bytes | None = None
        self._g_at: float | None = None
        self._g_interval = timers.t1
        self._wait_at: float | None = None  # Timer H, I, J or L

    @property
    def final_sent(self) -> bool:
        return self.last_status >= 200

    def respond(self, status: int, data: bytes, now: float) -> None:
        """Send a response the TU chose (17.2.1, 17.2.2)."""
        if self.state in (TxState.COMPLETED, TxState.CONFIRMED, TxState.TERMINATED):
            return
        if self.state is TxState.ACCEPTED and not 200 <= status < 300:
            return
        self._send(data)
        self._last = data
        first_final = status >= 200 > self.last_status
        self.last_status = status
        if first_final:
            self._user.server_answered(self, self.request, status, now)
        if status < 200:
            if self.state is TxState.TRYING:
                self.state = TxState.PROCEEDING
            return
        self.request = None
        self.context = None
        t = self._timers
        reliable = self.source.reliable
        if self.invite and status < 300:
            self.state = TxState.ACCEPTED  # RFC 6026 8.5: Timer L
            self._last = None  # a 2xx is retransmitted by the UAS, not by us (RFC 6026 7.1)
            self._wait_at = now + t.b
        elif self.invite:
            self.state = TxState.COMPLETED
            self._wait_at = now + t.b  # Timer H
            if not reliable:
                self._g_at = now + t.t1  # Timer G
        else:
            self.state = TxState.COMPLETED
            if reliable:
                self._terminate()
                return
            self._wait_at = now + t.b  # Timer J
        self._rearm()

    def receive_retransmission(self, now: float) -> None:
        """The same request again: repeat the last response where the RFC says to."""
        if self._last is not None and self.state in (TxState.PROCEEDING, TxState.COMPLETED):
            self._send(self._last)

    def receive_ack(self, now: float) -> bool:
        """An ACK for our non-2xx final response (17.2.1): absorbed. False if not expected."""
        if self.state is TxState.COMPLETED and self.invite:
            self.state = TxState.CONFIRMED
            self._g_at = None
            self._last = None  # Confirmed only absorbs ACK retransmissions (Timer I)
            if self.source.reliable:
                self._terminate()
            else:
                self._wait_at = now + self._timers.t4  # Timer I
                self._rearm()
            return True
        return self.state is TxState.CONFIRMED

    def on_timer(self, now: float) -> None:
        if self._g_at is not None and self._g_at <= now and self.state is TxState.COMPLETED:
            if self._last is not None:
                self._send(self._last)
            self._g_interval = min(2 * self._g_interval, self._timers.t2)
            self._g_at = now + self._g_interval
        if self._wait_at is not None and self._wait_at <= now:
            self._terminate()
            return
        self._rearm()

    def _rearm(self) -> None:
        g_at = self._g_at
        wait_at = self._wait_at
        when = wait_at if g_at is None or (wait_at is not None and wait_at < g_at) else g_at
        _rearm(self, self._heap, when)

    def _send(self, data: bytes) -> None:
        self._out.append(Send(data, self.source, self.listener))

    def _terminate(self) -> None:
        if 0 <= self.last_status < 200:  # ended unanswered (told once: -1 marks it told)
            self.last_status = -1
            self._user.server_answered(self, None, 0, 0.0)
        self.state = TxState.TERMINATED
        self.request = None
        self.context = None
        self._last = None
        self._heap.schedule(self, None)
        self._user.server_terminated(self)


class ClientTransaction:
    __slots__ = (
        "_a_at",
        "_a_interval",
        "_ack",
        "_c_fired",
        "_heap",
        "_out",
        "_owner",
        "_timeout_at",
        "_timers",
        "_wait_at",
        "branch",
        "data",
        "deadline",
        "invite",
        "listener",
        "method",
        "request",
        "sent_at",
        "state",
        "target",
        "timer_c",
        "user",
    )

    def __init__(
        self,
        branch: str,
        request: Request,
        target: Target,
        listener: int,
        user: ClientUser,
        heap: TimerHeap,
        out: list[Send],
        timers: Timers,
        owner: ClientOwner,
        *,
        failover_timeout: float,
        timer_c: float,
        now: float,
        proceeding: bool = False,
    ) -> None:
        """``proceeding``: the destination answered this very request provisionally already
        (a setup adopted from a member gone, ``siplb.cluster.setups``): nothing is sent, and the
        transaction waits in Proceeding, as its first owner did (17.1.1.2: no retransmissions)."""
        self.branch = branch
        # the request and its bytes while it may be retransmitted or cancelled; once a final
        # response came only the ACK for a non-2xx (Completed) is kept for its retransmissions
        self.request: Request | None = request
        self.method = request.method
        self.invite = request.method == "INVITE"
        self.target = target
        self.listener = listener
        self.user = user
        self.timer_c = timer_c
        self.sent_at = now
        self.deadline: float | None = None
        self.state = TxState.CALLING if self.invite else TxState.TRYING
        self._heap = heap
        self._out = out
        self._timers = timers
        self.data: bytes | None = request.to_bytes()
        self._ack: bytes | None = None
        self._a_interval = timers.t1
        self._a_at: float | None = None if target.reliable else now + timers.t1  # Timer A / E
        self._timeout_at: float | None = now + min(timers.b, failover_timeout)  # B / F
        self._wait_at: float | None = None  # Timer D, K or M
        self._c_fired = False
        self._owner = owner
        if proceeding:
            self.state = TxState.PROCEEDING
            self._a_at = None
            self._timeout_at = now + timer_c if self.invite else now + timers.b
        else:
            out.append(Send(request.to_bytes(), target, listener))
        self._rearm()

    @property
    def key(self) -> tuple[str, str]:
        return (self.branch, self.method)

    @property
    def active(self) -> bool:
        """Still waiting for a final response."""
        return self.state in (TxState.CALLING, TxState.TRYING, TxState.PROCEEDING)

    @property
    def provisional_received(self) -> bool:
        return self.state is TxState.PROCEEDING

    def receive_response(self, response: Response, now: float) -> None:
        status = response.status
        state = self.state
        user = self.user  # a final response may terminate us (reliable transport) before it goes up
        if state in (TxState.CALLING, TxState.TRYING, TxState.PROCEEDING):
            if status < 200:
                self._provisional(now)
            elif self.invite and status < 300:
                self.state = TxState.ACCEPTED
                self._a_at = self._timeout_at = None  # no more Timer A, B or C
                self._release()
                self._wait(now + self._timers.b)  # RFC 6026 Timer M
            else:
                self._final(response, now)
            user.on_response(self, response, now)
        elif state is TxState.ACCEPTED and 200 <= status < 300:
            user.on_response(self, response, now)  # 2xx retransmission: pass it on
        elif state is TxState.COMPLETED and self._ack is not None and status >= 300:
            self._out.append(Send(self._ack, *self._dest()))  # the same ACK again (17.1.1.2)

    def _provisional(self, now: float) -> None:
        self.state = TxState.PROCEEDING
        if self.invite:
            self._a_at = None
            if not self._c_fired:
                self._timeout_at = now + self.timer_c  # Timer C (16.6 step 11)
        else:
            self._timeout_at = self.sent_at + self._timers.b  # Timer F from the first send
            if self._a_at is not None:
                self._a_interval = self._timers.t2
        self._rearm()

    def _final(self, response: Response, now: float) -> None:
        self.state = TxState.COMPLETED
        self._a_at = None
        self._timeout_at = None
        if self.invite and self.request is not None:
            self._ack = make_ack(self.request, response).to_bytes()
            self._out.append(Send(self._ack, *self._dest()))
        self._release()
        if self.target.reliable:
            self._terminate()
        else:
            self._wait(now + (self._timers.d if self.invite else self._timers.t4))

    def fail(self, cause: str, now: float) -> None:
        """A transport error on the way to the target: the request is lost (counts as timeout)."""
        if self.active:
            user = self.user
            self._terminate()
            user.on_failure(self, cause, now)

    def cancel_sent(self, now: float) -> None:
        """A CANCEL went out for this INVITE: wait at most 64*T1 more for its final response,
        then consider the branch cancelled (RFC 3261 9.1), instead of waiting out Timer C."""
        if not self.active:
            return
        self._c_fired = True
        limit = now + self._timers.b
        if self._timeout_at is None or self._timeout_at > limit:
            self._timeout_at = limit
        self._rearm()

    def abandon(self) -> None:
        """Stop retransmitting and forget (the TU has moved on)."""
        self._terminate()

    def on_timer(self, now: float) -> None:
        if self._a_at is not None and self._a_at <= now and self.active and self.data:
            self._out.append(Send(self.data, *self._dest()))
            cap = self._timers.t2 if not self.invite else float("inf")
            self._a_interval = min(2 * self._a_interval, cap)
            self._a_at = now + self._a_interval
        if self._timeout_at is not None and self._timeout_at <= now and self.active:
            # Timer C (16.6 step 11) only guards an INVITE that got a provisional; a non-INVITE
            # in Proceeding timing out is Timer F (17.1.2.2)
            if self.invite and self.state is TxState.PROCEEDING and not self._c_fired:
                # 16.8: the TU cancels the branch; stay to ACK its 487, at most 64*T1 more (9.1)
                self._c_fired = True
                self._timeout_at = now + self._timers.b
                self._rearm()
                self.user.on_failure(self, "timer C", now)
                return
            user = self.user
            self._terminate()
            user.on_failure(self, "timeout", now)
            return
        if self._wait_at is not None and self._wait_at <= now:
            self._terminate()
            return
        self._rearm()

    def _dest(self) -> tuple[Target, int]:
        return (self.target, self.listener)

    def _wait(self, when: float) -> None:
        self._wait_at = when
        self._rearm()

    def _rearm(self) -> None:
        when = self._a_at
        for t in (self._timeout_at, self._wait_at):
            if t is not None and (when is None or t < when):
                when = t
        _rearm(self, self._heap, when)

    def _release(self) -> None:
        """No more (re)sending of the request: let it go."""
        self.request = None
        self.data = None

    def _terminate(self) -> None:
        self.state = TxState.TERMINATED
        self._a_at = self._timeout_at = self._wait_at = None
        self._release()
        self._ack = None
        self.user = NO_USER  # the TU and this transaction point at each other: let both go
        self._heap.schedule(self, None)
        self._owner.client_terminated(self)


def _rearm(txn: ServerTransaction | ClientTransaction, heap: TimerHeap, when: float | None) -> None:
    """Schedule ``txn``'s next timer; a later one than already scheduled waits for that earlier
    wake-up (``on_timer`` finds nothing due and re-arms), so that no entry far in the future (a
    Timer C three minutes out) keeps a finished transaction in the heap."""
    if when is not None and txn.deadline is not None and txn.deadline <= when:
        return
    heap.schedule(txn, when)
