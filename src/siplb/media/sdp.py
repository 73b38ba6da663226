"""The little of SDP (RFC 4566) the proxy reads, and the one change it makes: the body.

The proxy never rewrites SDP itself; the engine does. It only needs to know whether a message
carries an SDP body it may hand over (``Content-Type: application/sdp``; a multipart body is
left alone: the engine would have to rewrite one part of it and the proxy would have to rebuild
the MIME structure), which connection addresses the body names (``c=`` lines, for the NAT test)
and how to put the engine's body in place with a correct ``Content-Length``, every other byte
of the message as it was.
"""

from __future__ import annotations

from functools import lru_cache
from ipaddress import ip_address, ip_network
from typing import Final, TypeVar

from siplb.sip import DEFAULT_LIMITS, Edit, Limits, Message, ParseError, parse

M = TypeVar("M", bound=Message)

SDP_TYPE: Final = b"application/sdp"

# RFC 1918, RFC 6598 shared address space, link-local, RFC 4193 unique local, IPv6 link-local:
# an address a phone may name in its SDP that nobody outside its network can send to
PRIVATE_NETWORKS: Final = tuple(
    ip_network(net)
    for net in (
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "169.254.0.0/16",
        "fc00::/7",
        "fe80::/10",
    )
)


def is_sdp(message: Message) -> bool:
    """A non-empty body whose Content-Type is ``application/sdp`` (parameters ignored)."""
    if not message.body:
        return False
    value = message.get(b"content-type")
    if value is None:
        return False
    return value.split(b";", 1)[0].strip().lower() == SDP_TYPE


def connection_addresses(body: bytes) -> list[str]:
    """The addresses of the ``c=`` lines (session and media level), in order."""
    found: list[str] = []
    for line in body.splitlines():
        if line.startswith(b"c="):
            parts = line[2:].split()
            if len(parts) >= 3:
                found.append(parts[2].split(b"/", 1)[0].decode("latin-1"))
    return found


@lru_cache(maxsize=4096)
def is_private(host: str) -> bool:
    """An address only its own network can reach (False for names and garbage)."""
    try:
        address = ip_address(host)
    except ValueError:
        return False
    return any(address in net for net in PRIVATE_NETWORKS if net.version == address.version)


def names_private(body: bytes) -> bool:
    """Some ``c=`` line of the SDP names a private address."""
    return any(is_private(address) for address in connection_addresses(body))


def with_body(message: M, body: bytes, limits: Limits = DEFAULT_LIMITS) -> M:
    """``message`` with ``body`` instead of its own and its Content-Length set to match (added
    when it had none); every other byte as it was. ``ParseError`` when the result is no longer
    a message the parser takes (a body over the limits)."""
    edit = Edit(message)
    edit.set(b"Content-Length", b"%d" % len(body))
    raw = edit.apply().to_bytes()
    head = raw[: len(raw) - len(message.body)]
    out = parse(head + body, limits)
    if type(out) is not type(message):  # pragma: no cover - the start line is kept as it was
        raise ParseError("the message changed kind")
    return out
