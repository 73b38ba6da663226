"""The stateful proxy core (RFC 3261 section 16): bytes and ``now`` in, actions out.

    proxy.receive(data, source, listener, now)   # a datagram, or a framed stream message
    proxy.transport_error(target, now)           # the shell could not send or connect
    proxy.handle_timer(now)                       # when proxy.get_timer() has come
    proxy.members_changed(ownership)              # the live members (cluster, workers)
    proxy.set_admin / follow / passive            # health inputs from operators and members
    proxy.media_done(token, sdp, now)             # an engine's answer to a media ask
    proxy.out, proxy.handovers, proxy.media_asks  # drained by the shell after every call
    proxy.take_events()                           # events for logs and metrics

``out`` holds ``Send`` actions; ``handovers`` holds ``HandOver`` actions (datagrams another
member owns, to pass on over the node-to-node channel). No sockets, no clock, no asyncio: a test
drives a whole call with a fake clock.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence

from siplb.cluster.branch import owner_of
from siplb.cluster.member import Member
from siplb.cluster.ownership import Ownership
from siplb.cluster.setups import CallEnded, CallNote, Setup, Setups
from siplb.dispatch import (
    AdminState,
    Dispatcher,
    HealthSettings,
    NoDestination,
    SetSpec,
    State,
    StateChanged,
)
from siplb.media.asks import MediaAsk
from siplb.settings import (
    LimitsSettings,
    ProtectionSettings,
    ProxySettings,
    RegistrarSettings,
    RouteRule,
)
from siplb.sip import (
    DEFAULT_LIMITS,
    Limits,
    ParseError,
    Request,
    Response,
    Via,
    parse,
    parse_uri,
    validate_request,
)

from . import routing
from .actions import CallsExpired, HandOver, PassiveObserved, RequestRejected, Send, Target
from .admission import Admission
from .branch import BranchMaker
from .build import local_tag, response_bytes
from .context import Context, CoreEvent, ListenerRouting
from .forwarding import Forwarding
from .listeners import Listener, LocalNames
from .loops import looped
from .media import MediaAnchor, MediaPolicy, ParkedAck, ParkedRequest, ParkedResponse
from .nat import add_contact_alias
from .overload import OverloadGuard
from .probe import Prober
from .registrar import FrontEnd
from .rescue import reply_to_garbage
from .routing import Dispatch, Refusal, Routed, RouteRules
from .stage import AdmissionStage
from .transaction import NO_USER, ClientTransaction, ServerTransaction, server_key
from .unconfirmed import Unconfirmed, bye, first_hop, remember

HOUSEKEEPING_INTERVAL = 1.0
ALLOW = b"INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, PRACK, UPDATE, INFO, SUBSCRIBE, NOTIFY, REFER, MESSAGE"


class Proxy:
    def __init__(
        self,
        *,
        listeners: Sequence[Listener],
        sets: Sequence[SetSpec],
        routes: Sequence[RouteRule] = (),
        default_set: str,
        settings: ProxySettings,
        health: HealthSettings,
        now: float,
        limits: Limits = DEFAULT_LIMITS,
        worker: int = 0,
        rng: random.Random | None = None,
        probing: bool = True,
        registrar: RegistrarSettings | None = None,
        protection: ProtectionSettings | None = None,
        caps: LimitsSettings | None = None,
        listener_names: Sequence[str | None] = (),
        routing: ListenerRouting | None = None,
        media: MediaPolicy | None = None,
    ) -> None:
        if not listeners:
            raise ValueError("the proxy needs at least one listener")
        self.settings = settings
        self.limits = limits
        self.dispatcher = Dispatcher(sets, health, rng or random.Random(), now)
        self.context = context = Context(
            listeners=listeners,
            settings=settings,
            dispatcher=self.dispatcher,
            branches=BranchMaker(settings.node_id, worker),
        )
        context.routing = routing
        # the context's pieces, under the names the shell and the tests read
        self.listeners = context.listeners
        self.timers = context.timers
        self.branches = context.branches
        self.heap = context.heap
        self.out: list[Send] = context.out
        self.events: list[CoreEvent] = context.events
        self.stats: Counter[str] = context.stats
        self.clients = context.clients
        self.handovers: list[HandOver] = []
        # anycast: attempts and ends of calls in setup, for the other nodes (``share_setups``)
        self.setup_notes: list[CallNote] = context.setup_notes
        # who decides each destination's health (None: alone, this member decides all)
        self.keys: Ownership | None = None
        # the one member that decides every destination's health, when not each URI's owner
        self.health_owner: Member | None = None
        self.routes = tuple(routes)
        self.default_set = default_set
        self._set_specs = {spec.name: spec for spec in sets}
        self.names = LocalNames(self.listeners)
        # requests received by method; responses received by (CSeq method, status class)
        self.requests_by_method: Counter[str] = Counter()
        self.responses_by_class: Counter[tuple[str, int]] = Counter()
        self.servers: dict[tuple[str, ...], ServerTransaction] = {}
        self.accepting = True
        self.overload = OverloadGuard(
            max_call_rate=settings.max_call_rate,
            backlog_high=settings.overload_backlog,
            excuse_window=settings.failover_timeout,
            now=now,
        )
        caps = caps or LimitsSettings()
        self.reply_malformed = caps.malformed == "reply"
        self.max_pending = caps.max_transactions
        self.max_pending_per_source = caps.max_transactions_per_source
        # calls answered 2xx whose ACK has not passed yet ([proxy] bye_unconfirmed), by Call-ID
        self.unconfirmed: dict[bytes, Unconfirmed] = {}
        self.pending = 0  # server transactions waiting for their final answer
        self.pending_by_source: Counter[str] = Counter()
        self.protection = protection or ProtectionSettings()
        admission: Admission | None = None
        if protection is not None:
            names = list(listener_names) or [None] * len(self.listeners)
            admission = Admission(protection, listener_names=names, now=now)
        self.stage = AdmissionStage(context, admission, self.overload)
        self._destination_hosts: frozenset[str] = frozenset()
        self._destination_targets: dict[str, Target] = {}
        self._note_destinations()
        self.prober = Prober(context, self.overload, health, now) if probing else None
        self._front: FrontEnd | None = None
        self._rules = self._route_rules()
        self.front = FrontEnd(context, registrar) if registrar is not None else None
        # [media]: the anchored calls; ``media_asks`` is drained by the shell like ``out``
        self.media: MediaAnchor | None = None
        self.media_asks: list[MediaAsk] = []
        if media is not None:
            names = list(listener_names)
            self.media = MediaAnchor(media, context, self, listener_names=names, limits=limits)
            self.media_asks = self.media.asks
            context.media = self.media
        self._housekeeping = _Housekeeping(self)
        self.heap.schedule(self._housekeeping, now + HOUSEKEEPING_INTERVAL)

    @property
    def admission(self) -> Admission | None:
        """The admission stage's ACL, rate and scanner steps (None without ``[protection]``)."""
        return self.stage.admission

    @property
    def front(self) -> FrontEnd | None:
        """The registrar front end (None without ``[registrar]``)."""
        return self._front

    @front.setter
    def front(self, front: FrontEnd | None) -> None:
        self._front = front
        self._rules = self._route_rules()

    def _route_rules(self) -> RouteRules:
        max_forwards = self.settings.max_forwards
        return RouteRules(
            self.listeners,
            self.names,
            max_forwards,
            self._front,
            self.is_trusted,
            self._call_destination,
        )

    def _call_destination(self, call_id: bytes) -> tuple[str, Target] | None:
        """The destination (URI, address) a call of the call table went to."""
        entry = self.dispatcher.accounting.get(call_id)
        if entry is None:
            return None
        target = self._destination_targets.get(entry.uri)
        return None if target is None else (entry.uri, target)

    # ---- the shell's inputs --------------------------------------------------------------------
    def receive(
        self, data: bytes, source: Target, listener: int, now: float, *, handed: bool = False
    ) -> None:
        """A datagram; ``handed``: another member handed it over as ours (never passed on
        again, even when the two views of the members differ for a moment)."""
        stage = self.stage
        if stage.source_refused(source, now):
            return  # a banned or blocked source costs a lookup, not a parse
        if stage.ownership is not None and not handed:
            owner = stage.owner(data, listener)
            if owner is not None:  # another member's: handed over, nothing else done here
                self.stats["handed_over"] += 1
                self.handovers.append(HandOver(owner, data, source, listener))
                return
        try:
            message = parse(data, self.limits)
        except ParseError as exc:
            self.receive_malformed(data, exc, source, listener)
            return
        self._receive(message, source, listener, now)

    def receive_message(
        self, message: Request | Response, source: Target, listener: int, now: float
    ) -> None:
        """A message framed by a stream connection (TCP, TLS)."""
        if not self.stage.source_refused(source, now):
            self._receive(message, source, listener, now)

    def members_changed(
        self,
        ownership: Ownership,
        *,
        datagrams: bool = True,
        shared: frozenset[int] | None = None,
        health_owner: Member | None = None,
    ) -> None:
        """The live members changed: destinations' health (probes, passive observations) moves
        to their owners, and with ``datagrams`` the datagrams too. A node whose listeners are its
        own (not an address shared by every node) owns every datagram it receives among the
        cluster's nodes: ``datagrams=False`` with the cluster-wide members. ``health_owner``
        names one member that decides every destination's health (the workers of one host:
        worker 0) instead of each URI's rendezvous owner; the others report their passive
        observations as ``PassiveObserved`` and are built with ``probing=False``. ``shared``
        limits the datagrams handed between members to those of these listeners (an address
        every node shares: anycast)."""
        if health_owner == ownership.me:
            health_owner = None
            self.keys = None
        else:
            self.keys = None if ownership.alone and health_owner is None else ownership
        self.health_owner = health_owner
        self.stage.members_changed(ownership if datagrams else Ownership(ownership.me), shared)
        if self.prober is not None:
            self.prober.ownership = self.keys

    # ---- calls in setup shared between nodes (anycast; ``siplb.cluster.setups``) --------------
    def share_setups(self) -> None:
        """Tell the other nodes about every call in setup (``setup_notes``), and keep theirs:
        a call in setup stays with its node, and outlives it (``adopt``)."""
        if self.context.setups is None:
            ttl = self.settings.setup_timeout + 64 * self.timers.t1
            self.context.setups = Setups(ttl)

    @property
    def setups(self) -> Setups | None:
        return self.context.setups

    def setup_heard(self, setup: Setup, now: float) -> None:
        """Another node's attempt of a call in setup."""
        setups = self.context.setups
        if setups is not None and setup.owner != self.branches.member:
            setups.heard(setup, now)

    def setup_ended(self, call_id: bytes, owner: Member) -> None:
        setups = self.context.setups
        if setups is not None:
            setups.ended(call_id, owner)

    def call_ended(self, call_id: bytes) -> bool:
        """A BYE for ``call_id`` passed another node; True when the call was counted here."""
        return self.dispatcher.accounting.ended(call_id) is not None

    def adopt_orphans(self, now: float) -> int:
        """Continue the calls in setup whose node is gone and whose Call-ID is now ours."""
        setups, ownership = self.context.setups, self.stage.ownership
        if setups is None:
            return 0
        live = ownership.live if ownership is not None else (self.branches.member,)
        adopted = 0
        for setup in setups.orphaned(live):
            if ownership is None or ownership.owns_key(setup.call_id):
                adopted += self.adopt(setup, now)
        return adopted

    def adopt(self, setup: Setup, now: float) -> bool:
        """Continue ``setup`` where its node left it: the INVITE as it arrived, to the same
        destination with the same downstream branch (the PBX sees a retransmission of what it
        has, RFC 3261 17.2.1), answers relayed to the caller from here. False when it cannot
        be (not an INVITE any more, a transaction for it exists here, no such destination)."""
        listener = setup.listener
        if not 0 <= listener < len(self.listeners):
            return False
        try:
            request = parse(setup.invite, self.limits)
            if not isinstance(request, Request) or request.method != "INVITE":
                return False
            via = request.top_via()
            key = server_key(request, via)
            source = Target("udp", setup.source[0], setup.source[1])
            routed = routing.preprocess(request, via, source, self._rules)
        except ParseError:
            return False
        if key in self.servers or owner_of(setup.branch) is None:
            return False
        first = next(
            (d for d in self.dispatcher.destinations(setup.set_name) if d.uri == setup.uri), None
        )
        if first is None:
            return False
        txn = ServerTransaction(
            key, request, source, listener, self, self.heap, self.out, self.timers
        )
        self.servers[key] = txn
        self.pending += 1
        self.pending_by_source[source.host] += 1
        self.stats["setups_adopted"] += 1
        Forwarding(
            self.context,
            self,
            self.front,
            txn,
            routed.edit,
            incoming=listener,
            set_name=setup.set_name,
            first=first,
            resume=(setup.branch, setup.attempts, setup.proceeding),
        ).start(now)
        return True

    def _receive(
        self, message: Request | Response, source: Target, listener: int, now: float
    ) -> None:
        if isinstance(message, Request):
            self.stats["requests"] += 1
            self.requests_by_method[message.method] += 1
            self._request(message, source, listener, now)
        else:
            self.stats["responses"] += 1
            self._response(message, source, listener, now)

    def receive_malformed(
        self, data: bytes, error: ParseError, source: Target, listener: int
    ) -> None:
        """A message that does not parse: answer it when a reply can be built, else drop it."""
        self.stats[f"malformed:{error.reason}"] += 1
        reply = reply_to_garbage(data, error.status_hint, error.reason)
        if reply is None or not self.reply_malformed:
            self.context.drop(f"malformed: {error.reason}", source)
            return
        self.stats["rejected"] += 1
        self.events.append(RequestRejected(error.status_hint, error.reason, "?", source))
        self.out.append(Send(reply, source, listener))

    def transport_error(self, target: Target, now: float) -> None:
        """Sending to ``target`` failed (connection refused, reset, unreachable)."""
        for txn in [t for t in self.clients.values() if t.target == target]:
            txn.fail("transport error", now)
        if self.front is not None and self.front.keepalive is not None:
            self.front.keepalive.transport_error(target, now)
        if self.prober is not None:
            self.prober.transport_error(target, now)

    def report_backlog(self, fill: float, now: float) -> None:
        """The shell's receive buffers are ``fill`` full (0-1): past ``overload_backlog`` new
        calls are refused with 503 until it drains (see ``overload.py``)."""
        event = self.overload.report_backlog(fill, now)
        if event is not None:
            self.events.append(event)

    # ---- the media engine (``proxy.media``) ------------------------------------------------------
    def media_done(self, token: int, sdp: bytes | None, now: float) -> None:
        """The shell ran ``media_asks``' ask ``token``: the engine's SDP, or None (failed)."""
        if self.media is not None and token:
            self.media.done(token, sdp, now)

    def resume_request(self, parked: ParkedRequest, request: Request | None, now: float) -> None:
        """A request back from the engine goes on to its destination; None: 503."""
        txn = parked.txn
        if txn.final_sent or txn.request is None:  # answered meanwhile (a CANCEL)
            self.stats["media_parked_answered"] += 1
            return
        if request is None:
            self.context.respond(txn, 503, now, cause="media engine failed")
            return
        try:
            routed = routing.preprocess(request, parked.via, parked.source, self._rules)
        except ParseError as exc:  # pragma: no cover - it was routed once already
            self.context.respond(txn, exc.status_hint, now, cause=exc.reason)
            return
        self._route(request, routed, parked.dispatch, txn, parked.listener, now)

    def resume_response(self, parked: ParkedResponse, response: Response, now: float) -> None:
        server, source = parked.server, parked.source
        if server is not None:
            self.context.send_upstream(server, response, now)
        elif source is not None:  # a 2xx after its transaction (always has its source)
            self.context.forward_stateless_response(response, source)

    def resume_ack(self, parked: ParkedAck, request: Request, now: float) -> None:
        self._forward_ack(request, parked.via, parked.source, parked.listener, now, anchored=True)

    def get_timer(self) -> float | None:
        return self.heap.next_deadline()

    def handle_timer(self, now: float) -> None:
        self.heap.run_due(now)

    def take_events(self) -> list[CoreEvent]:
        """The events since the last call, oldest first (the shell logs and counts them)."""
        events = self.events[:]
        self.events.clear()
        return events

    def use_routing(self, routing: ListenerRouting | None) -> None:
        """A multi-homed host: pick the listener of a request by the route to its target."""
        self.context.routing = routing

    @property
    def routing(self) -> ListenerRouting | None:
        return self.context.routing

    @routing.setter
    def routing(self, routing: ListenerRouting | None) -> None:  # prefer use_routing
        self.context.routing = routing

    def stop_accepting(self) -> None:
        """Shutting down: new dialogs get 503; transactions and calls in progress go on."""
        self.accepting = False

    def reconfigure(
        self,
        *,
        sets: Sequence[SetSpec],
        routes: Sequence[RouteRule],
        default_set: str,
        now: float,
    ) -> int:
        """A reload: new sets and routes; calls and transactions in progress keep their
        destinations, a removed destination drains until its last call ends."""
        changes = self.dispatcher.replace_sets(sets, now)
        self.events.extend(changes)
        self.routes = tuple(routes)
        self.default_set = default_set
        self._set_specs = {spec.name: spec for spec in sets}
        self._note_destinations()
        if self.prober is not None:
            self.prober.refresh(now)
        return len(changes)

    def reconfigure_protection(self, protection: ProtectionSettings, now: float) -> None:
        """A reload: new ACLs, blocklist, trusted networks and budgets; bans in force stay."""
        self.protection = protection
        if self.admission is not None:
            self.admission.reconfigure(protection, now)
            self._note_destinations()

    def _note_destinations(self) -> None:
        hosts = frozenset(
            dest.host for spec in self._set_specs.values() for dest in spec.destinations
        )
        self._destination_hosts = hosts
        self._destination_targets = {
            dest.uri: Target(dest.transport, dest.host, dest.port)
            for spec in self._set_specs.values()
            for dest in spec.destinations
        }
        if self.admission is not None:
            self.admission.set_destinations(hosts)

    @property
    def transactions(self) -> int:
        """Live transactions, including finished ones waiting out their timers."""
        return len(self.servers) + len(self.clients)

    @property
    def busy(self) -> int:
        """Requests still waiting for their final answer (the shell waits for 0, or the grace
        period, before it exits); finished transactions only waiting out timers do not count."""
        waiting = sum(1 for txn in self.servers.values() if not txn.final_sent)
        return waiting + sum(1 for txn in self.clients.values() if txn.active)

    # ---- requests --------------------------------------------------------------------------
    def _request(self, request: Request, source: Target, listener: int, now: float) -> None:
        """docs/design.md section 3: admission, then the server transaction, then routing. A request
        refused before routing gets one stateless answer (or none) and leaves no state behind."""
        try:
            via = request.top_via()
            key = server_key(request, via)
        except ParseError as exc:  # answered to the source address, never to the Via
            self.stats["refused:malformed"] += 1
            status = exc.status_hint if self.reply_malformed and request.has(b"via") else None
            raw_key = ((request.get(b"via") or b"").decode("latin-1"), request.method)
            self._refuse(
                request, raw_key, Refusal(status, exc.reason, "malformed"), source, listener
            )
            return
        method = request.method
        txn = self.servers.get(key)
        new_call = method == "INVITE" and request.to_tag is None and txn is None and self.accepting
        refusal = self.stage.check(request, source, listener, now, new_call=new_call)
        if refusal is not None:
            self._refuse(request, key, refusal, source, listener)
            return
        if method == "ACK":
            self._ack(request, via, key, source, listener, now)
            return
        if txn is not None:
            self.stats["retransmissions"] += 1
            txn.receive_retransmission(now)
            return
        refusal = self._screen(request, source)
        if refusal is None:
            try:
                routed = routing.preprocess(request, via, source, self._rules)
                refusal = routing.check_route(request, routed, source, self._rules)
            except ParseError as exc:
                refusal = Refusal(exc.status_hint, exc.reason, "route")
        dispatch: Dispatch | None = None
        if refusal is None and routing.needs_destination(request, routed, self.names):
            dispatch = self._dispatch(request, source)
            refusal = dispatch.refusal
        if refusal is not None:
            self.stats[f"refused:{refusal.label}"] += 1
            self._refuse(request, key, refusal, source, listener)
            return
        txn = ServerTransaction(
            key, request, source, listener, self, self.heap, self.out, self.timers
        )
        self.servers[key] = txn
        self.pending += 1
        self.pending_by_source[source.host] += 1
        if method == "INVITE":
            txn.respond(100, response_bytes(request, 100), now)
        if method == "CANCEL":
            self._cancel(txn, key, now)
            return
        if self.media is not None:
            parked = ParkedRequest(request, txn, listener, via, source, dispatch)
            if self.media.take_request(parked, routed, now):
                return  # waits for the media engine (``resume_request``)
        self._route(request, routed, dispatch, txn, listener, now)

    def _dispatch(self, request: Request, source: Target) -> Dispatch:
        """A new dialog's set and first destination, chosen before any state is made: when
        no destination can take it, one stateless 503 (with Retry-After when waiting helps)."""
        if not self.accepting:
            refusal = Refusal(503, "shutting down", "shutdown", self.context.retry_after())
            return Dispatch("", b"", None, refusal)
        rule = routing.select_rule(request, source, self.routes)
        set_name = self.default_set if rule is None else rule.set_name
        media = None if rule is None else rule.media
        hash_input = routing.hash_input(request, self._set_specs.get(set_name))
        choice = self.dispatcher.choose(set_name, hash_input)
        if isinstance(choice, NoDestination):
            reason = str(choice.reason)
            waiting_helps = reason in ("all-full", "all-down")
            extra = self.context.retry_after() if waiting_helps else None
            return Dispatch(
                set_name, hash_input, None, Refusal(503, reason, "no-destination", extra)
            )
        return Dispatch(set_name, hash_input, choice, None, media)

    def _screen(self, request: Request, source: Target) -> Refusal | None:
        """What refuses a new request before any state is made (16.3, caps, registrar)."""
        try:
            validate_request(request)
            max_forwards = request.max_forwards
        except ParseError as exc:
            if not self.reply_malformed:
                return Refusal(None, exc.reason, "malformed")
            return Refusal(exc.status_hint, exc.reason, "malformed")
        if self.pending >= self.max_pending:
            retry = self.context.retry_after()
            return Refusal(503, "too many pending transactions", "pending", retry)
        if self.pending_by_source[
            source.host
        ] >= self.max_pending_per_source and not self.is_trusted(source.host):
            return Refusal(503, "too many pending transactions from one source", "pending")
        if max_forwards == 0:
            return Refusal(483, "Max-Forwards 0", "max-forwards")
        if looped(request, self.branches.prefix, self._forwarded):  # 16.3 step 4
            return Refusal(482, "the request came back as it was forwarded", "loop")
        if request.has(b"proxy-require"):  # 16.3 step 5: we support no extensions
            unsupported = b", ".join(request.values(b"proxy-require"))
            return Refusal(420, "Proxy-Require", "extension", [(b"Unsupported", unsupported)])
        if request.method == "REGISTER" and self.front is not None:
            refusal = self.front.check(request)
            if refusal is not None:
                extra = [(b"Require", b"path")] if refusal[0] == 421 else None
                return Refusal(refusal[0], refusal[1], "registrar", extra)
        return None

    def _forwarded(self, branch: str, method: str) -> Request | None:
        """The request a live client transaction of ours sent (loop detection)."""
        txn = self.clients.get((branch, method))
        return None if txn is None else txn.request

    def is_trusted(self, host: str) -> bool:
        """A destination's host, or one in a trusted network (may be relayed to and from)."""
        if host in self._destination_hosts:
            return True
        admission = self.admission
        return admission is not None and admission.is_trusted(host)

    def _refuse(
        self,
        request: Request,
        key: tuple[str, ...],
        refusal: Refusal,
        source: Target,
        listener: int,
    ) -> None:
        """Kamailio's ``sl_send_reply``: one stateless answer and no transaction, so nothing is
        retransmitted (no reflector) and a repeat of the request gets the same single answer.
        ``status`` None, and ACK (which is never answered), drop it silently."""
        status = refusal.status
        if status is None or request.method == "ACK":
            self.context.drop(refusal.cause, source)
            return
        data = response_bytes(request, status, to_tag=local_tag(key), extra=refusal.extra)
        self.stats[f"local:{status}"] += 1
        self.stats["rejected"] += 1
        self.events.append(RequestRejected(status, refusal.cause, request.method, source))
        self.out.append(Send(data, source, listener))

    def _ack(
        self,
        request: Request,
        via: Via,
        key: tuple[str, ...],
        source: Target,
        listener: int,
        now: float,
    ) -> None:
        txn = self.servers.get(key)
        if txn is not None and txn.receive_ack(now):
            return
        if request.to_tag is not None and request.to_tag == local_tag(key):
            self.stats["acks_absorbed"] += 1  # the ACK of one of our stateless answers
            return
        self._forward_ack(request, via, source, listener, now)

    def _route(
        self,
        request: Request,
        routed: Routed,
        dispatch: Dispatch | None,
        txn: ServerTransaction,
        listener: int,
        now: float,
    ) -> None:
        if not routed.initial:
            self._dialog_activity(request, now)
        context, front = self.context, self.front
        if routed.next_hop is not None:
            Forwarding(
                context,
                self,
                front,
                txn,
                routed.edit,
                incoming=listener,
                target=routed.next_hop,
                target_listener=routed.hop_listener,
            ).start(now)
            return
        if dispatch is None:  # OPTIONS to us (anything else was refused before)
            extra = [(b"Allow", ALLOW), (b"Accept", b"application/sdp")]
            context.respond(txn, 200, now, extra=extra)
            return
        Forwarding(
            context,
            self,
            front,
            txn,
            routed.edit,
            incoming=listener,
            set_name=dispatch.set_name,
            hash_input=dispatch.hash_input,
            first=dispatch.first,
        ).start(now)

    def _dialog_activity(self, request: Request, now: float) -> None:
        """An in-dialog request: BYE ends the call (docs/design.md section 3 step 7), others touch it."""
        call_id = request.call_id
        if call_id is None:
            return
        self.unconfirmed.pop(call_id, None)  # the dialog is up (or ending) without us
        if request.method == "BYE":
            if self.media is not None:
                self.media.ended(call_id, now)
            ended = self.dispatcher.accounting.ended(call_id)
            if ended is None and self.context.setups is not None:
                self.setup_notes.append(CallEnded(call_id))  # counted by another node
        else:
            self.dispatcher.accounting.touch(call_id, now)

    def _cancel(self, txn: ServerTransaction, key: tuple[str, ...], now: float) -> None:
        """16.10: answer the CANCEL, then cancel the INVITE's pending branches."""
        invite = self.servers.get((*key[:-1], "INVITE"))
        respond = self.context.respond
        if invite is None:
            respond(txn, 481, now)
            return
        respond(txn, 200, now)
        context = invite.context
        if isinstance(context, Forwarding):
            context.cancel(now)
        elif not invite.final_sent:
            respond(invite, 487, now)

    def _forward_ack(
        self,
        request: Request,
        via: Via,
        source: Target,
        listener: int,
        now: float,
        *,
        anchored: bool = False,
    ) -> None:
        """ACK for a 2xx (or one we cannot match): forwarded statelessly by Route/R-URI; one
        that answers a late offer first waits for the media engine (``resume_ack``)."""
        drop = self.context.drop
        try:
            if request.max_forwards == 0:  # 16.3 step 3; an ACK gets no 483, so it is dropped
                drop("ACK with Max-Forwards 0", source)
                return
            routed = routing.preprocess(request, via, source, self._rules)
            refusal = routing.check_route(request, routed, source, self._rules)
        except ParseError as exc:
            drop(f"ACK: {exc.reason}", source, "malformed")
            return
        next_hop = routed.next_hop
        if refusal is not None:
            self.stats[f"refused:{refusal.label}"] += 1
            drop(f"ACK: {refusal.cause}", source)
            return
        if next_hop is None:
            drop("ACK matching no transaction", source)
            return
        media = None if anchored else self.media
        if media is not None and media.request(ParkedAck(request, via, source, listener), now):
            return
        call_id = request.call_id
        if call_id is not None:
            self.dispatcher.accounting.acked(call_id, now)
            self.unconfirmed.pop(call_id, None)
        prefer = routed.hop_listener if routed.hop_listener is not None else listener
        out_listener = self.context.listener_for(next_hop, prefer)
        branch = self.branches.stateless((via.branch or "").encode() + via.sent_by.encode())
        edit = routed.edit
        edit.add_top_value(b"Via", self.context.via(out_listener, branch))
        self.out.append(Send(edit.apply().to_bytes(), next_hop, out_listener))

    # ---- responses -------------------------------------------------------------------------
    def _response(self, response: Response, source: Target, listener: int, now: float) -> None:
        try:
            via = response.top_via()
            method = response.cseq.method
        except ParseError as exc:
            self.context.drop(f"response: {exc.reason}", source)
            return
        self.responses_by_class[(method, response.status // 100)] += 1
        branch = via.branch
        if branch is None:
            self.context.drop("response whose top Via is not ours", source)
            return
        front = self.front
        if self.branches.is_ours(branch):
            if front is not None and front.keepalive is not None and front.keepalive.owns(branch):
                front.keepalive.answered(branch, now)
                return
            if self.branches.is_probe(branch):
                if self.prober is not None:
                    self.prober.receive(branch, response.status, now)
                return
        elif self.context.setups is None or owner_of(branch) is None:
            # (with setups shared, another node's branch reaches here when that node is gone:
            # its setups are adopted with their branches, and its 2xx still find their way up)
            self.context.drop("response whose top Via is not ours", source)
            return
        txn = self.clients.get((branch, method))
        if txn is not None:
            if front is not None and txn.target.flow and front.settings.contact_alias:
                response = add_contact_alias(response, source)  # a phone behind NAT answered
            txn.receive_response(response, now)
        elif method == "INVITE" and 200 <= response.status < 300:
            media = self.media  # a 2xx after the txn
            if media is None or not media.response(response, None, source, now):
                self.context.forward_stateless_response(response, source)
        else:
            self.context.drop("response matching no transaction", source)

    # ---- what the server transactions report (their table is the core's) -----------------------
    def server_terminated(self, txn: ServerTransaction) -> None:
        if self.servers.get(txn.key) is txn:
            del self.servers[txn.key]

    def server_answered(
        self, txn: ServerTransaction, request: Request | None, status: int, now: float
    ) -> None:
        """A server transaction sent its final answer, or ended without one."""
        self.pending -= 1
        host = txn.source.host
        left = self.pending_by_source[host] - 1
        if left > 0:
            self.pending_by_source[host] = left
        else:
            del self.pending_by_source[host]
        admission = self.admission
        if admission is not None and request is not None:
            admission.final_answer(request, host, status, now)
        if self.media is not None and request is not None:
            self.media.answered(request, status, now)

    # ---- what the response contexts report (``forwarding.CallWatch``) ------------------------
    def passive_failure(
        self,
        uri: str,
        cause: str,
        now: float,
        *,
        timeout: bool = False,
        method: str = "INVITE",
        source: str | None = None,
    ) -> None:
        """Live traffic failed on ``uri``. Health is the destinations', not the attackers': only
        real call traffic counts (``passive_methods``: a PBX that ignores REGISTER is not down),
        never requests from sources banned since, and a timeout while we are behind is our
        fault, not its."""
        if method not in self.protection.passive_methods:
            self.stats["passive_ignored"] += 1
            return
        admission = self.admission
        if source is not None and admission is not None and admission.is_banned(source, now):
            self.stats["passive_ignored"] += 1
            return
        if timeout and self.overload.excuses_timeouts(now):
            self.stats["timeouts_excused"] += 1
            return
        self._observed(uri, False, cause, now)

    def passive_success(self, uri: str, now: float) -> None:
        self._observed(uri, True, "traffic ok", now)

    def _observed(self, uri: str, ok: bool, cause: str, now: float) -> None:
        """A passive observation: this member's to decide when it owns ``uri``'s health, else
        a ``PassiveObserved`` for the owner (a success only while the state is in doubt)."""
        ownership = self.keys
        if ownership is None or (self.health_owner is None and ownership.owns_key(uri.encode())):
            self.passive(uri, ok, cause, now)
            return
        health = self.dispatcher.health
        if uri not in health or not health.settings_of(uri).passive:
            return
        if ok and health.state(uri) is State.UP:
            return
        self.events.append(PassiveObserved(uri, ok, cause))

    # ---- health inputs: operators and other members ---------------------------------------------
    def passive(self, uri: str, ok: bool, cause: str, now: float) -> StateChanged | None:
        """A passive observation for a destination whose health this member decides (its own,
        or one relayed by another member as ``PassiveObserved``)."""
        health = self.dispatcher.health
        if ok:
            return self._health_event(health.passive_success(uri, now, cause))
        return self._health_event(health.passive_failure(uri, now, cause))

    def set_admin(
        self, uri: str, admin: AdminState | None, now: float, cause: str = ""
    ) -> StateChanged | None:
        """An operator's drain, disable or enable (None) of ``uri``."""
        return self._health_event(self.dispatcher.health.set_admin(uri, admin, now, cause))

    def follow(self, uri: str, state: State, now: float, cause: str) -> StateChanged | None:
        """``uri``'s state as decided by the member that owns its health."""
        return self._health_event(self.dispatcher.health.follow(uri, state, now, cause))

    def follow_probe(self, uri: str, state: State, now: float, cause: str) -> StateChanged | None:
        """``uri``'s probe state as decided by the cluster member that owns its health; an
        operator's drain or disable stays over it."""
        return self._health_event(self.dispatcher.health.follow_probe(uri, state, now, cause))

    def _health_event(self, event: StateChanged | None) -> StateChanged | None:
        if event is not None:
            self.events.append(event)
        return event

    # ---- 2xx never ACKed ([proxy] bye_unconfirmed) ----------------------------------------------
    def answered(
        self,
        server: ServerTransaction,
        invite: Request,
        client: ClientTransaction,
        answer: Response,
    ) -> None:
        """A new call's first 2xx: with ``bye_unconfirmed``, keep what ending it takes until
        its ACK passes (one entry per call of the call table, so as bounded as that)."""
        if not (self.settings.bye_unconfirmed and self.settings.record_route):
            return  # without Record-Route the ACK does not pass here: nothing to wait for
        entry = remember(
            invite,
            answer,
            caller=(server.source, server.listener),
            callee=(client.target, client.listener),
            is_ours=lambda value: routing.is_our_route(value, self.names),
        )
        if entry is not None:
            self.unconfirmed[entry.call_id] = entry

    def _end_unconfirmed(self, call_id: bytes, now: float) -> None:
        """The ACK never came: a BYE to each side, so neither keeps a half-open call."""
        entry = self.unconfirmed.pop(call_id, None)
        if entry is None:
            return
        context = self.context
        for side in (entry.callee, entry.caller):
            target = first_hop(side, routing.route_target)
            listener = context.listener_for(target, side.listener)
            branch = self.branches.new()
            request = bye(side, entry.call_id, entry.cseq, context.via(listener, branch))
            context.new_client(branch, request, target, listener, NO_USER, now)
        self.stats["unconfirmed_ended"] += 1

    # ---- bans (the operator, or another worker) ----------------------------------------------
    def ban(self, host: str, seconds: float, reason: str, now: float) -> bool:
        """Drop ``host``'s requests for ``seconds``; False when it is trusted (a destination or
        a trusted network), or banned already at least as long."""
        if self.admission is None:
            return False
        made = self.admission.ban(host, seconds, reason, now)
        self.stage.take_events()
        return made

    def unban(self, host: str) -> bool:
        """Lift a ban and forgive the source; False when it was not banned."""
        if self.admission is None:
            return False
        lifted = self.admission.unban(host)
        self.stage.take_events()
        return lifted

    def housekeeping(self, now: float) -> None:
        settings = self.settings
        ack_timeout = self.timers.b if settings.record_route else float("inf")  # 64*T1
        expired = self.dispatcher.accounting.expire(
            now, settings.max_call_age, settings.setup_timeout, ack_timeout
        )
        if self.admission is not None:
            self.admission.expire(now)
            self.stage.take_events()
        if self.context.setups is not None:
            self.context.setups.expire(now)
        if expired:
            self.events.append(CallsExpired(len(expired)))
        if self.media is not None:
            keys = [entry.key for entry in expired if isinstance(entry.key, bytes)]
            self.media.expire(now, settings.max_call_age, keys)
        for entry in expired:
            if entry.confirmed and not entry.acked and isinstance(entry.key, bytes):
                self._end_unconfirmed(entry.key, now)
        if self.unconfirmed:  # calls that left the table otherwise need no BYE from us
            accounting = self.dispatcher.accounting
            for call_id in [key for key in self.unconfirmed if key not in accounting]:
                del self.unconfirmed[call_id]
        self.dispatcher.sweep()

    def add_listener(self, listener: Listener, name: str | None = None) -> None:
        """A listener added while running, numbered next: an address that appeared on the host,
        served by a wildcard listener's socket (``listeners.py``); ``name`` for ``[[acl]]``."""
        if listener.index != len(self.listeners):
            raise ValueError(f"listener {listener.index} is not the next ({len(self.listeners)})")
        self.listeners.append(listener)
        self.names.add(listener)
        admission = self.stage.admission
        if admission is not None:
            names = admission.listener_names
            admission.listener_names = (*names, *[None] * (listener.index - len(names)), name)


class _Housekeeping:
    __slots__ = ("deadline", "proxy")

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.deadline: float | None = None

    def on_timer(self, now: float) -> None:
        self.proxy.housekeeping(now)
        self.proxy.heap.schedule(self, now + HOUSEKEEPING_INTERVAL)


__all__ = ["Proxy", "parse_uri"]
