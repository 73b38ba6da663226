"""Requests that come back to siplb: never forwarded to itself, a loop answered 482.

Two rules, each cheap enough for every request:

- **Nowhere to go but here.** A next hop that is one of our own sockets (a Request-URI
  ``sip:service@<siplb>`` on an in-dialog request without Route, as SIPp's built-in ``uac``
  scenario sends its BYE) would come straight back, once per Max-Forwards: one datagram became
  about 70, and nothing was logged. ``is_self`` names such a target; the request gets 404 (an ACK
  is dropped), never a copy sent to ourselves. A wildcard listener (``0.0.0.0:5060``) is every
  local address at its port; of those the core knows the loopback ones by their form.
- **Loop detection** (RFC 3261 16.3 step 4). A request that carries a Via of ours has passed us
  before: it spirals (sent back by a destination with another Request-URI: processed as new)
  or it loops (comes back as we sent it). Our branches are not a hash of the request (16.6 step 8
  makes that optional), so ``looped`` compares with the request our client transaction sent,
  which is still live while the request travels: the same Request-URI means a loop, 482.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from ipaddress import ip_address

from siplb.sip import ParseError, Request

from .actions import Target
from .listeners import Listener, is_wildcard


def is_self(target: Target, listeners: Sequence[Listener]) -> bool:
    """Whether a request sent to ``target`` would reach one of our own listeners."""
    host = target.host.lower()
    for listener in listeners:
        if target.port not in (listener.port, listener.public_port):
            continue
        if host in (listener.host.lower(), listener.public_host.lower()):
            return True
        if is_wildcard(listener.host) and _loopback(host):
            return True
    return False


def looped(
    request: Request, branch_prefix: str, sent: Callable[[str, str], Request | None]
) -> bool:
    """16.3 step 4: ``request`` carries a Via of ours (a branch with ``branch_prefix``) whose
    client transaction ``sent(branch, method)`` is still live with the same Request-URI."""
    if request.method == "ACK":  # never answered; it has no client transaction of its own
        return False
    marker = branch_prefix.encode("ascii")
    if not any(marker in value for value in request.get_all(b"via")):
        return False  # the common case: no Via of ours, no Via parsed
    try:
        vias = request.vias()
    except ParseError:
        return False
    for via in vias:
        branch = via.branch
        if branch is None or not branch.startswith(branch_prefix):
            continue
        forwarded = sent(branch, request.method)
        if forwarded is not None and forwarded.uri == request.uri:
            return True
    return False


def _loopback(host: str) -> bool:
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False
