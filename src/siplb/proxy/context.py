"""What the proxy core's helpers may use, and nothing more (docs/design.md section 2).

``Forwarding``, ``Prober``, ``FrontEnd`` and ``Keepalive`` get a ``Context``, never the ``Proxy``:
the listeners and how to pick one, the branch maker, the timers and their heap, the client
transaction table, and the two ways out: ``send`` (an action for the shell) and ``emit`` (an event
for logs and metrics). The core owns the context and the tables in it; a transaction reports its
end and the context records it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Protocol

from siplb.cluster.setups import CallNote, Setup, SetupEnded, Setups
from siplb.dispatch import Dispatcher, StateChanged
from siplb.settings import ProxySettings
from siplb.sip import Edit, ParseError, Request, Response, Via

from .actions import Event, MessageDropped, RequestRejected, Send, Target
from .admission import BanLifted, SourceBanned
from .branch import BranchMaker
from .build import local_tag, response_bytes
from .listeners import DEFAULT_PORTS, Listener
from .timers import TimerHeap, Timers
from .transaction import ClientTransaction, ClientUser, ServerTransaction

CoreEvent = Event | StateChanged | SourceBanned | BanLifted


class ListenerRouting(Protocol):
    """A multi-homed host's choice of listener by the route to a target (``multihome.py``)."""

    def listener_for(self, target: Target) -> int | None: ...


class ResponseMedia(Protocol):
    """Media anchoring's look at a response going upstream (``media.MediaAnchor``): True when
    it took the response, to send on once the engine rewrote its SDP."""

    def response(
        self,
        response: Response,
        server: ServerTransaction | None,
        source: Target | None,
        now: float,
    ) -> bool: ...


class Context:
    """The proxy core's shared pieces, as its helpers see them."""

    __slots__ = (
        "_by_transport",
        "_unicast",
        "branches",
        "clients",
        "dispatcher",
        "events",
        "heap",
        "listeners",
        "media",
        "out",
        "routing",
        "settings",
        "setup_notes",
        "setups",
        "stats",
        "timers",
    )

    def __init__(
        self,
        *,
        listeners: Sequence[Listener],
        settings: ProxySettings,
        dispatcher: Dispatcher,
        branches: BranchMaker,
    ) -> None:
        self.listeners = list(listeners)
        self.settings = settings
        self.dispatcher = dispatcher
        self.branches = branches
        self.timers = Timers(settings.t1, settings.t2, settings.t4)
        self.heap = TimerHeap()
        self.out: list[Send] = []
        self.events: list[CoreEvent] = []
        self.stats: Counter[str] = Counter()
        self.clients: dict[tuple[str, str], ClientTransaction] = {}
        self.routing: ListenerRouting | None = None  # multi-homed hosts
        self.media: ResponseMedia | None = None  # [media]: responses whose SDP the engine rewrites
        # anycast: the calls in setup every node knows of, and what to tell the others
        self.setups: Setups | None = None
        self.setup_notes: list[CallNote] = []
        self._by_transport: dict[tuple[str, int], int] = {}
        self._unicast: dict[tuple[str, int], int] = {}  # the node's own addresses only
        for listener in reversed(self.listeners):
            self._by_transport[(listener.transport, listener.family)] = listener.index
            if not listener.anycast:
                self._unicast[(listener.transport, listener.family)] = listener.index

    # ---- the ways out ------------------------------------------------------------------------
    def send(self, data: bytes, target: Target, listener: int) -> None:
        self.out.append(Send(data, target, listener))

    def emit(self, event: CoreEvent) -> None:
        self.events.append(event)

    def drop(self, reason: str, source: Target, label: str | None = None) -> None:
        self.stats["dropped"] += 1
        if label is not None:
            self.stats[f"refused:{label}"] += 1
        self.events.append(MessageDropped(reason, source))

    def retry_after(self) -> list[tuple[bytes, bytes]]:
        """The Retry-After header of our own 503s."""
        return [(b"Retry-After", str(self.settings.retry_after).encode("ascii"))]

    # ---- listeners -------------------------------------------------------------------------------
    def listener_for(self, target: Target, prefer: int | None) -> int:
        """The listener to send to ``target`` from: ``prefer`` if it fits, else one that does."""
        family = 6 if ":" in target.host else 4
        if prefer is not None:
            chosen = self.listeners[prefer]
            if chosen.anycast and chosen.transport == target.transport and chosen.family == family:
                # the address every node shares: the answers may reach any of them
                return prefer
        if self.routing is not None and not target.flow:  # a phone's flow keeps its listener
            routed = self.routing.listener_for(target)
            if routed is not None:
                return routed
        if prefer is not None:
            chosen = self.listeners[prefer]
            if chosen.transport == target.transport and chosen.family == family:
                return prefer
        index = self._by_transport.get((target.transport, family))
        if index is None:
            index = self._by_transport.get(("udp", family), 0)
        return index

    def unicast_for(self, target: Target) -> int:
        """The listener a request whose answer must come back to THIS node leaves from (a
        probe): the node's own address, never one every node shares, when it has one. On a
        multi-homed host (or a wildcard listener) the route to the target decides among them."""
        family = 6 if ":" in target.host else 4
        if self.routing is not None:
            routed = self.routing.listener_for(target)
            if routed is not None and not self.listeners[routed].anycast:
                return routed
        index = self._unicast.get((target.transport, family))
        if index is None:
            index = self._unicast.get(("udp", family))
        return self.listener_for(target, None) if index is None else index

    def via(self, listener: int, branch: str) -> bytes:
        """Our Via header value for a request sent from ``listener``."""
        return self.listeners[listener].via_prefix + b";branch=" + branch.encode("ascii")

    def add_record_route(self, edit: Edit[Request], incoming: int, outgoing: int) -> None:
        """16.6 step 4; two entries when the request changes listener (transport or address).
        On top of the message: our Via goes beside the others (``Edit.add_top_value``), so the
        Via rows stay together."""
        if incoming != outgoing:
            edit.add_first(b"Record-Route", self.listeners[incoming].record_route)
        edit.add_first(b"Record-Route", self.listeners[outgoing].record_route)

    # ---- client transactions (the table is the core's: made and ended here) -------------------
    def new_client(
        self,
        branch: str,
        request: Request,
        target: Target,
        listener: int,
        user: ClientUser,
        now: float,
        *,
        patient: bool = False,
        proceeding: bool = False,
    ) -> ClientTransaction:
        """A client transaction; ``patient``: the destination may have the request already
        (an adopted setup), so its silence is waited out to Timer B, not ``failover_timeout``;
        ``proceeding``: it answered provisionally already, so nothing is sent again."""
        txn = ClientTransaction(
            branch,
            request,
            target,
            listener,
            user,
            self.heap,
            self.out,
            self.timers,
            self,
            failover_timeout=self.timers.b if patient else self.settings.failover_timeout,
            timer_c=self.settings.setup_timeout,
            now=now,
            proceeding=proceeding,
        )
        self.clients[txn.key] = txn
        return txn

    def client_terminated(self, txn: ClientTransaction) -> None:
        if self.clients.get(txn.key) is txn:
            del self.clients[txn.key]

    # ---- calls in setup, told to the other nodes (anycast; ``siplb.cluster.setups``) ----------
    def setup_attempt(self, setup: Setup, now: float) -> None:
        setups = self.setups
        if setups is not None:
            setups.heard(setup, now)
            self.setup_notes.append(setup)

    def setup_done(self, call_id: bytes) -> None:
        setups = self.setups
        if setups is not None:
            me = self.branches.member
            if setups.ended(call_id, me) is not None:
                self.setup_notes.append(SetupEnded(call_id, me))

    # ---- answers upstream ----------------------------------------------------------------------
    def respond(
        self,
        server: ServerTransaction,
        status: int,
        now: float,
        *,
        extra: list[tuple[bytes, bytes]] | None = None,
        cause: str | None = None,
    ) -> None:
        """Answer a request ourselves."""
        request = server.request
        if request is None:  # answered already: nothing more goes out (17.2.1, 17.2.2)
            return
        data = response_bytes(request, status, to_tag=local_tag(server.key), extra=extra)
        if status >= 300:
            self.stats[f"local:{status}"] += 1
            self.events.append(RequestRejected(status, cause or "", request.method, server.source))
        server.respond(status, data, now)

    def forward_response(
        self,
        server: ServerTransaction,
        response: Response,
        now: float,
        source: Target | None = None,
    ) -> None:
        """Send a downstream response upstream through its server transaction (16.7 step 9),
        once the media engine rewrote its SDP when its call is anchored; ``source``: where it
        came from, when known."""
        media = self.media
        if media is not None and media.response(response, server, source, now):
            return
        self.send_upstream(server, response, now)

    def send_upstream(self, server: ServerTransaction, response: Response, now: float) -> None:
        """``forward_response`` as it is: no more media anchoring."""
        if 200 <= response.status < 300 and server.last_status >= 300:
            # a 2xx after we answered non-2xx (Timer C, CANCEL races) still goes up (16.7 step 9)
            self.forward_stateless_response(response, server.source)
            return
        upstream = response.without_top_value(b"via")
        if not upstream.has(b"via"):
            # A UAS that built its response from the wrong request (a 487 copying the CANCEL's
            # single Via) broke RFC 3261 8.2.6.2; the transaction still knows the way back.
            request = server.request
            if request is None:  # answered already: the transaction kept no request
                self.drop("response with no Via for the way back", server.source)
                return
            self.stats["responses_via_restored"] += 1
            edit = Edit(upstream)
            for value in reversed(request.get_all(b"via")):
                edit.add_first(b"Via", value)
            upstream = edit.apply()
        server.respond(response.status, upstream.to_bytes(), now)

    def forward_stateless_response(self, response: Response, source: Target) -> None:
        upstream = response.without_top_value(b"via")
        try:
            via = upstream.top_via()
        except ParseError:
            self.drop("response with no Via for the way back", source)
            return
        target = via_target(via)
        self.send(upstream.to_bytes(), target, self.listener_for(target, None))


def via_target(via: Via) -> Target:
    """Where a response goes by its Via (18.2.2, RFC 3581 4)."""
    transport = via.transport.lower()
    host = via.received or via.host
    port = via.rport or via.port or DEFAULT_PORTS.get(transport, 5060)
    return Target(transport if transport in DEFAULT_PORTS else "udp", host, port)
