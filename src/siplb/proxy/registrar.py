"""The registrar front end: Path (RFC 3327) with the phone's received address, and the way back.

A REGISTER that siplb forwards to a registrar set gets our Path entry (two when it changes
listener, like Record-Route). When the phone is behind NAT (its source address differs from its
Via sent-by, or a Contact names a private address) or came over a stream transport, the entry
on top carries ``received=sip:IP:PORT;transport=T`` (escaped), as Kamailio's
``add_path_received`` does: the registrar stores it with the binding and needs no NAT knowledge.

A request whose Route names one of our Path entries (the ``path`` flag tells them from
Record-Route entries) is on its way to a registered phone: it goes to the received address over
the same transport (for TCP and TLS over the phone's own connection, RFC 5626 flow reuse: a
``Target`` with ``flow=True`` the shell never opens a connection for), else by its Request-URI.

RFC 5626 outbound: a REGISTER whose Contact has a ``reg-id`` and that comes straight from the
phone (one Via: we are its first hop, its edge proxy) gets, on the Path entry of the listener it
came in on, a flow token in the user part (the flow it arrived on) and ``ob`` (5.1). A request
along that Path goes over that flow, whatever the Request-URI says (5.3); when the flow fails the
answer is 430 Flow Failed, which tells the registrar's side to try the phone's other flow.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from ipaddress import ip_address

from siplb.media.sdp import is_private
from siplb.settings import RegistrarSettings
from siplb.sip import (
    Edit,
    NameAddr,
    ParseError,
    Request,
    Response,
    SipUri,
    Via,
    parse_name_addr,
    parse_sip_uri,
)

from .actions import RegistrarLacksPath, Target
from .context import Context
from .keepalive import Keepalive
from .listeners import DEFAULT_PORTS, Listener
from .transaction import ServerTransaction

PATH_FLAG = "path"  # marks our Path URIs (a Record-Route entry has no such parameter)
RECEIVED = "received"
OB = "ob"  # RFC 5626 5.1: the first hop's Path URI, with a flow token
MAX_EXPIRES = 2**32 - 1


def check_register(request: Request) -> None:
    """RFC 3261 10.3 / 20.10, RFC 3327 4: every Contact and Path value must parse; else 400."""
    for value in request.values(b"contact"):
        if value.strip() == b"*":
            if request.count(b"contact") != 1 or len(request.values(b"contact")) != 1:
                raise ParseError("Contact '*' must be alone (RFC 3261 10.2.2)")
            continue
        contact = _name_addr(value, "Contact")
        expires = contact.params.get("expires")
        if expires is not None and (not expires.isdigit() or int(expires) > MAX_EXPIRES):
            raise ParseError(f"malformed Contact expires {expires!r}")
    for value in request.values(b"path"):
        if not isinstance(_name_addr(value, "Path").parsed_uri(), SipUri):
            raise ParseError("Path URI is not a SIP URI")


def _name_addr(value: bytes, what: str) -> NameAddr:
    try:
        addr = parse_name_addr(value)
        addr.parsed_uri()
    except ParseError as exc:
        raise ParseError(f"malformed {what}: {exc.reason}") from None
    return addr


def sent_elsewhere(via: Via, source: Target) -> bool:
    """The message came from an address other than its top Via's sent-by (Kamailio's
    ``nat_uac_test`` flags 2 and 16): a NAT rewrote its source."""
    return via.host != source.host or (via.port or DEFAULT_PORTS[source.transport]) != source.port


def behind_nat(request: Request, via: Via, source: Target) -> bool:
    """Kamailio's ``nat_uac_test``: the source differs from the Via sent-by (flags 2 and 16), or a
    Contact names a private address (flag 1)."""
    if sent_elsewhere(via, source):
        return True
    if is_private(source.host) or not request.has(b"contact"):
        return False  # a private Contact behind a private source is no sign of NAT
    for contact in request.values(b"contact"):
        try:
            uri = parse_name_addr(contact).parsed_uri()
        except ParseError:
            continue
        if isinstance(uri, SipUri) and is_private(uri.host):
            return True
    return False


def received_uri(source: Target) -> str:
    """``sip:IP:PORT`` plus ``;transport=`` for streams: the phone's flow as a SIP URI."""
    host = f"[{source.host}]" if ":" in source.host else source.host
    uri = f"sip:{host}:{source.port}"
    return uri if source.transport == "udp" else f"{uri};transport={source.transport}"


def path_entry(listener: Listener, received: Target | None, flow: Target | None = None) -> bytes:
    """One of our Path values on ``listener``; with ``received`` (escaped as a URI parameter);
    with ``flow`` as an RFC 5626 flow token in the user part, and ``ob``."""
    params: dict[str, str | None] = {}
    if listener.transport != "udp":
        params["transport"] = listener.transport
    params["lr"] = None
    if flow is not None:
        params[OB] = None
    params[PATH_FLAG] = None
    if received is not None:
        params[RECEIVED] = received_uri(received)
    host = listener.public_host
    user = None if flow is None else flow_token(flow)
    uri = SipUri("sip", host.lower(), listener.public_port, user=user, params=params)
    return b"<" + uri.to_bytes() + b">"


def flow_token(flow: Target) -> bytes:
    """RFC 5626 5.2: the flow a phone registered on, as an opaque user part (base64url of
    ``transport host port``: unreserved characters only, IPv6 hosts included)."""
    text = f"{flow.transport} {flow.host} {flow.port}".encode("ascii")
    return base64.urlsafe_b64encode(text).rstrip(b"=")


def token_flow(token: bytes) -> Target:
    """The flow a ``flow_token`` names; ``ParseError`` (403, RFC 5626 5.3) when it is none of
    ours or was changed on the way."""
    try:
        text = base64.urlsafe_b64decode(token + b"=" * (-len(token) % 4)).decode("ascii")
        transport, host, port = text.split(" ")
        number = int(port)
        ip_address(host)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ParseError("malformed flow token in our Path entry", 403) from None
    if transport not in DEFAULT_PORTS or not 0 < number < 65536:
        raise ParseError("malformed flow token in our Path entry", 403)
    return Target(transport, host, number, flow=True)


def wants_outbound(request: Request) -> bool:
    """RFC 5626 5.1: a REGISTER from a phone that uses outbound (a Contact with ``reg-id``)
    whose first hop we are (its only Via is the phone's)."""
    if not request.has(b"contact") or len(request.values(b"via")) != 1:
        return False
    for value in request.values(b"contact"):
        try:
            if "reg-id" in parse_name_addr(value).params:
                return True
        except ParseError:
            continue
    return False


def add_path(
    edit: Edit[Request],
    incoming: Listener,
    outgoing: Listener,
    source: Target,
    *,
    nat: bool,
    outbound: bool = False,
) -> None:
    """RFC 3327 5.1: our Path entries on top (two when the REGISTER changed listener), the first
    with the phone's flow when it is behind NAT or came over a stream (its connection is the only
    way back). The first: Kamailio's ``path_use_received`` reads the first Path URI. With
    ``outbound`` (RFC 5626 5.1) the entry of the listener the phone came in on carries its flow
    token and ``ob``."""
    received = source if nat or source.reliable else None
    flow = source if outbound else None
    if incoming.index != outgoing.index:
        edit.add_first(b"Path", path_entry(incoming, None, flow))
        flow = None
    edit.add_first(b"Path", path_entry(outgoing, received, flow))


def is_path_uri(uri: SipUri) -> bool:
    return PATH_FLAG in uri.params


def flow_of(uri: SipUri) -> Target | None:
    """The phone's flow a Path URI of ours carries in ``received``; ``ParseError`` when garbled."""
    raw = uri.params.get(RECEIVED)
    if not raw:
        return None
    try:
        received = parse_sip_uri(raw.encode("latin-1"))
    except (ParseError, UnicodeEncodeError):
        raise ParseError("malformed received in our Path entry") from None
    transport = received.transport
    if transport not in DEFAULT_PORTS:
        raise ParseError(f"unsupported transport {transport} in our Path entry")
    port = received.port or DEFAULT_PORTS[transport]
    return Target(transport, received.host, port, flow=True)


def path_next_hop(popped: Sequence[SipUri], ruri: object) -> Target | None:
    """Where a request goes that followed our Path: the received flow one of our Path entries
    carries, else its Request-URI; ``None`` if no entry we popped was a Path entry."""
    paths = [uri for uri in popped if is_path_uri(uri)]
    if not paths:
        return None
    for uri in paths:  # RFC 5626 5.3: the flow token first, over that flow only
        if uri.user is not None:
            return token_flow(uri.user)
    for uri in paths:
        flow = flow_of(uri)
        if flow is not None:
            return flow
    if not isinstance(ruri, SipUri):
        raise ParseError("Request-URI of a request to a registered phone is not SIP", 416)
    transport = ruri.transport if ruri.transport in DEFAULT_PORTS else "udp"
    host = ruri.params.get("maddr") or ruri.host
    return Target(transport, host, ruri.port or DEFAULT_PORTS[transport])


def lacks_path_support(status: int, unsupported: Sequence[bytes]) -> bool:
    """A 420 naming ``path`` in Unsupported: the registrar does not do RFC 3327."""
    return status == 420 and any(
        token.strip().lower() == b"path" for value in unsupported for token in value.split(b",")
    )


def supports_path(request: Request) -> bool:
    """The UA listed ``path`` in Supported (RFC 3327 5.1)."""
    return any(
        token.strip().lower() == b"path"
        for value in request.values(b"supported")
        for token in value.split(b",")
    )


DEFAULT_EXPIRES = 3600  # RFC 3261 10.2.1.1: a registrar's usual default


class FrontEnd:
    """The registrar front end of one proxy core: checks and Path on the way to the registrar,
    bindings (for keepalives) and Path support learnt from its answers."""

    def __init__(self, context: Context, settings: RegistrarSettings) -> None:
        self.context = context
        self.settings = settings
        self.keepalive = (
            Keepalive(
                context,
                interval=settings.keepalive_interval,
                misses=settings.keepalive_misses,
                max_bindings=settings.max_bindings,
            )
            if settings.keepalive_interval > 0
            else None
        )

    def knows_flow(self, flow: Target) -> bool:
        """Whether a phone registered through us on ``flow`` (its binding is kept)."""
        return self.keepalive is not None and flow in self.keepalive.bindings

    def check(self, request: Request) -> tuple[int, str] | None:
        """A REGISTER we must refuse: (status, cause), or None. Malformed Contact/Path: 400."""
        try:
            check_register(request)
        except ParseError as exc:
            return 400, exc.reason
        if self.settings.path and self.settings.require_supported and not supports_path(request):
            # RFC 3327 5.1: the proxy requires Path support and the UA did not indicate it
            return 421, "the phone does not support Path"
        return None

    def outgoing(
        self, server: ServerTransaction, edit: Edit[Request], incoming: int, out: int
    ) -> None:
        """A REGISTER leaving for a registrar: our Path entries, and Require: path."""
        if not self.settings.path:
            return
        listeners = self.context.listeners
        request = edit.message
        try:
            nat = behind_nat(request, request.top_via(), server.source)
        except ParseError:  # pragma: no cover - the Via was checked on arrival
            nat = True
        outbound = wants_outbound(request)
        add_path(
            edit, listeners[incoming], listeners[out], server.source, nat=nat, outbound=outbound
        )
        if self.settings.require_path:  # RFC 3327 5.1: a registrar without Path answers 420
            edit.add_first(b"Require", b"path")

    def final(
        self, server: ServerTransaction, response: Response, registrar: str | None, now: float
    ) -> Response:
        """A final response to a REGISTER we forwarded: learn the binding, notice a registrar
        that does not do Path; returns the response to send upstream."""
        status = response.status
        if lacks_path_support(status, response.values(b"unsupported")):
            return self._refused_path(response, registrar or "?", "420 Unsupported: path")
        request = server.request
        if not 200 <= status < 300 or request is None:  # None: answered already
            return response
        if self.settings.path and supports_path(request) and not _names_path(response):
            # RFC 3327 5.3: a registrar that stored our Path echoes it to a UA that supports it
            self._lacks_path(registrar or "?", "2xx to REGISTER without our Path")
        if self.keepalive is not None:
            self._learn(server, request, response, now)
        return response

    def _refused_path(self, response: Response, registrar: str, cause: str) -> Response:
        self._lacks_path(registrar, cause)
        headers = [
            (name, value) for name, value in response.headers if name.lower() != b"unsupported"
        ]
        headers.append((b"Warning", b'399 siplb "registrar does not support Path (RFC 3327)"'))
        return Response.build(500, b"Registrar Does Not Support Path", headers, response.body)

    def _lacks_path(self, registrar: str, cause: str) -> None:
        self.context.stats["registrar_without_path"] += 1
        self.context.emit(RegistrarLacksPath(registrar, cause))

    def _learn(
        self, server: ServerTransaction, request: Request, response: Response, now: float
    ) -> None:
        keepalive = self.keepalive
        assert keepalive is not None
        flow = Target(server.source.transport, server.source.host, server.source.port, flow=True)
        contacts = request.values(b"contact")
        if not contacts:
            return  # a query for the bindings
        if contacts[0].strip() == b"*":
            keepalive.forget(flow)
            return
        to = request.name_addr(b"to")
        aor = to.uri if to is not None else b""
        bound = {_uri_key(addr.uri): addr for addr in _addrs(response.values(b"contact"))}
        default = response.expires if response.expires is not None else request.expires
        for mine in _addrs(contacts):
            theirs = bound.get(_uri_key(mine.uri))
            if theirs is None:
                expires = 0  # the registrar removed it (or never stored it)
            else:
                expires = _expires(theirs) or _expires(mine) or default or DEFAULT_EXPIRES
                if _expires(theirs) == 0:
                    expires = 0
            keepalive.learned(flow, server.listener, aor, mine.uri, expires, now)
            return  # one flow, one binding to keep open


def _names_path(response: Response) -> bool:
    for addr in _addrs(response.values(b"path")):
        uri = addr.parsed_uri()
        if isinstance(uri, SipUri) and is_path_uri(uri):
            return True
    return False


def _addrs(values: Sequence[bytes]) -> list[NameAddr]:
    out = []
    for value in values:
        try:
            out.append(parse_name_addr(value))
        except ParseError:
            continue
    return out


def _uri_key(uri: bytes) -> bytes:
    return uri.strip().lower()


def _expires(addr: NameAddr) -> int | None:
    value = addr.params.get("expires")
    return int(value) if value is not None and value.isdigit() else None
