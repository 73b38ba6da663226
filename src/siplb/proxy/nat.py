"""Contact aliases for phones behind NAT (Kamailio's ``add_contact_alias``/``handle_ruri_alias``).

A phone behind NAT puts its private address in Contact; the far end then sends in-dialog
requests (BYE, re-INVITE) to that Request-URI, which nobody can reach. When a Contact names
another address than the one the message came from, we add ``;alias=IP~PORT~PROTO`` (PROTO 1
UDP, 2 TCP, 3 TLS, as Kamailio writes it) to its URI. An in-dialog request whose Request-URI
carries an alias goes to that address, over the phone's own flow, with the alias removed.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Final, TypeVar

from siplb.sip import Message, ParseError, Request, SipUri, parse_name_addr

from .actions import Target
from .listeners import DEFAULT_PORTS

ALIAS: Final = "alias"
PROTO_NUMBERS: Final = {"udp": "1", "tcp": "2", "tls": "3"}
PROTO_NAMES: Final = {number: name for name, number in PROTO_NUMBERS.items()}

M = TypeVar("M", bound=Message)


def alias_of(source: Target) -> str:
    return f"{source.host}~{source.port}~{PROTO_NUMBERS[source.transport]}"


def add_contact_alias(message: M, source: Target) -> M:
    """Each Contact URI that names another address than ``source`` gets our alias parameter."""
    values = message.values(b"contact") if message.has(b"contact") else []
    if not values:
        return message
    out: list[bytes] = []
    changed = False
    for value in values:
        new = _aliased(value, source)
        changed = changed or new is not value
        out.append(new)
    if not changed:
        return message
    edited = message.without_header(b"contact")
    for value in reversed(out):
        edited = edited.with_header_first(b"Contact", value)
    return edited


def _aliased(value: bytes, source: Target) -> bytes:
    try:
        addr = parse_name_addr(value)
        uri = addr.parsed_uri()
    except ParseError:
        return value  # not ours to judge; the validator refuses what matters
    if not isinstance(uri, SipUri) or ALIAS in uri.params:
        return value
    transport = uri.transport if uri.transport in DEFAULT_PORTS else "udp"
    port = uri.port or DEFAULT_PORTS[transport]
    if (uri.host, port, transport) == (source.host.lower(), source.port, source.transport):
        return value
    params = {**uri.params, ALIAS: alias_of(source)}
    return replace(addr, uri=replace(uri, params=params).to_bytes(), bracketed=True).to_bytes()


def ruri_alias(request: Request) -> tuple[Request, Target] | None:
    """``handle_ruri_alias``: the target an aliased Request-URI names, and the request without
    the alias; ``None`` when the Request-URI has no alias; ``ParseError`` when it is garbled."""
    uri = request.parsed_uri()
    if not isinstance(uri, SipUri):
        return None
    alias = uri.params.get(ALIAS)
    if alias is None:
        return None
    host, _, rest = alias.rpartition("~")  # host~port~proto; an IPv6 host holds no "~"
    host, _, port = host.partition("~")
    transport = PROTO_NAMES.get(rest)
    if transport is None or not port.isdigit() or not 0 < int(port) < 65536 or not host:
        raise ParseError(f"malformed alias {alias!r} in the Request-URI")
    params = {name: value for name, value in uri.params.items() if name != ALIAS}
    stripped = request.with_uri(replace(uri, params=params).to_bytes())
    return stripped, Target(transport, host.strip("[]"), int(port), flow=True)
