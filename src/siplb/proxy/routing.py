"""Where a request goes (RFC 3261 16.4-16.6), as functions that return a value.

    routed = preprocess(request, via, source, rules)     # loose routing, Max-Forwards, rport
    refusal = check_route(request, routed, source, rules)  # no open relay (docs/design.md 4)
    rule = select_rule(request, source, routes)          # None: the default set
    key = hash_input(request, spec)

Nothing here keeps state: ``RouteRules`` names what routing reads (our names, the registrar front
end, what is trusted), and every answer is a frozen dataclass (``Routed``, ``Refusal``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Final

from siplb.dispatch import Destination, HashKey, SetSpec
from siplb.settings import RouteRule
from siplb.sip import (
    Edit,
    NameAddr,
    ParseError,
    Request,
    SipUri,
    Via,
    parse_name_addr,
    parse_uri,
)

from .actions import Target
from .listeners import DEFAULT_PORTS, Listener, LocalNames
from .loops import is_self
from .nat import alias_contacts, alias_target
from .registrar import FrontEnd, behind_nat, path_next_hop


@dataclass(frozen=True, slots=True)
class Routed:
    """Where a request goes: ``next_hop`` by Route, Request-URI or the registrar front end
    (``phone``), or None to dispatch to a set; ``hop_listener`` is the listener our last Route
    entry named; ``edit`` makes the request to forward; ``via_us``: the Route set began with
    our own entry (an outbound proxy or Service-Route set, RFC 3608)."""

    edit: Edit[Request]
    next_hop: Target | None
    hop_listener: int | None
    initial: bool
    phone: bool = False
    via_us: bool = False


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request gets one stateless answer (or, ``status`` None, is dropped silently)."""

    status: int | None
    cause: str
    label: str  # the counter: refused:<label>
    extra: list[tuple[bytes, bytes]] | None = None


@dataclass(frozen=True, slots=True)
class Dispatch:
    """A new dialog's set, hash input and first destination, or why there is none; ``media``:
    its route rule's anchoring, when it says."""

    set_name: str
    hash_input: bytes
    first: Destination | None
    refusal: Refusal | None
    media: str | None = None


@dataclass(frozen=True, slots=True)
class RouteRules:
    """What routing reads: our listeners and names, the default Max-Forwards, the registrar
    front end (None: none), which hosts may be relayed to and from, and the destination a
    call of the call table went to (by Call-ID; None: not one of ours)."""

    listeners: Sequence[Listener]
    names: LocalNames
    max_forwards: int
    front: FrontEnd | None
    trusted: Callable[[str], bool]
    call_destination: Callable[[bytes], tuple[str, Target] | None] = lambda call_id: None


_DECIMAL: Final = [b"%d" % i for i in range(256)]  # Max-Forwards values (0-255)


def preprocess(request: Request, via: Via, source: Target, rules: RouteRules) -> Routed:
    """Loose routing (16.4), Max-Forwards (16.6 step 3), received/rport (RFC 3581): the
    edit that makes the request to forward (one copy, made when it is needed) and where it
    goes. Raises ``ParseError`` for what cannot be routed."""
    names = rules.names
    routes = request.values(b"route") if request.has(b"route") else []
    hop_listener: int | None = None
    ruri = request.parsed_uri()
    if routes and isinstance(ruri, SipUri) and ruri.user is None:
        named = names.listener_for(ruri)
        if named is not None:  # 16.4: a strict router put our RR URI in the Request-URI
            last = parse_name_addr(routes[-1])
            routes = routes[:-1]
            request = _set_routes(request.with_uri(last.uri), routes)
            ruri = request.parsed_uri()
    edit = Edit(request)
    ours: list[SipUri] = []
    for value in routes:
        uri = parse_name_addr(value).parsed_uri()
        named = names.listener_for(uri) if isinstance(uri, SipUri) else None
        if named is None or not isinstance(uri, SipUri):
            break
        hop_listener = named.index
        ours.append(uri)
    if ours:
        edit.pop_top_values(b"route", len(ours))
        routes = routes[len(ours) :]
    mf = request.max_forwards
    edit.set(b"Max-Forwards", _DECIMAL[rules.max_forwards if mf is None else mf - 1])
    stamped = stamped_via(via, source)
    if stamped is not None:
        edit.replace_top_value(b"via", stamped)
    initial = request.to_tag is None
    if rules.front is not None:
        hop = towards_phone(edit, via, source, ours, ruri, initial, bool(routes), rules)
        if hop is not None:  # routed to a phone, never dispatched to a set
            return Routed(edit, hop, hop_listener, False, phone=True)
    if routes:
        first = parse_name_addr(routes[0]).parsed_uri()
        return Routed(edit, uri_target(first, None), None, initial, via_us=bool(ours))
    if initial:
        return Routed(edit, None, hop_listener, initial)
    if not names_us(ruri, names):
        hop_transport = (
            rules.listeners[hop_listener].transport if hop_listener is not None else None
        )
        target = uri_target(ruri, hop_transport)
        if not is_self(target, rules.listeners):
            return Routed(edit, target, hop_listener, initial)
    return Routed(edit, to_the_call(edit, ruri, source, rules), hop_listener, initial)


def to_the_call(
    edit: Edit[Request], ruri: object, source: Target, rules: RouteRules
) -> Target | None:
    """An in-dialog request for a user at siplb's own address without a Route (a caller that
    ignored our Record-Route, as SIPp's built-in ``uac`` scenario does with its ACK and BYE,
    ``sip:service@<siplb>``) would have nowhere to go; when its Call-ID is a call of ours from
    the other side, it goes to the destination of that call, its Request-URI aimed there (the
    user part kept). Anything else gets 404 (``check_route``), never a copy sent to ourselves;
    a Request-URI without a user part is for siplb itself (an OPTIONS gets 200)."""
    if not isinstance(ruri, SipUri) or ruri.user is None:
        return None
    call_id = edit.message.call_id
    found = rules.call_destination(call_id) if call_id is not None else None
    if found is None:
        return None
    uri, target = found
    if target.address == source.address:
        return None  # the destination itself: the way back is its own to know
    destination = parse_uri(uri.encode("latin-1"))
    if isinstance(destination, SipUri):
        edit.set_uri(replace(destination, user=ruri.user, password=None).to_bytes())
    return target


def towards_phone(
    edit: Edit[Request],
    via: Via,
    source: Target,
    ours: list[SipUri],
    ruri: object,
    initial: bool,
    routed: bool,
    rules: RouteRules,
) -> Target | None:
    """Registrar front end hooks: a request along our Path (RFC 3327) or to an aliased
    Request-URI goes to the phone's flow; a phone behind NAT gets its Contact aliased."""
    front = rules.front
    assert front is not None
    settings = front.settings
    request = edit.message
    if settings.contact_alias and request.method != "REGISTER" and behind_nat(request, via, source):
        alias_contacts(edit, source)
    if routed:
        return None
    if settings.contact_alias and not initial:
        aliased = alias_target(ruri)
        if aliased is not None:
            if not rules.trusted(source.host) and not front.knows_flow(aliased[1]):
                # ;alias= is honoured for the dialog's other side only (a destination), or
                # towards a phone registered through us: else anyone could name any address
                raise ParseError("an ;alias= Request-URI from a host that is no destination", 403)
            edit.set_uri(aliased[0])
            return aliased[1]
    if not ours:
        return None
    hop = path_next_hop(ours, ruri)
    if hop is not None and not rules.trusted(source.host):
        # only a registrar or proxy of ours may send along our Path: anyone else could have
        # us relay to any address they put in a Path URI
        raise ParseError("request along our Path from a host that is no destination", 403)
    return hop


def check_route(
    request: Request, routed: Routed, source: Target, rules: RouteRules
) -> Refusal | None:
    """No open relay (docs/design.md 4): a request goes only where its dialog can lead, and never
    to siplb itself (``loops.is_self``)."""
    hop = routed.next_hop
    if hop is not None and is_self(hop, rules.listeners):
        return Refusal(404, "addressed to siplb itself, with nowhere to go", "loop")
    if hop is None:
        if routed.initial or (request.method == "OPTIONS" and is_for_us(request, rules.names)):
            return None
        return Refusal(404, "no route for an in-dialog request", "no-route")
    if routed.phone:
        return None
    if routed.initial:
        if routed.via_us and rules.trusted(hop.host):
            # RFC 3608 Service-Route, an outbound proxy: a pre-loaded Route set of our own
            # entry, then a destination or trusted peer of ours, is loose-routed there (16.4)
            return None
        # A new dialog whose Route names another host: forwarding it would make the balancer
        # an open relay to anywhere. Kamailio's default script refuses it the same way.
        return Refusal(403, "preloaded Route to a host that is no destination", "relay")
    if request.method == "CANCEL":
        return None  # follows its INVITE's transaction, or gets 481
    if rules.trusted(source.host) or rules.trusted(hop.host):
        return None
    return Refusal(403, f"in-dialog request to {hop.host}, which is no destination", "relay")


def needs_destination(request: Request, routed: Routed, names: LocalNames) -> bool:
    """A new request for a destination set: not one routed by Route or Request-URI, not a
    CANCEL (it follows its INVITE), not an OPTIONS to siplb itself."""
    if routed.next_hop is not None or not routed.initial or request.method == "CANCEL":
        return False
    return request.method != "OPTIONS" or not is_for_us(request, names)


def select_rule(request: Request, source: Target, routes: Sequence[RouteRule]) -> RouteRule | None:
    """The first route rule that matches a new request (None: the default set's)."""
    if not routes:
        return None
    uri = request.parsed_uri()
    user = uri.user.decode("latin-1") if isinstance(uri, SipUri) and uri.user else None
    domain = uri.host if isinstance(uri, SipUri) else ""
    address = _ip(source.host)
    for rule in routes:
        if rule.matches(request.method, user, domain, address):
            return rule
    return None


def hash_input(request: Request, spec: SetSpec | None) -> bytes:
    """What the hash algorithm of ``spec`` hashes (empty for the other algorithms)."""
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


# ---- small rules -------------------------------------------------------------------------------
def uri_target(uri: object, fallback_transport: str | None) -> Target:
    """The next hop a URI names (RFC 3263 without DNS: transport, maddr or host, port)."""
    if not isinstance(uri, SipUri):
        raise ParseError("next hop is not a SIP URI", 416)
    transport = uri.params.get("transport")
    transport = transport.lower() if transport else fallback_transport or uri.transport
    if transport not in DEFAULT_PORTS:
        raise ParseError(f"unsupported transport {transport}", 503)
    host = uri.params.get("maddr") or uri.host
    return Target(transport, host, uri.port or DEFAULT_PORTS[transport])


def route_target(value: bytes) -> Target:
    """The next hop a Route header value names."""
    return uri_target(parse_name_addr(value).parsed_uri(), None)


def is_our_route(value: bytes, names: LocalNames) -> bool:
    """Whether a Route/Record-Route value names one of our listeners."""
    try:
        uri = parse_name_addr(value).parsed_uri()
    except ParseError:
        return False
    return isinstance(uri, SipUri) and names.listener_for(uri) is not None


def names_us(uri: object, names: LocalNames) -> bool:
    """Whether a URI names one of our listeners, with or without a user part: a request
    sent there would only come back to us (404 instead of a loop until Max-Forwards)."""
    return isinstance(uri, SipUri) and names.listener_for(uri) is not None


def is_for_us(request: Request, names: LocalNames) -> bool:
    """A request to siplb itself: a Request-URI without user part that names a listener."""
    try:
        uri = request.parsed_uri()
    except ParseError:
        return False
    return isinstance(uri, SipUri) and uri.user is None and names.listener_for(uri) is not None


def stamped_via(via: Via, source: Target) -> bytes | None:
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


@lru_cache(maxsize=4096)
def _ip(host: str) -> IPv4Address | IPv6Address:
    try:
        return ip_address(host)
    except ValueError:
        return IPv4Address(0)
