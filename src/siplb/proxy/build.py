"""Messages the proxy makes itself: responses (8.2.6), ACK for non-2xx (17.1.1.3), CANCEL (9.1)."""

from __future__ import annotations

import hashlib
from functools import lru_cache
from typing import Final

from siplb.sip import Request, Response

REASONS: Final[dict[int, bytes]] = {
    100: b"Trying",
    200: b"OK",
    400: b"Bad Request",
    403: b"Forbidden",
    404: b"Not Found",
    408: b"Request Timeout",
    416: b"Unsupported URI Scheme",
    420: b"Bad Extension",
    421: b"Extension Required",
    430: b"Flow Failed",
    480: b"Temporarily Unavailable",
    481: b"Call/Transaction Does Not Exist",
    482: b"Loop Detected",
    483: b"Too Many Hops",
    487: b"Request Terminated",
    500: b"Server Internal Error",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Server Time-out",
    505: b"Version Not Supported",
    513: b"Message Too Large",
}


def make_response(
    request: Request,
    status: int,
    *,
    to_tag: bytes | None = None,
    reason: bytes | None = None,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> Response:
    """A response to ``request`` (RFC 3261 8.2.6.2): Via, From, To, Call-ID, CSeq copied.

    ``to_tag`` is added to To when the request has none (not for 100, which never carries one).
    """
    headers = _response_headers(request, status, to_tag, extra)
    return Response.build(status, reason or REASONS.get(status, b"Unknown"), headers)


def response_bytes(
    request: Request,
    status: int,
    *,
    to_tag: bytes | None = None,
    reason: bytes | None = None,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> bytes:
    """``make_response(...).to_bytes()`` without building the message: the proxy's own answers
    (100 Trying on every INVITE) are only sent, never read."""
    lines = [b"SIP/2.0 %d %s" % (status, reason or REASONS.get(status, b"Unknown"))]
    lines.extend(b"%s: %s" % pair for pair in _response_headers(request, status, to_tag, extra))
    lines.append(b"\r\n")
    return b"\r\n".join(lines)


def _response_headers(
    request: Request,
    status: int,
    to_tag: bytes | None,
    extra: list[tuple[bytes, bytes]] | None,
) -> list[tuple[bytes, bytes]]:
    headers: list[tuple[bytes, bytes]] = [(b"Via", via) for via in request.get_all(b"via")]
    for name in (b"From", b"To", b"Call-ID", b"CSeq"):
        value = request.get(name)
        if value is None:
            continue
        if name == b"To" and to_tag is not None and status != 100 and request.to_tag is None:
            value += b";tag=" + to_tag
        headers.append((name, value))
    if extra:
        headers.extend(extra)
    headers.append((b"Server", b"siplb"))
    headers.append((b"Content-Length", b"0"))
    return headers


def make_ack(request: Request, response: Response) -> Request:
    """The ACK a client transaction sends for a 3xx-6xx final response (RFC 3261 17.1.1.3)."""
    headers: list[tuple[bytes, bytes]] = [(b"Via", request.get_all(b"via")[0])]
    headers.extend((b"Route", value) for value in request.get_all(b"route"))
    headers.append((b"Max-Forwards", b"70"))
    _copy(headers, request, b"From", b"Call-ID")
    to = response.get(b"to")
    if to is not None:
        headers.append((b"To", to))
    headers.append((b"CSeq", b"%d ACK" % request.cseq.number))
    headers.append((b"Content-Length", b"0"))
    return Request.build("ACK", request.uri, headers)


def make_cancel(request: Request) -> Request:
    """The CANCEL for a forwarded INVITE (RFC 3261 9.1): same branch, same Route set."""
    headers: list[tuple[bytes, bytes]] = [(b"Via", request.get_all(b"via")[0])]
    headers.extend((b"Route", value) for value in request.get_all(b"route"))
    headers.append((b"Max-Forwards", b"70"))
    _copy(headers, request, b"From", b"To", b"Call-ID")
    headers.append((b"CSeq", b"%d CANCEL" % request.cseq.number))
    headers.append((b"Content-Length", b"0"))
    return Request.build("CANCEL", request.uri, headers)


def _copy(headers: list[tuple[bytes, bytes]], request: Request, *names: bytes) -> None:
    for name in names:
        value = request.get(name)
        if value is not None:
            headers.append((name, value))


@lru_cache(maxsize=4096)
def _local_tag_text(key: tuple[str, ...]) -> str:
    return hashlib.blake2b("/".join(key).encode(), digest_size=6).hexdigest()


def local_tag(key: tuple[str, ...]) -> bytes:
    """The To tag of our own answers to the server transaction ``key``: the same for a
    retransmission, so its ACK is known."""
    return _local_tag_text(key).encode()
