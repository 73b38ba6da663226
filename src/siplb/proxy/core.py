"""The stateful proxy core (RFC 3261 section 16): bytes and ``now`` in, ``Send`` actions out.

    proxy.receive(data, source, listener, now)   # a datagram, or a framed stream message
    proxy.transport_error(target, now)           # the shell could not send or connect
    proxy.handle_timer(now)                       # when proxy.get_timer() has come
    proxy.out, proxy.events                       # drained by the shell after every call

No sockets, no clock, no asyncio: a test drives a whole call with a fake clock.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Final

from siplb.dispatch import (
    Destination,
    Dispatcher,
    HashKey,
    HealthSettings,
    NoDestination,
    SetSpec,
    StateChanged,
)
from siplb.settings import (
    LimitsSettings,
    ProtectionSettings,
    ProxySettings,
    RegistrarSettings,
    RouteRule,
)
from siplb.sip import (
    DEFAULT_LIMITS,
    Edit,
    Limits,
    NameAddr,
    ParseError,
    Request,
    Response,
    SipUri,
    Via,
    parse,
    parse_name_addr,
    parse_uri,
    validate_request,
)

from .actions import CallsExpired, Event, MessageDropped, RequestRejected, Send, Target
from .admission import Admission, BanLifted, SourceBanned
from .branch import BranchMaker
from .build import response_bytes
from .forwarding import Forwarding
from .listeners import DEFAULT_PORTS, Listener, LocalNames
from .multihome import SourceRouting
from .nat import add_contact_alias, alias_contacts, alias_target
from .overload import OverloadGuard
from .probe import Prober
from .registrar import FrontEnd, behind_nat, path_next_hop
from .rescue import reply_to_garbage
from .timers import TimerHeap, Timers
from .transaction import NO_USER, ClientTransaction, ClientUser, ServerTransaction
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
    ) -> None:
        if not listeners:
            raise ValueError("the proxy needs at least one listener")
        self.listeners = list(listeners)
        self.settings = settings
        self.limits = limits
        self.timers = Timers(settings.t1, settings.t2, settings.t4)
        self.branches = BranchMaker(settings.node_id, worker)
        self.dispatcher = Dispatcher(sets, health, rng or random.Random(), now)
        self.routes = tuple(routes)
        self.default_set = default_set
        self._set_specs = {spec.name: spec for spec in sets}
        self.names = LocalNames(self.listeners)
        self.heap = TimerHeap()
        self.out: list[Send] = []
        self.events: list[Event | StateChanged | SourceBanned | BanLifted] = []
        self.stats: Counter[str] = Counter()
        # requests received by method; responses received by (CSeq method, status class)
        self.requests_by_method: Counter[str] = Counter()
        self.responses_by_class: Counter[tuple[str, int]] = Counter()
        self.servers: dict[tuple[str, ...], ServerTransaction] = {}
        self.clients: dict[tuple[str, str], ClientTransaction] = {}
        self.accepting = True
        self.overload = OverloadGuard(
            max_call_rate=settings.max_call_rate,
            backlog_high=settings.overload_backlog,
            excuse_window=settings.failover_timeout,
            now=now,
        )
        self._by_transport: dict[tuple[str, int], int] = {}
        for listener in reversed(self.listeners):
            self._by_transport[(listener.transport, listener.family)] = listener.index
        caps = caps or LimitsSettings()
        self.reply_malformed = caps.malformed == "reply"
        self.max_pending = caps.max_transactions
        self.max_pending_per_source = caps.max_transactions_per_source
        # calls answered 2xx whose ACK has not passed yet ([proxy] bye_unconfirmed), by Call-ID
        self.unconfirmed: dict[bytes, Unconfirmed] = {}
        self.pending = 0  # server transactions waiting for their final answer
        self.pending_by_source: Counter[str] = Counter()
        self.protection = protection or ProtectionSettings()
        # the admission stage (DESIGN.md 3 step 2): None only where a test wants a bare core
        self.admission: Admission | None = None
        if protection is not None:
            names = list(listener_names) or [None] * len(self.listeners)
            self.admission = Admission(protection, listener_names=names, now=now)
        self._destination_hosts: frozenset[str] = frozenset()
        self._note_destinations()
        self.prober = Prober(self, health, now) if probing else None
        self.front = FrontEnd(self, registrar) if registrar is not None else None
        self.routing: SourceRouting | None = None  # multi-homed hosts: set by the shell
        self._housekeeping = _Housekeeping(self)
        self.heap.schedule(self._housekeeping, now + HOUSEKEEPING_INTERVAL)

    # ---- the shell's inputs --------------------------------------------------------------------
    def receive(self, data: bytes, source: Target, listener: int, now: float) -> None:
        if self._source_refused(source, now):
            return  # a banned or blocked source costs a lookup, not a parse
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
        if not self._source_refused(source, now):
            self._receive(message, source, listener, now)

    def _source_refused(self, source: Target, now: float) -> bool:
        admission = self.admission
        if admission is None or admission.check_source(source.host, now) is None:
            return False
        self.stats["dropped"] += 1  # counted by reason in admission.drops
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
            self._drop(f"malformed: {error.reason}", source)
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

    def get_timer(self) -> float | None:
        return self.heap.next_deadline()

    def handle_timer(self, now: float) -> None:
        self.heap.run_due(now)

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
        """DESIGN.md section 3: admission, then the server transaction, then routing. A request
        refused before routing gets one stateless answer (or none) and leaves no state behind."""
        try:
            via = request.top_via()
            key = _server_key(request, via)
        except ParseError as exc:  # answered to the source address, never to the Via
            self.stats["refused:malformed"] += 1
            status = exc.status_hint if self.reply_malformed and request.has(b"via") else None
            raw_key = ((request.get(b"via") or b"").decode("latin-1"), request.method)
            self._refuse(request, raw_key, status, exc.reason, source, listener)
            return
        admission = self.admission
        if admission is not None:
            verdict = admission.check_request(request, source.host, listener, now)
            self._take_admission_events()
            if verdict is not None:  # counted by reason in admission.drops
                cause = verdict.detail or verdict.reason
                self._refuse(request, key, verdict.status, cause, source, listener)
                return
        if request.method == "ACK":
            self._ack(request, via, key, source, listener, now)
            return
        txn = self.servers.get(key)
        if txn is not None:
            self.stats["retransmissions"] += 1
            txn.receive_retransmission(now)
            return
        refusal = self._screen(request, source, now)
        if refusal is None:
            try:
                routed = self._preprocess(request, via, source)
                refusal = self._check_route(request, routed, source)
            except ParseError as exc:
                refusal = _Refusal(exc.status_hint, exc.reason, "route")
        dispatch: _Dispatch | None = None
        if refusal is None and self._needs_destination(request, routed):
            dispatch = self._dispatch(request, source)
            refusal = dispatch.refusal
        if refusal is not None:
            self.stats[f"refused:{refusal.label}"] += 1
            self._refuse(
                request, key, refusal.status, refusal.cause, source, listener, refusal.extra
            )
            return
        txn = ServerTransaction(
            key, request, source, listener, self, self.heap, self.out, self.timers
        )
        self.servers[key] = txn
        self.pending += 1
        self.pending_by_source[source.host] += 1
        if request.method == "INVITE":
            txn.respond(100, response_bytes(request, 100), now)
        if request.method == "CANCEL":
            self._cancel(request, txn, key, now)
            return
        self._route(request, routed, dispatch, txn, listener, now)

    def _needs_destination(self, request: Request, routed: Routed) -> bool:
        """A new request for a destination set: not one routed by Route or Request-URI, not a
        CANCEL (it follows its INVITE), not an OPTIONS to siplb itself."""
        if routed.next_hop is not None or not routed.initial or request.method == "CANCEL":
            return False
        return request.method != "OPTIONS" or not self._is_for_us(request)

    def _dispatch(self, request: Request, source: Target) -> _Dispatch:
        """A new dialog's set and first destination, chosen before any state is made: when
        no destination can take it, one stateless 503 (with Retry-After when waiting helps)."""
        if not self.accepting:
            return _Dispatch(
                "", b"", None, _Refusal(503, "shutting down", "shutdown", self.retry_after())
            )
        set_name = self._select_set(request, source)
        hash_input = self._hash_input(request, set_name)
        choice = self.dispatcher.choose(set_name, hash_input)
        if isinstance(choice, NoDestination):
            reason = str(choice.reason)
            extra = self.retry_after() if reason in ("all-full", "all-down") else None
            return _Dispatch(
                set_name, hash_input, None, _Refusal(503, reason, "no-destination", extra)
            )
        return _Dispatch(set_name, hash_input, choice, None)

    def _screen(self, request: Request, source: Target, now: float) -> _Refusal | None:
        """What refuses a new request before any state is made (16.3, overload, caps)."""
        try:
            validate_request(request)
            max_forwards = request.max_forwards
        except ParseError as exc:
            if not self.reply_malformed:
                return _Refusal(None, exc.reason, "malformed")
            return _Refusal(exc.status_hint, exc.reason, "malformed")
        method = request.method
        if method == "INVITE" and request.to_tag is None and self.accepting:
            refused = self.overload.admit(now)
            if refused is not None:  # before any other work, even 100 Trying
                return _Refusal(503, refused, "overload", self.retry_after())
        if self.pending >= self.max_pending:
            return _Refusal(503, "too many pending transactions", "pending", self.retry_after())
        if self.pending_by_source[
            source.host
        ] >= self.max_pending_per_source and not self.is_trusted(source.host):
            return _Refusal(503, "too many pending transactions from one source", "pending")
        if max_forwards == 0:
            return _Refusal(483, "Max-Forwards 0", "max-forwards")
        if request.has(b"proxy-require"):  # 16.3 step 5: we support no extensions
            unsupported = b", ".join(request.values(b"proxy-require"))
            return _Refusal(420, "Proxy-Require", "extension", [(b"Unsupported", unsupported)])
        if method == "REGISTER" and self.front is not None:
            refusal = self.front.check(request)
            if refusal is not None:
                extra = [(b"Require", b"path")] if refusal[0] == 421 else None
                return _Refusal(refusal[0], refusal[1], "registrar", extra)
        return None

    def _check_route(self, request: Request, routed: Routed, source: Target) -> _Refusal | None:
        """No open relay (DESIGN.md 4): a request goes only where its dialog can lead."""
        hop = routed.next_hop
        if hop is None:
            if routed.initial or (request.method == "OPTIONS" and self._is_for_us(request)):
                return None
            return _Refusal(404, "no route for an in-dialog request", "no-route")
        if routed.phone:
            return None
        if routed.initial:
            # A new dialog whose Route names another host: forwarding it would make the balancer
            # an open relay to anywhere. Kamailio's default script refuses it the same way.
            return _Refusal(403, "preloaded Route denied", "relay")
        if request.method == "CANCEL":
            return None  # follows its INVITE's transaction, or gets 481
        if self.is_trusted(source.host) or self.is_trusted(hop.host):
            return None
        return _Refusal(403, f"in-dialog request to {hop.host}, which is no destination", "relay")

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
        status: int | None,
        cause: str,
        source: Target,
        listener: int,
        extra: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        """Kamailio's ``sl_send_reply``: one stateless answer and no transaction, so nothing is
        retransmitted (no reflector) and a repeat of the request gets the same single answer.
        ``status`` None, and ACK (which is never answered), drop it silently."""
        if status is None or request.method == "ACK":
            self._drop(cause, source)
            return
        data = response_bytes(request, status, to_tag=_local_tag(key), extra=extra)
        self.stats[f"local:{status}"] += 1
        self.stats["rejected"] += 1
        self.events.append(RequestRejected(status, cause, request.method, source))
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
        if request.to_tag is not None and request.to_tag == _local_tag(key):
            self.stats["acks_absorbed"] += 1  # the ACK of one of our stateless answers
            return
        self._forward_ack(request, via, source, listener, now)

    def _route(
        self,
        request: Request,
        routed: Routed,
        dispatch: _Dispatch | None,
        txn: ServerTransaction,
        listener: int,
        now: float,
    ) -> None:
        if not routed.initial:
            self._dialog_activity(request, now)
        if routed.next_hop is not None:
            Forwarding(
                self,
                txn,
                routed.edit,
                incoming=listener,
                target=routed.next_hop,
                target_listener=routed.hop_listener,
            ).start(now)
            return
        if dispatch is None:  # OPTIONS to us (anything else was refused before)
            self.respond(txn, 200, now, extra=[(b"Allow", ALLOW), (b"Accept", b"application/sdp")])
            return
        Forwarding(
            self,
            txn,
            routed.edit,
            incoming=listener,
            set_name=dispatch.set_name,
            hash_input=dispatch.hash_input,
            first=dispatch.first,
        ).start(now)

    def _preprocess(self, request: Request, via: Via, source: Target) -> Routed:
        """Loose routing (16.4), Max-Forwards (16.6 step 3), received/rport (RFC 3581): the
        edit that makes the request to forward (one copy, made when it is needed) and where it
        goes (``Routed``). Raises ``ParseError`` for what cannot be routed."""
        routes = request.values(b"route") if request.has(b"route") else []
        hop_listener: int | None = None
        ruri = request.parsed_uri()
        if routes and isinstance(ruri, SipUri) and ruri.user is None:
            named = self.names.listener_for(ruri)
            if named is not None:  # 16.4: a strict router put our RR URI in the Request-URI
                last = parse_name_addr(routes[-1])
                routes = routes[:-1]
                request = _set_routes(request.with_uri(last.uri), routes)
                ruri = request.parsed_uri()
        edit = Edit(request)
        ours: list[SipUri] = []
        for value in routes:
            uri = parse_name_addr(value).parsed_uri()
            named = self.names.listener_for(uri) if isinstance(uri, SipUri) else None
            if named is None or not isinstance(uri, SipUri):
                break
            hop_listener = named.index
            ours.append(uri)
        if ours:
            edit.pop_top_values(b"route", len(ours))
            routes = routes[len(ours) :]
        mf = request.max_forwards
        edit.set(b"Max-Forwards", _DECIMAL[self.settings.max_forwards if mf is None else mf - 1])
        stamped = _stamped_via(via, source)
        if stamped is not None:
            edit.replace_top_value(b"via", stamped)
        initial = request.to_tag is None
        if self.front is not None:
            hop = self._towards_phone(edit, via, source, ours, ruri, initial, bool(routes))
            if hop is not None:  # routed to a phone, never dispatched to a set
                return Routed(edit, hop, hop_listener, False, phone=True)
        if routes:
            first = parse_name_addr(routes[0]).parsed_uri()
            return Routed(edit, self._uri_target(first, None), None, initial)
        if not initial and not self._names_us(ruri):
            hop_transport = (
                self.listeners[hop_listener].transport if hop_listener is not None else None
            )
            return Routed(edit, self._uri_target(ruri, hop_transport), hop_listener, initial)
        return Routed(edit, None, hop_listener, initial)

    def _towards_phone(
        self,
        edit: Edit[Request],
        via: Via,
        source: Target,
        ours: list[SipUri],
        ruri: object,
        initial: bool,
        routed: bool,
    ) -> Target | None:
        """Registrar front end hooks: a request along our Path (RFC 3327) or to an aliased
        Request-URI goes to the phone's flow; a phone behind NAT gets its Contact aliased."""
        assert self.front is not None
        settings = self.front.settings
        request = edit.message
        if (
            settings.contact_alias
            and request.method != "REGISTER"
            and behind_nat(request, via, source)
        ):
            alias_contacts(edit, source)
        if routed:
            return None
        if settings.contact_alias and not initial:
            aliased = alias_target(ruri)
            if aliased is not None:
                if not self.is_trusted(source.host) and not self.front.knows_flow(aliased[1]):
                    # ;alias= is honoured for the dialog's other side only (a destination), or
                    # towards a phone registered through us: else anyone could name any address
                    raise ParseError(
                        "an ;alias= Request-URI from a host that is no destination", 403
                    )
                edit.set_uri(aliased[0])
                return aliased[1]
        if not ours:
            return None
        hop = path_next_hop(ours, ruri)
        if hop is not None and not self.is_trusted(source.host):
            # only a registrar or proxy of ours may send along our Path: anyone else could have
            # us relay to any address they put in a Path URI
            raise ParseError("request along our Path from a host that is no destination", 403)
        return hop

    def _dialog_activity(self, request: Request, now: float) -> None:
        """An in-dialog request: BYE ends the call (DESIGN.md section 3 step 7), others touch it."""
        call_id = request.call_id
        if call_id is None:
            return
        self.unconfirmed.pop(call_id, None)  # the dialog is up (or ending) without us
        if request.method == "BYE":
            self.dispatcher.accounting.ended(call_id)
        else:
            self.dispatcher.accounting.touch(call_id, now)

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
            is_ours=self._is_our_route,
        )
        if entry is not None:
            self.unconfirmed[entry.call_id] = entry

    def _end_unconfirmed(self, call_id: bytes, now: float) -> None:
        """The ACK never came: a BYE to each side, so neither keeps a half-open call."""
        entry = self.unconfirmed.pop(call_id, None)
        if entry is None:
            return
        for side in (entry.callee, entry.caller):
            target = first_hop(side, self._route_target)
            listener = self.listener_for(target, side.listener)
            branch = self.branches.new()
            via = self.listeners[listener].via_prefix + b";branch=" + branch.encode("ascii")
            request = bye(side, entry.call_id, entry.cseq, via)
            self.new_client(branch, request, target, listener, NO_USER, now)
        self.stats["unconfirmed_ended"] += 1

    def _is_our_route(self, value: bytes) -> bool:
        try:
            uri = parse_name_addr(value).parsed_uri()
        except ParseError:
            return False
        return isinstance(uri, SipUri) and self.names.listener_for(uri) is not None

    def _route_target(self, value: bytes) -> Target:
        return self._uri_target(parse_name_addr(value).parsed_uri(), None)

    def _uri_target(self, uri: object, fallback_transport: str | None) -> Target:
        if not isinstance(uri, SipUri):
            raise ParseError("next hop is not a SIP URI", 416)
        transport = uri.params.get("transport")
        transport = transport.lower() if transport else fallback_transport or uri.transport
        if transport not in DEFAULT_PORTS:
            raise ParseError(f"unsupported transport {transport}", 503)
        host = uri.params.get("maddr") or uri.host
        return Target(transport, host, uri.port or DEFAULT_PORTS[transport])

    def retry_after(self) -> list[tuple[bytes, bytes]]:
        """The Retry-After header of our own 503s."""
        return [(b"Retry-After", str(self.settings.retry_after).encode("ascii"))]

    def _is_for_us(self, request: Request) -> bool:
        try:
            return self._is_for_us_uri(request.parsed_uri())
        except ParseError:
            return False

    def _names_us(self, uri: object) -> bool:
        """Whether a URI names one of our listeners, with or without a user part: a request
        sent there would only come back to us (404 instead of a loop until Max-Forwards)."""
        return isinstance(uri, SipUri) and self.names.listener_for(uri) is not None

    def _is_for_us_uri(self, uri: object) -> bool:
        return (
            isinstance(uri, SipUri)
            and uri.user is None
            and self.names.listener_for(uri) is not None
        )

    def _select_set(self, request: Request, source: Target) -> str:
        if not self.routes:
            return self.default_set
        uri = request.parsed_uri()
        user = uri.user.decode("latin-1") if isinstance(uri, SipUri) and uri.user else None
        domain = uri.host if isinstance(uri, SipUri) else ""
        address = _ip(source.host)
        for rule in self.routes:
            if rule.matches(request.method, user, domain, address):
                return rule.set_name
        return self.default_set

    def _hash_input(self, request: Request, set_name: str) -> bytes:
        spec = self._set_specs.get(set_name)
        if spec is None or spec.algorithm != "hash":
            return b""
        key = spec.hash_key
        if key is HashKey.CALL_ID:
            return request.call_id or b""
        if key is HashKey.FROM_URI or key is HashKey.TO_URI:
            addr: NameAddr | None = request.name_addr(b"from" if key is HashKey.FROM_URI else b"to")
            return addr.uri if addr is not None else b""
        uri = request.parsed_uri()
        return (uri.user or b"") if isinstance(uri, SipUri) else b""

    def _cancel(
        self, request: Request, txn: ServerTransaction, key: tuple[str, ...], now: float
    ) -> None:
        """16.10: answer the CANCEL, then cancel the INVITE's pending branches."""
        invite = self.servers.get((*key[:-1], "INVITE"))
        if invite is None:
            self.respond(txn, 481, now)
            return
        self.respond(txn, 200, now)
        context = invite.context
        if isinstance(context, Forwarding):
            context.cancel(now)
        elif not invite.final_sent:
            self.respond(invite, 487, now)

    def _forward_ack(
        self, request: Request, via: Via, source: Target, listener: int, now: float
    ) -> None:
        """ACK for a 2xx (or one we cannot match): forwarded statelessly by Route/R-URI."""
        try:
            if request.max_forwards == 0:  # 16.3 step 3; an ACK gets no 483, so it is dropped
                self._drop("ACK with Max-Forwards 0", source)
                return
            routed = self._preprocess(request, via, source)
            refusal = self._check_route(request, routed, source)
        except ParseError as exc:
            self._drop(f"ACK: {exc.reason}", source, "malformed")
            return
        next_hop = routed.next_hop
        if refusal is not None:
            self.stats[f"refused:{refusal.label}"] += 1
            self._drop(f"ACK: {refusal.cause}", source)
            return
        if next_hop is None:
            self._drop("ACK matching no transaction", source)
            return
        call_id = request.call_id
        if call_id is not None:
            self.dispatcher.accounting.acked(call_id, now)
            self.unconfirmed.pop(call_id, None)
        prefer = routed.hop_listener if routed.hop_listener is not None else listener
        out_listener = self.listener_for(next_hop, prefer)
        branch = self.branches.stateless((via.branch or "").encode() + via.sent_by.encode())
        edit = routed.edit
        edit.add_first(
            b"Via", self.listeners[out_listener].via_prefix + b";branch=" + branch.encode("ascii")
        )
        self.out.append(Send(edit.apply().to_bytes(), next_hop, out_listener))

    # ---- responses -------------------------------------------------------------------------
    def _response(self, response: Response, source: Target, listener: int, now: float) -> None:
        try:
            via = response.top_via()
            method = response.cseq.method
        except ParseError as exc:
            self._drop(f"response: {exc.reason}", source)
            return
        self.responses_by_class[(method, response.status // 100)] += 1
        branch = via.branch
        if branch is None or not self.branches.is_ours(branch):
            self._drop("response whose top Via is not ours", source)
            return
        front = self.front
        if front is not None and front.keepalive is not None and front.keepalive.owns(branch):
            front.keepalive.answered(branch, now)
            return
        if self.branches.is_probe(branch):
            if self.prober is not None:
                self.prober.receive(branch, response.status, now)
            return
        txn = self.clients.get((branch, method))
        if txn is not None:
            if front is not None and txn.target.flow and front.settings.contact_alias:
                response = add_contact_alias(response, source)  # a phone behind NAT answered
            txn.receive_response(response, now)
        elif method == "INVITE" and 200 <= response.status < 300:
            self._forward_stateless_response(response, source)  # 2xx after the transaction
        else:
            self._drop("response matching no transaction", source)

    def forward_response(self, server: ServerTransaction, response: Response, now: float) -> None:
        """Send a downstream response upstream through its server transaction (16.7 step 9)."""
        if 200 <= response.status < 300 and server.last_status >= 300:
            # a 2xx after we answered non-2xx (Timer C, CANCEL races) still goes up (16.7 step 9)
            self._forward_stateless_response(response, server.source)
            return
        upstream = response.without_top_value(b"via")
        if not upstream.has(b"via"):
            # A UAS that built its response from the wrong request (a 487 copying the CANCEL's
            # single Via) broke RFC 3261 8.2.6.2; the transaction still knows the way back.
            request = server.request
            if request is None:  # answered already: the transaction kept no request
                self._drop("response with no Via for the way back", server.source)
                return
            self.stats["responses_via_restored"] += 1
            edit = Edit(upstream)
            for value in reversed(request.get_all(b"via")):
                edit.add_first(b"Via", value)
            upstream = edit.apply()
        server.respond(response.status, upstream.to_bytes(), now)

    def _forward_stateless_response(self, response: Response, source: Target) -> None:
        upstream = response.without_top_value(b"via")
        try:
            via = upstream.top_via()
        except ParseError:
            self._drop("response with no Via for the way back", source)
            return
        target = _via_target(via)
        self.out.append(Send(upstream.to_bytes(), target, self.listener_for(target, None)))

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
        data = response_bytes(request, status, to_tag=_local_tag(server.key), extra=extra)
        if status >= 300:
            self.stats[f"local:{status}"] += 1
            self.events.append(RequestRejected(status, cause or "", request.method, server.source))
        server.respond(status, data, now)

    # ---- helpers for the response contexts -----------------------------------------------------
    def listener_for(self, target: Target, prefer: int | None) -> int:
        """The listener to send to ``target`` from: ``prefer`` if it fits, else one that does."""
        family = 6 if ":" in target.host else 4
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

    def add_record_route(self, edit: Edit[Request], incoming: int, outgoing: int) -> None:
        """16.6 step 4; two entries when the request changes listener (transport or address)."""
        if incoming != outgoing:
            edit.add_first(b"Record-Route", self.listeners[incoming].record_route)
        edit.add_first(b"Record-Route", self.listeners[outgoing].record_route)

    def new_client(
        self,
        branch: str,
        request: Request,
        target: Target,
        listener: int,
        user: ClientUser,
        now: float,
    ) -> ClientTransaction:
        return ClientTransaction(
            branch,
            request,
            target,
            listener,
            user,
            self.heap,
            self.out,
            self.timers,
            self.clients,
            failover_timeout=self.settings.failover_timeout,
            timer_c=self.settings.setup_timeout,
            now=now,
        )

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
        self._health_event(self.dispatcher.health.passive_failure(uri, now, cause))

    def passive_success(self, uri: str, now: float) -> None:
        self._health_event(self.dispatcher.health.passive_success(uri, now))

    def _health_event(self, event: StateChanged | None) -> None:
        if event is not None:
            self.events.append(event)

    # ---- bans (the operator, or another worker) ----------------------------------------------
    def ban(self, host: str, seconds: float, reason: str, now: float) -> bool:
        """Drop ``host``'s requests for ``seconds``; False when it is trusted (a destination or
        a trusted network), or banned already at least as long."""
        if self.admission is None:
            return False
        made = self.admission.ban(host, seconds, reason, now)
        self._take_admission_events()
        return made

    def unban(self, host: str) -> bool:
        """Lift a ban and forgive the source; False when it was not banned."""
        if self.admission is None:
            return False
        lifted = self.admission.unban(host)
        self._take_admission_events()
        return lifted

    def _take_admission_events(self) -> None:
        """The admission stage's bans and lifts, for the shell (log, kernel set, workers)."""
        admission = self.admission
        if admission is not None and admission.events:
            self.events.extend(admission.events)
            admission.events.clear()

    def _drop(self, reason: str, source: Target, label: str | None = None) -> None:
        self.stats["dropped"] += 1
        if label is not None:
            self.stats[f"refused:{label}"] += 1
        self.events.append(MessageDropped(reason, source))

    def housekeeping(self, now: float) -> None:
        settings = self.settings
        ack_timeout = self.timers.b if settings.record_route else float("inf")  # 64*T1
        expired = self.dispatcher.accounting.expire(
            now, settings.max_call_age, settings.setup_timeout, ack_timeout
        )
        if self.admission is not None:
            self.admission.expire(now)
            self._take_admission_events()
        if expired:
            self.events.append(CallsExpired(len(expired)))
        for entry in expired:
            if entry.confirmed and not entry.acked and isinstance(entry.key, bytes):
                self._end_unconfirmed(entry.key, now)
        if self.unconfirmed:  # calls that left the table otherwise need no BYE from us
            accounting = self.dispatcher.accounting
            for call_id in [key for key in self.unconfirmed if key not in accounting]:
                del self.unconfirmed[call_id]
        self.dispatcher.sweep()


class _Housekeeping:
    __slots__ = ("deadline", "proxy")

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.deadline: float | None = None

    def on_timer(self, now: float) -> None:
        self.proxy.housekeeping(now)
        self.proxy.heap.schedule(self, now + HOUSEKEEPING_INTERVAL)


@dataclass(frozen=True, slots=True)
class Routed:
    """Where a request goes: ``next_hop`` by Route, Request-URI or the registrar front end
    (``phone``), or None to dispatch to a set; ``hop_listener`` is the listener our last Route
    entry named; ``edit`` makes the request to forward."""

    edit: Edit[Request]
    next_hop: Target | None
    hop_listener: int | None
    initial: bool
    phone: bool = False


@dataclass(frozen=True, slots=True)
class _Dispatch:
    """A new dialog's set, hash input and first destination, or why there is none."""

    set_name: str
    hash_input: bytes
    first: Destination | None
    refusal: _Refusal | None


@dataclass(frozen=True, slots=True)
class _Refusal:
    status: int | None  # None: drop silently
    cause: str
    label: str  # the counter: refused:<label>
    extra: list[tuple[bytes, bytes]] | None = None


@lru_cache(maxsize=4096)
def _local_tag_text(key: tuple[str, ...]) -> str:
    return hashlib.blake2b("/".join(key).encode(), digest_size=6).hexdigest()


def _local_tag(key: tuple[str, ...]) -> bytes:
    """The To tag of our own answers: the same for a retransmission, so its ACK is known."""
    return _local_tag_text(key).encode()


def _server_key(request: Request, via: Via) -> tuple[str, ...]:
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


def _stamped_via(via: Via, source: Target) -> bytes | None:
    """The top Via with RFC 3261 18.2.1 ``received`` and RFC 3581 ``rport``; None: as it is."""
    wants_rport = via.has_rport and via.rport is None
    if via.host == source.host and not wants_rport:
        return None
    params = dict(via.params)
    params["received"] = source.host
    if wants_rport:
        params["rport"] = str(source.port)
    return Via(via.transport, via.host, via.port, params, via.protocol).to_bytes()


def _set_routes(request: Request, routes: list[bytes]) -> Request:
    out = request.without_header(b"route")
    for value in reversed(routes):
        out = out.with_header_first(b"Route", value)
    return out


def _via_target(via: Via) -> Target:
    """Where a response goes by its Via (18.2.2, RFC 3581 4)."""
    transport = via.transport.lower()
    host = via.received or via.host
    port = via.rport or via.port or DEFAULT_PORTS.get(transport, 5060)
    return Target(transport if transport in DEFAULT_PORTS else "udp", host, port)


_DECIMAL: Final = [b"%d" % i for i in range(256)]  # Max-Forwards values (0-255)


@lru_cache(maxsize=4096)
def _ip(host: str) -> IPv4Address | IPv6Address:
    try:
        return ip_address(host)
    except ValueError:
        return IPv4Address(0)


__all__ = ["Proxy", "parse_uri"]
