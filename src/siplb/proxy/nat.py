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

from siplb.sip import Edit, Message, ParseError, Request, SipUri, parse_name_addr

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
    edit = Edit(message)
    alias_contacts(edit, source)
    return edit.apply()


def alias_contacts(edit: Edit[M], source: Target) -> None:
    """``add_contact_alias`` as part of a larger edit: the Contact lines, aliased, go on top."""
    message = edit.message
    values = message.values(b"contact") if message.has(b"contact") else []
    out: list[bytes] = []
    changed = False
    for value in values:
        new = _aliased(value, source)
        changed = changed or new is not value
        out.append(new)
    if not changed:
        return
    edit.remove(b"contact")
    for value in reversed(out):
        edit.add_first(b"Contact", value)


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
    found = alias_target(request.parsed_uri())
    if found is None:
        return None
    return request.with_uri(found[0]), found[1]


def alias_target(uri: object) -> tuple[bytes, Target] | None:
    """``ruri_alias`` for a parsed Request-URI: the URI without the alias, and its target."""
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
    stripped = replace(uri, params=params).to_bytes()
    return stripped, Target(transport, host.strip("[]"), int(port), flow=True)
