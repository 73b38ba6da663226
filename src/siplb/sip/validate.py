"""Semantic checks on a parsed message: what a proxy needs before it acts on one.

``parse`` checks framing and the start line only; these functions read the typed views a proxy
relies on and raise ``ParseError`` (hint 400, or 416 for a Request-URI scheme we cannot route) on
the first fault. A request that fails is answered with that status (RFC 3261 16.3: "reasonable
syntax"); a response that fails is dropped.
"""

from __future__ import annotations

import re
from typing import Final

from .errors import ParseError
from .headers import split_elements
from .message import Message, Request, Response
from .nameaddr import parse_name_addr
from .uri import SipUri
from .via import MAGIC_COOKIE

# RFC 3261 8.1.1: every request and response carries these.
MANDATORY: Final = (b"to", b"from", b"call-id", b"cseq", b"via")
# RFC 3261 7.3.1: headers that are not lists appear at most once. The parser checks
# Content-Length (framing depends on it); RFC 4475 3.3.8 shows the others.
SINGLETONS: Final = (b"to", b"from", b"call-id", b"cseq", b"max-forwards")
# Request-URI schemes a proxy can route (RFC 3261 16.3 step 1; tel is passed on to the PBX).
ROUTABLE_SCHEMES: Final = frozenset({"sip", "sips", "tel"})
# Call-ID = word [ "@" word ] (RFC 3261 25.1).
_WORD: Final = rb"[A-Za-z0-9\-.!%*_+`'~()<>:\\\"/\[\]?{}]+"
_CALL_ID_RE: Final = re.compile(_WORD + rb"(?:@" + _WORD + rb")?")


def validate_request(request: Request) -> None:
    """Raise ``ParseError`` (hint 400, or 416 for an unsupported URI scheme) on a request that
    parses but cannot be processed: a mandatory header missing or a singleton header repeated,
    CSeq method not matching the request method, a malformed Via/From/To/CSeq/Max-Forwards/
    Call-ID/Contact/Route, a branch that is the magic cookie alone, or a Request-URI that is not
    a URI, has a scheme we cannot route, or carries headers."""
    _check_common(request)
    if request.cseq.method != request.method:
        raise ParseError("CSeq method does not match the request method")
    request.max_forwards  # noqa: B018 - parses and checks the value
    for name in (b"contact", b"route"):
        if request.has(name):
            _check_addresses(request, name)
    uri = request.parsed_uri()
    if uri.scheme not in ROUTABLE_SCHEMES:
        raise ParseError(f"unsupported URI scheme {uri.scheme!r}", 416)
    if isinstance(uri, SipUri) and uri.headers:  # RFC 3261 19.1.1; RFC 4475 3.1.2.11
        raise ParseError("headers in the Request-URI")


def validate_response(response: Response) -> None:
    """Raise ``ParseError`` on a response a proxy must drop (RFC 4475 3.1.2.5): a mandatory
    header missing or a singleton repeated, a malformed Via/From/To/CSeq/Call-ID."""
    _check_common(response)
    response.cseq  # noqa: B018 - parses and checks the value


def _check_common(message: Message) -> None:
    _check_names(message._keys)
    message.cseq  # noqa: B018 - parses and checks the value
    call_id = message.call_id
    if not call_id or _CALL_ID_RE.fullmatch(call_id) is None:
        raise ParseError("malformed Call-ID")
    for via in message.vias():
        via.params  # noqa: B018 - parses and checks the parameters
        if via.branch == MAGIC_COOKIE:  # RFC 4475 3.2.1: the cookie and nothing else
            raise ParseError("Via branch is the magic cookie alone")
    for name in (b"from", b"to"):
        message.name_addr(name)


# Sequences of header names found complete (``_check_names``), by identity: the parser shares
# one list per sequence of names, so a proxy checks each kind of message once. Each list is kept
# with its id so that the id cannot be reused while it is here; the table is emptied when full.
_NAMES_OK: Final[dict[int, list[bytes]]] = {}
_NAMES_OK_MAX: Final = 1024


def _check_names(keys: list[bytes]) -> None:
    """Mandatory headers present, singleton headers not repeated (RFC 3261 8.1.1, 7.3.1)."""
    if _NAMES_OK.get(id(keys)) is keys:
        return
    for name in MANDATORY:
        if name not in keys:
            raise ParseError(f"missing mandatory header {name.decode()}")
    for name in SINGLETONS:
        if keys.count(name) > 1:
            raise ParseError(f"{name.decode()} appears more than once")
    if len(_NAMES_OK) >= _NAMES_OK_MAX:
        _NAMES_OK.clear()
    _NAMES_OK[id(keys)] = keys


def _check_addresses(message: Message, name: bytes) -> None:
    for value in message.get_all(name):
        if name == b"contact" and value == b"*":  # RFC 3261 10.2.2: remove every binding
            continue
        for part in split_elements(value):  # an empty element is an error here
            parse_name_addr(part)
