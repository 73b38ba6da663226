"""Scalar header values: CSeq, Content-Length, Max-Forwards, Expires (RFC 3261 20)."""

from __future__ import annotations

import re
from typing import Final, NamedTuple

from .errors import ParseError
from .headers import TOKEN, unfold

# Methods seen on every call, decoded once (RFC 3261, 3262, 3265, 3311, 3428, 3515, 3903, 6086).
METHODS: Final[dict[bytes, str]] = {
    m.encode(): m
    for m in (
        "INVITE",
        "ACK",
        "BYE",
        "CANCEL",
        "OPTIONS",
        "REGISTER",
        "PRACK",
        "UPDATE",
        "INFO",
        "SUBSCRIBE",
        "NOTIFY",
        "REFER",
        "MESSAGE",
        "PUBLISH",
    )
}
# Max-Forwards values as written in practice, without leading zeros (RFC 3261 20.22: 0-255).
SMALL_INTS: Final[dict[bytes, int]] = {str(i).encode(): i for i in range(256)}


class CSeq(NamedTuple):
    """RFC 3261 20.16: sequence number (below 2**31) and method."""

    number: int
    method: str


_tuple_new: Final = tuple.__new__
_LWS_RE: Final = re.compile(rb"[ \t]+")
_TOKEN_RE: Final = re.compile(TOKEN)


def parse_cseq(value: bytes) -> CSeq:
    """``CSeq = 1*DIGIT LWS Method``, number below 2**31 (RFC 3261 8.1.1.5, 20.16)."""
    number, _, method = value.partition(b" ")
    name = METHODS.get(method)
    if name is not None and number.isdigit() and len(number) < 10:
        return _tuple_new(CSeq, (int(number), name))
    parts = _LWS_RE.split(unfold(value).strip(b" \t"))
    if len(parts) != 2 or not parts[0].isdigit():
        raise ParseError("malformed CSeq")
    digits = parts[0].lstrip(b"0") or b"0"
    if len(digits) > 10 or int(digits) >= 2**31:
        raise ParseError("CSeq number out of range")
    if _TOKEN_RE.fullmatch(parts[1]) is None:
        raise ParseError("malformed CSeq method")
    return CSeq(int(digits), METHODS.get(parts[1]) or parts[1].decode("ascii"))


def parse_content_length(value: bytes) -> int:
    """RFC 3261 20.14 ``1*DIGIT`` (leading zeros allowed)."""
    if not value.isdigit():
        raise ParseError("malformed Content-Length")
    digits = value.lstrip(b"0") or b"0"
    if len(digits) > 10:
        raise ParseError("Content-Length out of range")
    return int(digits)


def bounded_int(value: bytes, maximum: int, what: str) -> int:
    """``1*DIGIT`` up to ``maximum`` (leading zeros allowed); ``ParseError`` naming ``what``."""
    if not value.isdigit():
        raise ParseError(f"malformed {what}")
    digits = value.lstrip(b"0") or b"0"
    if len(digits) > len(str(maximum)) or int(digits) > maximum:
        raise ParseError(f"{what} out of range")
    return int(digits)
