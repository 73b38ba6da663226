"""The SIP message layer: pure, bytes in and bytes out (docs/design.md section 2)."""

from .edit import Edit
from .errors import LocalProtocolError, MessageTooLarge, ParseError
from .framing import KEEPALIVE, Framed, FramingError, KeepAlive, Malformed, StreamFramer
from .headers import canonical, split_list
from .message import Message, Request, Response
from .nameaddr import NameAddr, parse_name_addr, tag_of
from .parser import DEFAULT_LIMITS, Limits, parse, parse_framed
from .scalars import CSeq, parse_cseq
from .uri import OpaqueUri, SipUri, Uri, parse_sip_uri, parse_uri
from .validate import validate_request, validate_response
from .via import MAGIC_COOKIE, Via, parse_via, parse_vias

__all__ = [
    "DEFAULT_LIMITS",
    "KEEPALIVE",
    "MAGIC_COOKIE",
    "CSeq",
    "Edit",
    "Framed",
    "FramingError",
    "KeepAlive",
    "Limits",
    "LocalProtocolError",
    "Malformed",
    "Message",
    "MessageTooLarge",
    "NameAddr",
    "OpaqueUri",
    "ParseError",
    "Request",
    "Response",
    "SipUri",
    "StreamFramer",
    "Uri",
    "Via",
    "canonical",
    "parse",
    "parse_cseq",
    "parse_framed",
    "parse_name_addr",
    "parse_sip_uri",
    "parse_uri",
    "parse_via",
    "parse_vias",
    "split_list",
    "tag_of",
    "validate_request",
    "validate_response",
]
