"""A fake clock and an in-memory network that play a caller and destinations against the core.

STYLE.md, Tests: "a FakeClock and an in-memory network let a test play a caller, the proxy core
and two destinations against each other, advancing time explicitly".

    lab = make_lab(2)                       # a proxy, a UAC and two scripted UAS
    call = lab.uac.call()
    call.invite()
    lab.net.run(1.0)                        # deliver, answer, run timers up to t = 1.0
    assert call.statuses == [100, 180, 200]

Everything the proxy sends is delivered at once to the endpoint whose address it names (or kept
in ``net.lost``); an endpoint's messages reach the proxy after the endpoint's ``latency``. The
clock only moves inside ``Network.run``, from one due event (a delivery or the proxy's next
timer) to the next, so a test sees every Timer A, B, E, F ... fire at its exact time.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from siplb.dispatch import Algorithm, DestinationSpec, HashKey, HealthSettings, SetSpec
from siplb.proxy.actions import Send, Target
from siplb.proxy.core import Proxy
from siplb.proxy.listeners import Listener
from siplb.settings import LimitsSettings, ProtectionSettings, ProxySettings, RouteRule
from siplb.sip import Request, Response, SipUri, parse, parse_name_addr

PROXY_HOST = "127.0.0.1"
PROXY_PORT = 5060
UAC_TARGET = Target("udp", "127.0.0.1", 5061)
FIRST_UAS_PORT = 5070
MAX_STEPS = 100_000

Message = Request | Response
Step = int | tuple[int, float]  # a status sent at once, or (status, delay after the request)


class FakeClock:
    """The only time there is: moved by ``Network.run``, read by everyone."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now


@dataclass(frozen=True, slots=True)
class Wire:
    """One message as it crossed the network."""

    at: float
    data: bytes
    source: str  # "proxy" or an endpoint's name
    target: Target
    listener: int

    @property
    def message(self) -> Message:
        return parse(self.data)


class Network:
    """Delivers ``proxy.out`` to endpoints and endpoints' messages to the proxy, in time order."""

    def __init__(self, proxy: Proxy, clock: FakeClock) -> None:
        self.proxy = proxy
        self.clock = clock
        self.endpoints: dict[Target, Endpoint] = {}
        self.wire: list[Wire] = []  # everything, both directions
        self.lost: list[Send] = []  # sends to an address nobody has
        self.unreachable: set[Target] = set()  # sends there become transport errors
        self.to_itself = 0  # what the proxy sent to its own listeners (it gets them back)
        # run after each drain of ``proxy.out``, like the shell's flush (e.g. the media asks)
        self.after_drain: list[Callable[[], None]] = []
        self._queue: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()

    def add(self, endpoint: Endpoint) -> None:
        endpoint.net = self
        self.endpoints[endpoint.target] = endpoint

    # ---- scheduling ---------------------------------------------------------------------------
    def at(self, when: float, action: Callable[[], None]) -> None:
        heapq.heappush(self._queue, (when, next(self._seq), action))

    def to_proxy(self, endpoint: Endpoint, data: bytes, listener: int, delay: float = 0.0) -> None:
        """``endpoint`` sends ``data`` to the proxy's listener ``listener``."""
        arrival = self.clock.now + delay

        def deliver() -> None:
            self.wire.append(
                Wire(self.clock.now, data, endpoint.name, self._listener_target(listener), listener)
            )
            self.proxy.receive(data, endpoint.target, listener, self.clock.now)

        self.at(arrival, deliver)

    def listener_index(self, target: Target) -> int:
        """The proxy listener bound to ``target`` (where an endpoint addresses the proxy)."""
        index = self.own_listener(target)
        if index is None:
            raise LookupError(f"no proxy listener at {target}")
        return index

    def own_listener(self, target: Target) -> int | None:
        """The proxy listener that receives what is sent to ``target`` (a wildcard one gets
        what is sent to a loopback address at its port), or None."""
        for listener in self.proxy.listeners:
            if (listener.transport, listener.port) != (target.transport, target.port):
                continue
            if listener.host == target.host or (
                listener.host in ("0.0.0.0", "::") and target.host.startswith("127.")
            ):
                return listener.index
        return None

    def _listener_target(self, index: int) -> Target:
        listener = self.proxy.listeners[index]
        return Target(listener.transport, listener.host, listener.port)

    # ---- running --------------------------------------------------------------------------------
    def run(self, until: float) -> None:
        """Process every delivery and proxy timer due up to ``until``; the clock ends there."""
        self._drain()
        for _ in range(MAX_STEPS):
            timer = self.proxy.get_timer()
            queued = self._queue[0][0] if self._queue else None
            due = [t for t in (timer, queued) if t is not None and t <= until]
            if not due:
                break
            self.clock.now = max(self.clock.now, min(due))
            if queued is not None and (timer is None or queued <= timer):
                _, _, action = heapq.heappop(self._queue)
                action()
            else:
                self.proxy.handle_timer(self.clock.now)
            self._drain()
        else:  # pragma: no cover - a loop in the core or a script
            raise RuntimeError(f"more than {MAX_STEPS} steps before t={until}")
        self.clock.now = max(self.clock.now, until)

    def advance(self, seconds: float) -> None:
        self.run(self.clock.now + seconds)

    def settle(self) -> None:
        """Everything due now (messages at zero latency and what they cause)."""
        self.run(self.clock.now)

    def _drain(self) -> None:
        out = self.proxy.out
        while out:
            sends = list(out)
            out.clear()
            for send in sends:
                self._deliver(send)
        for hook in self.after_drain:
            hook()

    def _deliver(self, send: Send) -> None:
        now = self.clock.now
        self.wire.append(Wire(now, send.data, "proxy", send.target, send.listener))
        if send.target in self.unreachable:
            self.at(now, lambda: self.proxy.transport_error(send.target, self.clock.now))
            return
        endpoint = self.endpoints.get(send.target)
        if endpoint is None:
            own = self.own_listener(send.target)
            if own is None:
                self.lost.append(send)
                return
            self.to_itself += 1  # a loop through the proxy itself: it receives its own send
            source = self._listener_target(send.listener)
            self.at(now, lambda: self.proxy.receive(send.data, source, own, self.clock.now))
            return
        message = parse(send.data)
        endpoint.inbox.append(Received(now, message, send))
        endpoint.receive(message, send)

    # ---- reading the wire -----------------------------------------------------------------------
    def sent_by_proxy(self, to: Target | None = None) -> list[Wire]:
        return [w for w in self.wire if w.source == "proxy" and (to is None or w.target == to)]


@dataclass(frozen=True, slots=True)
class Received:
    at: float
    message: Message
    send: Send


class Endpoint:
    """A SIP element at one address; records every message the proxy sent it."""

    def __init__(self, name: str, target: Target, *, latency: float = 0.0) -> None:
        self.name = name
        self.target = target
        self.latency = latency
        self.inbox: list[Received] = []
        self.net: Network | None = None
        self._ids = itertools.count(1)

    @property
    def network(self) -> Network:
        assert self.net is not None, "add the endpoint to a Network first"
        return self.net

    def receive(self, message: Message, send: Send) -> None:
        raise NotImplementedError

    def send(self, data: bytes, to: Target | None = None, listener: int | None = None) -> None:
        """Send a message to the proxy (at ``to``, or on listener ``listener``, default 0)."""
        net = self.network
        index = net.listener_index(to) if to is not None else (listener or 0)
        net.to_proxy(self, data, index, self.latency)

    def reply(self, data: bytes, send: Send) -> None:
        """Answer a message back to the proxy listener it came from."""
        self.network.to_proxy(self, data, send.listener, self.latency)

    def requests(self, method: str | None = None) -> list[Request]:
        return [
            r.message
            for r in self.inbox
            if isinstance(r.message, Request) and method in (None, r.message.method)
        ]

    def responses(self, method: str | None = None) -> list[Response]:
        return [
            r.message
            for r in self.inbox
            if isinstance(r.message, Response) and method in (None, r.message.cseq.method)
        ]

    def arrivals(self, method: str) -> list[float]:
        """When each ``method`` request arrived here."""
        return [
            r.at
            for r in self.inbox
            if isinstance(r.message, Request) and r.message.method == method
        ]

    def finals(self, method: str | None = None) -> list[tuple[float, int]]:
        """(time, status) of every final response that arrived here."""
        return [
            (r.at, r.message.status)
            for r in self.inbox
            if isinstance(r.message, Response)
            and r.message.status >= 200
            and method in (None, r.message.cseq.method)
        ]

    @property
    def transport(self) -> bytes:
        """The transport as a Via names it (``UDP``, ``TCP``)."""
        return self.target.transport.upper().encode()

    def new_branch(self) -> bytes:
        return b"z9hG4bK%s%d" % (self.name.encode(), next(self._ids))

    def new_tag(self) -> bytes:
        return b"%s-%d" % (self.name.encode(), next(self._ids))

    @property
    def host_port(self) -> bytes:
        return f"{self.target.host}:{self.target.port}".encode()


# ---- building messages ---------------------------------------------------------------------------


def build_request(
    method: str, uri: bytes, headers: Iterable[tuple[bytes, bytes]], body: bytes = b""
) -> bytes:
    lines = [b"%s %s SIP/2.0" % (method.encode(), uri)]
    lines.extend(name + b": " + value for name, value in headers)
    lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def build_response(
    request: Request,
    status: int,
    reason: bytes,
    *,
    to_tag: bytes | None,
    extra: Iterable[tuple[bytes, bytes]] = (),
) -> bytes:
    """A UAS's response (RFC 3261 8.2.6): every Via line, Record-Route, From, To, Call-ID, CSeq."""
    lines = [b"SIP/2.0 %d %s" % (status, reason)]
    lines.extend(b"Via: " + v for v in request.get_all(b"via"))
    if 100 < status < 300:
        lines.extend(b"Record-Route: " + v for v in request.get_all(b"record-route"))
    lines.append(b"From: " + (request.get(b"from") or b""))
    to = request.get(b"to") or b""
    if to_tag is not None and status > 100 and b";tag=" not in to:
        to += b";tag=" + to_tag
    lines.append(b"To: " + to)
    lines.append(b"Call-ID: " + (request.call_id or b""))
    lines.append(b"CSeq: " + (request.get(b"cseq") or b""))
    lines.extend(name + b": " + value for name, value in extra)
    lines.append(b"Content-Length: 0")
    return b"\r\n".join(lines) + b"\r\n\r\n"


REASONS = {
    100: b"Trying",
    180: b"Ringing",
    183: b"Session Progress",
    200: b"OK",
    404: b"Not Found",
    408: b"Request Timeout",
    481: b"Call/Transaction Does Not Exist",
    486: b"Busy Here",
    487: b"Request Terminated",
    500: b"Server Internal Error",
    503: b"Service Unavailable",
    603: b"Decline",
}


def uri_target(uri: bytes) -> Target:
    """Where a SIP URI (a Contact or a Route entry) points."""
    parsed = parse_name_addr(uri).parsed_uri()
    assert isinstance(parsed, SipUri)
    transport = parsed.transport
    return Target(transport, parsed.host, parsed.port or 5060)


# ---- the caller --------------------------------------------------------------------------------


class Call:
    """One INVITE dialog as a UAC sees it (RFC 3261 12.1.2, 13.2)."""

    def __init__(
        self,
        uac: UAC,
        *,
        ruri: bytes,
        call_id: bytes,
        headers: Sequence[tuple[bytes, bytes]],
        body: bytes,
        to: Target,
        from_uri: bytes = b"sip:alice@example.com",
        to_uri: bytes = b"sip:bob@example.com",
    ) -> None:
        self.uac = uac
        self.ruri = ruri
        self.call_id = call_id
        self.from_tag = uac.new_tag()
        self.branch = uac.new_branch()
        self.proxy = to
        self.via = b"SIP/2.0/%s %s;branch=%s;rport" % (uac.transport, uac.sent_by, self.branch)
        self.from_ = b'"Alice" <' + from_uri + b">;tag=" + self.from_tag
        self.to = b"<" + to_uri + b">"
        self.cseq = 1
        self.data = build_request(
            "INVITE",
            ruri,
            [
                (b"Via", self.via),
                (b"Max-Forwards", b"70"),
                (b"From", self.from_),
                (b"To", self.to),
                (b"Call-ID", call_id),
                (b"CSeq", b"1 INVITE"),
                (b"Contact", b"<sip:alice@%s>" % uac.host_port),
                *headers,
            ],
            body,
        )
        self.remote_tag: bytes | None = None
        self.route_set: list[bytes] = []
        self.remote_target: bytes | None = None

    # what the caller sends
    def invite(self) -> None:
        """Send the INVITE (again: a retransmission, byte for byte)."""
        self.uac.send(self.data, self.proxy)

    def cancel(self) -> None:
        self.uac.send(
            build_request(
                "CANCEL",
                self.ruri,
                [
                    (b"Via", self.via),
                    (b"Max-Forwards", b"70"),
                    (b"From", self.from_),
                    (b"To", self.to),
                    (b"Call-ID", self.call_id),
                    (b"CSeq", b"1 CANCEL"),
                ],
            ),
            self.proxy,
        )

    def ack(self) -> None:
        """The ACK for a 2xx: a new transaction, routed by the route set (RFC 3261 13.2.2.4)."""
        self.uac.send(self.in_dialog("ACK", cseq=1), self.proxy)

    def bye(self) -> None:
        self.cseq += 1
        self.uac.send(self.in_dialog("BYE", cseq=self.cseq), self.proxy)

    def in_dialog(self, method: str, *, cseq: int) -> bytes:
        assert self.remote_target is not None, "no dialog yet"
        assert self.remote_tag is not None, "no dialog yet"
        headers = [
            (
                b"Via",
                b"SIP/2.0/%s %s;branch=%s"
                % (self.uac.transport, self.uac.sent_by, self.uac.new_branch()),
            )
        ]
        headers.extend((b"Route", route) for route in self.route_set)
        headers += [
            (b"Max-Forwards", b"70"),
            (b"From", self.from_),
            (b"To", self.to + b";tag=" + self.remote_tag),
            (b"Call-ID", self.call_id),
            (b"CSeq", b"%d %s" % (cseq, method.encode())),
        ]
        return build_request(method, self.remote_target, headers)

    # what the caller got
    @property
    def responses(self) -> list[Response]:
        return [r for r in self.uac.responses("INVITE") if r.call_id == self.call_id]

    @property
    def statuses(self) -> list[int]:
        return [r.status for r in self.responses]

    def responses_to(self, method: str) -> list[Response]:
        return [r for r in self.uac.responses(method) if r.call_id == self.call_id]

    def on_response(self, response: Response, send: Send) -> None:
        if response.cseq.method != "INVITE":
            return
        status = response.status
        if 200 <= status < 300 and self.remote_tag is None:
            self.remote_tag = response.to_tag
            # RFC 3261 12.1.2: the route set is the Record-Route list in reverse order
            self.route_set = list(reversed(response.values(b"record-route")))
            contact = response.get(b"contact")
            self.remote_target = parse_name_addr(contact).uri if contact else self.ruri
        elif (
            status >= 300 and self.uac.auto_ack
        ):  # 17.1.1.3: ACK the non-2xx final response, same branch
            self.uac.reply(
                build_request(
                    "ACK",
                    self.ruri,
                    [
                        (b"Via", self.via),
                        (b"Max-Forwards", b"70"),
                        (b"From", self.from_),
                        (b"To", response.get(b"to") or b""),
                        (b"Call-ID", self.call_id),
                        (b"CSeq", b"1 ACK"),
                    ],
                ),
                send,
            )


class UAC(Endpoint):
    """The caller: places calls through the proxy, ACKs non-2xx finals, answers BYE with 200."""

    def __init__(
        self,
        name: str = "uac",
        target: Target = UAC_TARGET,
        *,
        sent_by: bytes | None = None,
        auto_ack: bool = True,
    ) -> None:
        super().__init__(name, target)
        self.sent_by = sent_by or self.host_port
        self.auto_ack = auto_ack  # ACK non-2xx final responses (17.1.1.3)
        self.calls: dict[bytes, Call] = {}

    def call(
        self,
        ruri: bytes = b"sip:bob@127.0.0.1:5060",
        *,
        call_id: bytes | None = None,
        headers: Sequence[tuple[bytes, bytes]] = (),
        body: bytes = b"",
        to: Target | None = None,
        from_uri: bytes = b"sip:alice@example.com",
        to_uri: bytes = b"sip:bob@example.com",
    ) -> Call:
        call_id = call_id or b"call-%d@example.com" % next(self._ids)
        proxy = to or Target(self.target.transport, PROXY_HOST, PROXY_PORT)
        call = Call(
            self,
            ruri=ruri,
            call_id=call_id,
            headers=headers,
            body=body,
            to=proxy,
            from_uri=from_uri,
            to_uri=to_uri,
        )
        self.calls[call_id] = call
        return call

    def request(self, method: str, ruri: bytes, *extra: tuple[bytes, bytes]) -> bytes:
        """A one-off out-of-dialog request (OPTIONS, MESSAGE, REGISTER ...)."""
        n = next(self._ids)
        return build_request(
            method,
            ruri,
            [
                (
                    b"Via",
                    b"SIP/2.0/%s %s;branch=%s;rport"
                    % (self.transport, self.sent_by, self.new_branch()),
                ),
                (b"Max-Forwards", b"70"),
                (b"From", b"<sip:alice@example.com>;tag=" + self.new_tag()),
                (b"To", b"<sip:bob@example.com>"),
                (b"Call-ID", b"req-%d@example.com" % n),
                (b"CSeq", b"%d %s" % (n, method.encode())),
                *extra,
            ],
        )

    def receive(self, message: Message, send: Send) -> None:
        if isinstance(message, Response):
            call = self.calls.get(message.call_id or b"")
            if call is not None:
                call.on_response(message, send)
        elif message.method != "ACK":
            tag = None if message.to_tag else self.new_tag()
            self.reply(build_response(message, 200, b"OK", to_tag=tag), send)


# ---- the destinations ----------------------------------------------------------------------------


@dataclass
class _Incoming:
    """A server transaction as the scripted UAS keeps it."""

    request: Request
    send: Send
    last: bytes | None = None
    final: int = 0
    to_tag: bytes = b""
    acked: bool = False


@dataclass
class _Dialog:
    call_id: bytes
    local: bytes  # our To, with our tag, becomes From
    remote: bytes  # their From
    route_set: list[bytes]
    remote_target: bytes
    cseq: int = 0


@dataclass
class Script:
    """How a UAS answers: ``None`` is silence; a step is a status or (status, delay)."""

    invite: Sequence[Step] = (180, 200)
    options: int | None = 200
    other: int | None = 200  # BYE, MESSAGE, REGISTER ...
    cancel: bool = True  # answer CANCEL 200 and the INVITE 487
    extra: dict[int, list[tuple[bytes, bytes]]] = field(default_factory=dict)


class UAS(Endpoint):
    """A destination: answers by its ``Script``, repeats its last response to a retransmission."""

    def __init__(
        self, name: str, target: Target, script: Script | None = None, *, latency: float = 0.0
    ) -> None:
        super().__init__(name, target, latency=latency)
        self.script = script or Script()
        self.transactions: dict[tuple[bytes, str], _Incoming] = {}
        self.dialogs: dict[bytes, _Dialog] = {}

    @property
    def contact(self) -> bytes:
        param = (
            b""
            if self.target.transport == "udp"
            else b";transport=" + self.target.transport.encode()
        )
        return b"<sip:%s@%s%s>" % (self.name.encode(), self.host_port, param)

    def receive(self, message: Message, send: Send) -> None:
        if isinstance(message, Response):
            return  # the 200 to our BYE
        branch = message.top_via().branch or ""
        method = message.method
        key = (branch.encode(), "INVITE" if method == "ACK" else method)
        known = self.transactions.get(key)
        if method == "ACK":
            if known is not None:
                known.acked = True
            return
        if known is not None:  # a retransmission: repeat the last response
            if known.last is not None:
                self.reply(known.last, known.send)
            return
        txn = _Incoming(message, send, to_tag=self.new_tag())
        self.transactions[key] = txn
        if method == "INVITE":
            self._play(txn, self.script.invite)
        elif method == "CANCEL":
            self._cancel(txn, branch.encode())
        elif method == "OPTIONS":
            self._play(txn, () if self.script.options is None else (self.script.options,))
        else:
            self._play(txn, () if self.script.other is None else (self.script.other,))

    def _play(self, txn: _Incoming, steps: Sequence[Step]) -> None:
        now = self.network.clock.now
        for step in steps:
            status, delay = (step, 0.0) if isinstance(step, int) else step
            self.network.at(now + delay, functools.partial(self.answer, txn, status))

    def answer(self, txn: _Incoming, status: int) -> None:
        """Send ``status`` on ``txn`` unless a final response went already."""
        if txn.final:
            return
        request = txn.request
        extra = list(self.script.extra.get(status, []))
        if request.method == "INVITE" and 100 < status < 300:
            extra.append((b"Contact", self.contact))
        data = build_response(
            request, status, REASONS.get(status, b"Whatever"), to_tag=txn.to_tag, extra=extra
        )
        txn.last = data
        if status >= 200:
            txn.final = status
        if request.method == "INVITE" and 200 <= status < 300 and request.to_tag is None:
            self._open_dialog(txn)
        self.reply(data, txn.send)

    def _cancel(self, txn: _Incoming, branch: bytes) -> None:
        invite = self.transactions.get((branch, "INVITE"))
        if invite is None:
            self.answer(txn, 481)
            return
        self.answer(txn, 200)
        if self.script.cancel:
            self.answer(invite, 487)

    def _open_dialog(self, txn: _Incoming) -> None:
        request = txn.request
        contact = request.get(b"contact") or b""
        to = (request.get(b"to") or b"") + b";tag=" + txn.to_tag
        self.dialogs[request.call_id or b""] = _Dialog(
            request.call_id or b"",
            local=to,
            remote=request.get(b"from") or b"",
            route_set=request.values(b"record-route"),  # 12.1.1: in order
            remote_target=parse_name_addr(contact).uri,
        )

    def bye(self, call_id: bytes) -> None:
        """Hang up from the callee's side: BYE by the route set, to its first entry."""
        dialog = self.dialogs[call_id]
        dialog.cseq += 1
        via = b"SIP/2.0/%s %s;branch=%s" % (self.transport, self.host_port, self.new_branch())
        headers = [(b"Via", via)]
        headers.extend((b"Route", route) for route in dialog.route_set)
        headers += [
            (b"Max-Forwards", b"70"),
            (b"From", dialog.local),
            (b"To", dialog.remote),
            (b"Call-ID", call_id),
            (b"CSeq", b"%d BYE" % dialog.cseq),
        ]
        self.send(
            build_request("BYE", dialog.remote_target, headers), uri_target(dialog.route_set[0])
        )

    def retransmit_final(self, call_id: bytes) -> None:
        """Send the last response of the INVITE for ``call_id`` again (a 2xx retransmission)."""
        for (_, method), txn in self.transactions.items():
            if method == "INVITE" and txn.request.call_id == call_id and txn.last is not None:
                self.reply(txn.last, txn.send)

    @property
    def invites(self) -> list[Request]:
        return self.requests("INVITE")

    def calls(self) -> set[bytes]:
        """Call-IDs of the initial INVITEs this destination received."""
        return {r.call_id or b"" for r in self.invites if r.to_tag is None}


# ---- a whole scene -------------------------------------------------------------------------------


@dataclass
class Lab:
    clock: FakeClock
    net: Network
    proxy: Proxy
    uac: UAC
    uas: list[UAS]

    def uri(self, i: int) -> str:
        return dest_uri(self.uas[i].target)

    def active(self, i: int) -> int:
        return self.proxy.dispatcher.accounting.active(self.uri(i))

    def state(self, i: int) -> str:
        return str(self.proxy.dispatcher.health.state(self.uri(i)))


def dest_uri(target: Target) -> str:
    param = "" if target.transport == "udp" else f";transport={target.transport}"
    return f"sip:{target.host}:{target.port}{param}"


def make_lab(
    scripts: int | Sequence[Script | None] = 2,
    *,
    settings: ProxySettings | None = None,
    health: HealthSettings | None = None,
    algorithm: Algorithm = Algorithm.ROUND_ROBIN,
    hash_key: HashKey = HashKey.CALL_ID,
    transport: str = "udp",
    listeners: Sequence[Listener] | None = None,
    routes: Sequence[RouteRule] = (),
    probing: bool = False,
    latency: float = 0.0,
    seed: int = 1,
    weights: Sequence[int] | None = None,
    priorities: Sequence[int] | None = None,
    uac: UAC | None = None,
    sets: dict[str, Sequence[int]] | None = None,
    protection: ProtectionSettings | None = None,
    caps: LimitsSettings | None = None,
    max_calls: int | None = None,
    proven: bool | None = None,
) -> Lab:
    """A proxy on 127.0.0.1:5060 (UDP, and TCP on the same port), a UAC and one UAS per script.

    Every destination is in one set, "pbx", unless ``sets`` maps set names (the first is the
    default) to destination indexes. A new destination starts probing (no call until a probe
    answered); ``proven`` (the default without ``probing``) starts the scene after every
    destination answered its first probe, at time 0.
    """
    if isinstance(scripts, int):
        scripts = [None] * scripts
    clock = FakeClock()
    listeners = listeners or [
        Listener(0, "udp", PROXY_HOST, PROXY_PORT),
        Listener(1, "tcp", PROXY_HOST, PROXY_PORT),
    ]
    targets = [Target(transport, "127.0.0.1", FIRST_UAS_PORT + i) for i in range(len(scripts))]
    weights = weights or [1] * len(targets)
    priorities = priorities or [0] * len(targets)
    specs = tuple(
        DestinationSpec(
            dest_uri(t),
            t.host,
            t.port,
            transport=t.transport,
            weight=w,
            priority=p,
            max_calls=max_calls,
        )
        for t, w, p in zip(targets, weights, priorities, strict=True)
    )
    proxy = Proxy(
        listeners=listeners,
        sets=[
            SetSpec(name, tuple(specs[i] for i in members), algorithm, hash_key)
            for name, members in (sets or {"pbx": range(len(specs))}).items()
        ],
        routes=routes,
        default_set=next(iter(sets or {"pbx": ()})),
        settings=settings or ProxySettings(),
        health=health or HealthSettings(),
        now=clock.now,
        rng=random.Random(seed),
        probing=probing,
        protection=protection,
        caps=caps,
    )
    if proven if proven is not None else not probing:
        for spec in specs:
            proxy.dispatcher.health.probe_result(spec.uri, True, clock.now, "probe answered 200")
    net = Network(proxy, clock)
    uac = uac or UAC()
    net.add(uac)
    uas = [
        UAS(f"uas{i}", t, s, latency=latency)
        for i, (t, s) in enumerate(zip(targets, scripts, strict=True))
    ]
    for endpoint in uas:
        net.add(endpoint)
    return Lab(clock, net, proxy, uac, uas)
