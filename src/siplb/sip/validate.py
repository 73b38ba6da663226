"""Semantic checks on a parsed request (RFC 3261 8.2 and 16.3): a proxy answers 400 on failure."""

from __future__ import annotations

from .errors import ParseError
from .message import Request

MANDATORY = (b"to", b"from", b"call-id", b"cseq", b"via")


def validate_request(request: Request) -> None:
    """Raise ``ParseError`` (hint 400, or 416 for an unsupported URI scheme) on a request that
    parses but cannot be processed: a mandatory header missing, CSeq method not matching, a
    malformed Via/From/To/CSeq/Max-Forwards, or a Request-URI that is not a URI."""
    for name in MANDATORY:
        if not request.has(name):
            raise ParseError(f"missing mandatory header {name.decode()}")
    cseq = request.cseq
    if cseq.method != request.method:
        raise ParseError("CSeq method does not match the request method")
    request.max_forwards  # noqa: B018 - parses and checks the value
    request.top_via()
    from_ = request.name_addr(b"from")
    to = request.name_addr(b"to")
    if from_ is None or to is None:  # pragma: no cover - checked above
        raise ParseError("missing From or To")
    if request.call_id == b"":
        raise ParseError("empty Call-ID")
    request.parsed_uri()
