"""The response context of one forwarded request (RFC 3261 16.7): attempts, failover, answer.

A request dispatched to a destination set is tried on one destination at a time; a timeout, a
transport error, a failover code or 430 (RFC 5626) moves it to the next destination inside the
same server transaction, up to ``max_attempts``. A request routed by Route/Request-URI
(in-dialog) has one fixed target. The best final response goes upstream (16.7 step 6), 2xx
always at once; when no destination answered at all, ``no_answer_status`` (408: a timed-out
client transaction counts as 408), never a 503 with Retry-After, which is kept for overload and
for destinations that are full or down.
"""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache
from typing import Protocol

from siplb.cluster.setups import Setup
from siplb.dispatch import Destination, NoDestination, NoDestinationReason
from siplb.sip import Edit, Request, Response

from .actions import FailedOver, Target
from .build import make_cancel, make_response
from .context import Context
from .registrar import FrontEnd
from .transaction import NO_USER, ClientTransaction, ServerTransaction

# RFC 5626 5.3: the flow to a phone failed. Answered when a request along our Path cannot reach
# its phone; from a destination it fails over like a failover code: the destination's flow to the
# phone failed, and another destination of the set may hold another flow of the same phone.
FLOW_FAILED = 430

# Methods whose requests create dialogs and so get Record-Route (RFC 3261 12.1, RFC 6665, 3515).
DIALOG_CREATING = frozenset({"INVITE", "SUBSCRIBE", "REFER", "NOTIFY"})


class CallWatch(Protocol):
    """What a response context tells the core about the traffic it sees: passive health
    inputs, and a new call's first 2xx (for ``bye_unconfirmed``)."""

    def passive_success(self, uri: str, now: float) -> None: ...

    def passive_failure(
        self,
        uri: str,
        cause: str,
        now: float,
        *,
        timeout: bool = False,
        method: str = "INVITE",
        source: str | None = None,
    ) -> None: ...

    def answered(
        self,
        server: ServerTransaction,
        invite: Request,
        client: ClientTransaction,
        answer: Response,
    ) -> None: ...


class Forwarding:
    __slots__ = (
        "attempts",
        "base",
        "best",
        "call_key",
        "cancelled",
        "context",
        "current",
        "done",
        "first",
        "front",
        "hash_input",
        "incoming",
        "method",
        "resume",
        "server",
        "set_name",
        "target",
        "target_listener",
        "told",
        "tried",
        "uri",
        "watch",
    )

    def __init__(
        self,
        context: Context,
        watch: CallWatch,
        front: FrontEnd | None,
        server: ServerTransaction,
        base: Edit[Request],
        *,
        incoming: int,
        set_name: str | None = None,
        hash_input: bytes = b"",
        target: Target | None = None,
        target_listener: int | None = None,
        first: Destination | None = None,
        resume: tuple[str, int, bool] | None = None,
    ) -> None:
        self.context = context
        self.watch = watch
        self.front = front
        self.server = server
        # the request with Max-Forwards, Route and top Via processed (each attempt adds its
        # Record-Route and Via and makes one copy); let go once the request is answered
        self.base: Edit[Request] | None = base
        request = base.message  # the request as received: method, To tag and Call-ID as sent
        self.method = request.method
        self.incoming = incoming
        self.set_name = set_name
        self.hash_input = hash_input
        self.target = target
        self.target_listener = target_listener
        self.first = first  # the destination chosen before the transaction was made
        # an adopted setup (``Proxy.adopt``): the branch and number of the attempt to continue,
        # and whether its destination answered it provisionally already
        self.resume = resume
        self.told: Setup | None = None  # the attempt as told to the other nodes (anycast)
        self.tried: frozenset[str] = frozenset()
        self.attempts = 0
        self.current: ClientTransaction | None = None
        self.best: Response | None = None
        self.cancelled = False
        self.done = False
        self.uri: str | None = None  # the destination now tried
        self.call_key: bytes | None = None
        if request.method == "INVITE" and set_name is not None and request.to_tag is None:
            self.call_key = request.call_id
        server.context = self

    # ---- attempts ----------------------------------------------------------------------------
    def start(self, now: float) -> None:
        self._attempt(now)

    def _attempt(self, now: float) -> None:
        context = self.context
        if self.set_name is not None:
            choice = self.first or context.dispatcher.choose(
                self.set_name, self.hash_input, self.tried
            )
            self.first = None
            if isinstance(choice, NoDestination):
                self._give_up(choice.reason, now)
                return
            target = _target_of(choice)
            self.uri = choice.uri
            self.tried = self.tried | {choice.uri}
            listener = context.listener_for(target, self.incoming)
        else:
            if self.target is None or self.attempts:
                self._give_up("no target", now)
                return
            target = self.target
            prefer = self.target_listener
            listener = context.listener_for(target, self.incoming if prefer is None else prefer)
        base = self.base
        if base is None:  # pragma: no cover - answered already, nothing more to try
            return
        self.attempts += 1
        method = self.method
        edit = base.copy()  # 16.6 steps 4 and 8 with the others, in one copy of the request
        if (
            context.settings.record_route
            and method in DIALOG_CREATING
            and base.message.to_tag is None
        ):
            context.add_record_route(edit, self.incoming, listener)
        if method == "REGISTER" and self.set_name is not None and self.front is not None:
            self.front.outgoing(self.server, edit, self.incoming, listener)
        resume = self.resume
        proceeding = False
        if resume is None:
            branch = context.branches.new()
        else:  # the same branch: the destination sees a retransmission, not a second call
            self.resume = None
            branch, self.attempts, proceeding = resume
        edit.add_top_value(b"Via", context.via(listener, branch))
        self.current = context.new_client(
            branch,
            edit.apply(),
            target,
            listener,
            self,
            now,
            patient=resume is not None,
            proceeding=proceeding,
        )
        call_key, uri = self.call_key, self.uri
        if call_key is not None and uri is not None:
            accounting = context.dispatcher.accounting
            if self.attempts == 1 or resume is not None:
                accounting.setup_started(call_key, uri, now)
            else:
                accounting.moved(call_key, uri, now)
            if context.setups is not None and base is not None and self.set_name is not None:
                server = self.server
                self.told = Setup(
                    call_key,
                    context.branches.member,
                    base.message.to_bytes(),
                    (server.source.host, server.source.port),
                    self.incoming,
                    self.set_name,
                    uri,
                    branch,
                    self.attempts,
                    proceeding,
                )
                context.setup_attempt(self.told, now)

    def _can_fail_over(self) -> bool:
        return (
            self.set_name is not None
            and not self.cancelled
            and self.attempts < self.context.settings.max_attempts
        )

    # ---- what the client transaction reports ----------------------------------------------
    def on_response(self, txn: ClientTransaction, response: Response, now: float) -> None:
        front = self.front
        if (
            front is not None
            and response.status >= 200
            and self.method == "REGISTER"
            and txn is self.current
            and not self.done
        ):  # the registrar's final answer (RFC 3327 5.3): bindings, Path support
            response = front.final(self.server, response, self.uri, now)
        status = response.status
        if status < 200:
            told = self.told
            if told is not None and not told.proceeding and txn is self.current and not self.done:
                self.told = told = replace(told, proceeding=True)  # the others adopt it as is
                self.context.setup_attempt(told, now)
            if self.cancelled and txn is self.current:
                self._send_cancel(txn, now)
            if status > 100 and not self.done:
                self.context.forward_response(self.server, response, now, txn.target)
            return
        if status < 300:
            base = self.base
            self._done()
            if self.uri is not None:
                self.watch.passive_success(self.uri, now)
            if self.call_key is not None:
                self.context.dispatcher.accounting.confirmed(self.call_key, now)
                if base is not None:  # the first 2xx: until its ACK, what ending it takes
                    self.watch.answered(self.server, base.message, txn, response)
            self.context.forward_response(self.server, response, now, txn.target)
            return
        if txn is not self.current or self.done:
            return
        if status == 503 and self.uri is not None:
            self.watch.passive_failure(
                self.uri,
                f"503 on {self.method}",
                now,
                method=self.method,
                source=self.server.source.host,
            )
        self.best = _better(self.best, response)
        failover = status in self.context.settings.failover_codes or status == FLOW_FAILED
        if failover and self._can_fail_over():
            self._fail_over(f"{status} {response.reason.decode('latin-1')}", now)
            return
        self._finish(now)

    def on_failure(self, txn: ClientTransaction, cause: str, now: float) -> None:
        if txn is not self.current or self.done:
            return
        if cause == "timer C":
            self._send_cancel(txn, now)  # 16.8: CANCEL the branch, treat as 408
            self.best = _better(self.best, None)
            self._respond_local(408, now)
            return
        if self.uri is not None:
            self.watch.passive_failure(
                self.uri,
                f"{cause} on {self.method}",
                now,
                timeout=cause == "timeout",
                method=self.method,
                source=self.server.source.host,
            )
        if self.cancelled:
            self._respond_local(487, now)
        elif self._can_fail_over():
            self._fail_over(cause, now)
        elif self.best is not None:
            self._finish(now)
        elif self.set_name is not None:  # no destination answered at all
            self._no_answer(cause, now)
        elif txn.target.flow:  # RFC 5626 5.3: the registrar's side may try another flow
            self._respond_local(FLOW_FAILED, now, reason=f"the phone's flow failed ({cause})")
        else:
            self._respond_local(408, now)

    def _fail_over(self, cause: str, now: float) -> None:
        if self.set_name is not None and self.uri is not None:
            base = self.base
            request = base.message if base is not None else None
            call_id = ((request.call_id if request is not None else None) or b"").decode("latin-1")
            self.context.emit(FailedOver(call_id, self.set_name, self.uri, cause))
            self.context.stats["failovers"] += 1
        self._attempt(now)

    def _give_up(self, reason: str, now: float) -> None:
        """No (further) destination: the best response so far; else, when destinations were
        tried and none answered, ``no_answer_status``; else 503 (16.7 step 6)."""
        if self.best is not None:
            self._finish(now)
            return
        if self.attempts and reason != NoDestinationReason.ALL_FULL:
            self._no_answer(reason, now)
            return
        extra = None
        if reason in ("all-full", "all-down", "all-tried"):
            extra = self.context.retry_after()
        self._respond_local(503, now, extra=extra, reason=reason)

    def _no_answer(self, cause: str, now: float) -> None:
        """Every destination tried was silent or unreachable: 408 by default (16.7 step 6, a
        client transaction that timed out counts as 408), never 503 with Retry-After, which
        tells the upstream element that siplb itself is overloaded (21.5.4) and stops every
        call it sends for that long. Overload and full destinations keep their 503."""
        self._respond_local(self.context.settings.no_answer_status, now, reason=cause)

    # ---- answering upstream --------------------------------------------------------------------
    def _finish(self, now: float) -> None:
        best = self.best
        self._done()
        if best is None:  # pragma: no cover - callers check
            self._respond_local(503, now)
            return
        if best.status == 503:  # 16.7 step 6: a proxy never forwards a 503
            best = Response.build(500, b"Server Internal Error", best.headers, best.body)
        self._end_call()
        self.context.forward_response(self.server, best, now)

    def _respond_local(
        self,
        status: int,
        now: float,
        *,
        extra: list[tuple[bytes, bytes]] | None = None,
        reason: str | None = None,
    ) -> None:
        self._done()
        self._end_call()
        self.context.respond(self.server, status, now, extra=extra, cause=reason)

    def _done(self) -> None:
        """The request is answered: what it took to try destinations is no longer needed (a
        2xx retransmission still finds its way up through ``server``)."""
        self.done = True
        if self.call_key is not None:
            self.context.setup_done(self.call_key)
        self.base = None
        self.best = None
        self.tried = _NOTHING_TRIED

    def _end_call(self) -> None:
        if self.call_key is not None:
            self.context.dispatcher.accounting.ended(self.call_key)

    # ---- CANCEL (16.10) ------------------------------------------------------------------------
    def cancel(self, now: float) -> None:
        if self.cancelled or self.done:
            return
        self.cancelled = True
        txn = self.current
        if txn is not None and txn.provisional_received:
            self._send_cancel(txn, now)
        # else: sent when a provisional response arrives (RFC 3261 9.1), or the attempt times
        # out and we answer 487 ourselves.

    def _send_cancel(self, txn: ClientTransaction, now: float) -> None:
        if (txn.branch, "CANCEL") in self.context.clients or txn.request is None:
            return
        cancel = make_cancel(txn.request)
        self.context.new_client(txn.branch, cancel, txn.target, txn.listener, NO_USER, now)
        txn.cancel_sent(now)


_NOTHING_TRIED: frozenset[str] = frozenset()


def _target_of(destination: Destination) -> Target:
    spec = destination.spec
    return _target(spec.transport, spec.host, spec.port)


@lru_cache(maxsize=1024)
def _target(transport: str, host: str, port: int) -> Target:
    """One ``Target`` per destination address, shared by every transaction sent there."""
    return Target(transport, host, port)


def _rank(response: Response) -> tuple[int, int]:
    """Lower is better (16.7 step 6): 6xx first, then the lowest class; 503 last in its class."""
    status = response.status
    klass = status // 100
    order = 0 if klass == 6 else klass
    return (order, 1 if status in (503, 408) else 0)


def _better(best: Response | None, candidate: Response | None) -> Response | None:
    if candidate is None:
        return best
    if best is None or _rank(candidate) < _rank(best):
        return candidate
    return best


__all__ = ["DIALOG_CREATING", "Forwarding", "make_response"]
