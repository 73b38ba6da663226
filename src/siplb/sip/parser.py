"""Bytes -> ``Request`` or ``Response`` (RFC 3261 section 7, 18.3 framing on datagrams).

The contract (docs/design.md section 5): ``parse(data)`` returns a message or raises ``ParseError``;
it never raises anything else.

What ``parse`` checks: the start line (method token, a Request-URI without white space or
controls, ``SIP/2.0`` or a 505 hint for another version; a three-digit status code from 100 to
699), that every header line is ``token ":" value`` or a continuation of the line above, that the
header block has no bare CR or LF, Content-Length (one, numeric, not past the end of the data)
and the limits. Header values are parsed only when asked for (the typed views), and
``validate_request`` checks what a proxy needs of a request.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from .errors import MessageTooLarge, ParseError
from .headers import TOKEN, canonical, canonical_lookup, is_token, key_for, unfold
from .message import (
    CRLF,
    Request,
    Response,
    first_positions,
    make_request,
    make_response,
)
from .scalars import METHODS


@dataclass(frozen=True, slots=True)
class Limits:
    """Refuse, with ``MessageTooLarge`` (hint 513), what is larger than this."""

    max_message_size: int = 65535
    max_headers: int = 256
    max_line_length: int = 8192


DEFAULT_LIMITS: Final = Limits()

_VERSION_RE: Final = re.compile(rb"SIP/([0-9]+)\.([0-9]+)", re.I)
# Splits a header block into [start line, name, value, name, value, ...] in one C call. A split
# point is a CRLF followed by a name and a colon; a continuation line (leading white space) or a
# line without a colon stays inside the value before it, and the CR/LF count check finds it.
_HEADER_SPLIT_RE: Final = re.compile(rb"\r\n([^:\r\n \t][^:\r\n]*):")
# Request-URI: no white space, controls or non-ASCII (RFC 4475 3.1.2.7, 3.1.2.8).
_URI_BAD_RE: Final = re.compile(rb"[\x00-\x20\x7f-\xff]")
# The usual request line in one C call: a method token, a URI of printable ASCII, SIP/2.0.
_REQUEST_LINE_RE: Final = re.compile(rb"(" + TOKEN + rb") ([\x21-\x7e]+) SIP/2\.0")
_SIP_2_0: Final = b"SIP/2.0"
_CL: Final = key_for(b"content-length")


def parse(data: bytes, limits: Limits = DEFAULT_LIMITS) -> Request | Response:
    """Parse one datagram's worth of SIP.

    A body is exactly Content-Length bytes; bytes after it are discarded (RFC 3261 18.3). Without
    a Content-Length, the body runs to the end of the data.
    """
    try:
        return _parse(data, limits, False)
    except ParseError:
        raise
    except Exception as exc:  # pragma: no cover - the fuzz property keeps this unreachable
        raise ParseError(f"unparseable message ({type(exc).__name__})") from exc


def parse_framed(data: bytes, limits: Limits = DEFAULT_LIMITS) -> Request | Response:
    """Parse a message that a stream framer has cut out exactly (Content-Length is required)."""
    try:
        return _parse(data, limits, True)
    except ParseError:
        raise
    except Exception as exc:  # pragma: no cover
        raise ParseError(f"unparseable message ({type(exc).__name__})") from exc


def _parse(data: bytes, limits: Limits, stream: bool) -> Request | Response:
    if len(data) > limits.max_message_size:
        raise MessageTooLarge(f"message of {len(data)} bytes over {limits.max_message_size}")
    if data[:1] == b"\r":  # RFC 3261 7.5: ignore CRLFs before the start line
        data = _skip_crlfs(data)
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        raise ParseError("no empty line after the headers")
    parts = _HEADER_SPLIT_RE.split(head)
    start = parts[0]
    names = parts[1::2]
    values = parts[2::2]
    # The split leaves no CR or LF in the start line or a value unless a line is folded, has no
    # colon, or holds a bare CR or LF (a smuggling risk: some peers end lines at a bare LF).
    joined = b"".join(values)
    if 13 in joined or 10 in joined or 13 in start or 10 in start:
        start, names, values = _slow_lines(head)
    if len(names) > limits.max_headers:
        raise MessageTooLarge(f"more than {limits.max_headers} header lines")
    if len(head) > limits.max_line_length:
        _check_line_lengths(start, names, values, limits.max_line_length)
    # Names are non-empty and hold no LF, so joining them with LF keeps them apart.
    signature = b"\n".join(names)
    known = _SIGNATURES.get(signature)
    if known is None:
        known = _names_info(names, signature)
    keys, index, cl = known
    if cl >= 0:
        value = values[cl].strip(b" \t")
        length = int(value) if value.isdigit() and len(value) < 11 else _content_length(value)
        if len(body) != length:
            if len(body) < length:
                raise ParseError(f"body shorter than Content-Length ({len(body)} < {length})")
            body = body[:length]  # RFC 3261 18.3: extra bytes after a datagram's body go
            data = data[: len(head) + 4 + length]
    elif stream:
        raise ParseError("Content-Length is required on a stream transport")
    message: Request | Response
    if start[:4] == b"SIP/":
        message = _response(start, keys, names, values, index)
    else:
        message = _request(start, keys, names, values, index)
    message.body = body
    message._raw = data
    return message


def _skip_crlfs(data: bytes) -> bytes:
    i = 0
    while data[i : i + 2] == CRLF:
        i += 2
    return data[i:]


def _request(
    start: bytes,
    keys: list[bytes],
    names: list[bytes],
    values: list[bytes],
    index: dict[bytes, int],
) -> Request:
    m = _REQUEST_LINE_RE.fullmatch(start)
    if m is not None:
        method, uri = m.groups()
        version = _SIP_2_0
    else:
        parts = start.split(b" ")
        if len(parts) != 3:
            raise ParseError("malformed request line")
        method, uri, version = parts
        if not is_token(method):
            raise ParseError("malformed method")
        if not uri or _URI_BAD_RE.search(uri) is not None:
            raise ParseError("malformed Request-URI")
        _check_version(version)
    if uri[0] == 0x3C or 0x3A not in uri:  # "<" first (RFC 4475 3.1.2.7), or no ":"
        raise ParseError("malformed Request-URI")
    name = METHODS.get(method) or method.decode("ascii")
    return make_request(name, uri, version, keys, names, values, index)


def _response(
    start: bytes,
    keys: list[bytes],
    names: list[bytes],
    values: list[bytes],
    index: dict[bytes, int],
) -> Response:
    version, _, rest = start.partition(b" ")
    if version != b"SIP/2.0":
        _check_version(version)
    code, _, reason = rest.partition(b" ")
    # RFC 3261 7.2 / 21: Status-Code = 3DIGIT, classes 1xx to 6xx.
    if len(code) != 3 or not code.isdigit() or code[:1] not in b"123456":
        raise ParseError("malformed status code")
    if b"\x00" in reason:
        raise ParseError("malformed reason phrase")
    return make_response(int(code), reason, version, keys, names, values, index)


def _check_version(version: bytes) -> None:
    m = _VERSION_RE.fullmatch(version)
    if m is None:
        raise ParseError("malformed SIP version")
    if m.group(1).lstrip(b"0") != b"2" or m.group(2).lstrip(b"0"):
        raise ParseError(f"unsupported SIP version {version.decode('ascii')}", 505)


def _slow_lines(head: bytes) -> tuple[bytes, list[bytes], list[bytes]]:
    """Header lines with folding, or a header block with a flaw to name (RFC 3261 7.3.1)."""
    if head.count(b"\r") != head.count(b"\r\n") or head.count(b"\n") != head.count(b"\r\n"):
        raise ParseError("bare CR or LF in the header block")
    lines = head.split(CRLF)
    names: list[bytes] = []
    values: list[bytes] = []
    for line in lines[1:]:
        if line[:1] in (b" ", b"\t"):
            if not values:
                raise ParseError("continuation line before the first header")
            values[-1] += CRLF + line
            continue
        name, colon, value = line.partition(b":")
        if not colon:
            raise ParseError("header line without a colon")
        if not name:  # the names memo needs non-empty names (its key joins them with LF)
            raise ParseError("empty header name")
        names.append(name)
        values.append(value)
    return lines[0], names, values


def _check_line_lengths(start: bytes, names: list[bytes], values: list[bytes], limit: int) -> None:
    longest = max(
        [
            len(start),
            *(len(name) + 1 + len(value) for name, value in zip(names, values, strict=True)),
        ]
    )
    if longest > limit:
        raise MessageTooLarge(f"a line longer than {limit} bytes")


# What a sequence of header names tells, memoised: a proxy sees the same few sequences (one per
# kind of message and peer software) over and over. Keyed by the names joined with LF; bounded in
# entries and in key size so that no input can make it grow without limit.
_NamesInfo = tuple[list[bytes], dict[bytes, int], int]  # keys, first positions, Content-Length
_SIGNATURES: Final[dict[bytes, _NamesInfo]] = {}
_SIGNATURES_MAX: Final = 1024
_SIGNATURE_MAX_BYTES: Final = 2048


def _names_info(names: list[bytes], signature: bytes) -> _NamesInfo:
    """Canonical keys, first positions and the Content-Length line of a sequence of names.

    The lists and dicts handed out are shared by every message with these names: nothing in the
    message layer changes them (edits build new ones).
    """
    try:
        keys = list(map(canonical_lookup, names))
    except KeyError:
        keys = [canonical(name) for name in names]
        if b"" in keys:
            raise ParseError("malformed header name") from None
    count = keys.count(_CL)
    if count > 1:
        raise ParseError("Content-Length appears more than once")
    info = (keys, first_positions(keys), keys.index(_CL) if count else -1)
    if len(signature) <= _SIGNATURE_MAX_BYTES:
        if len(_SIGNATURES) >= _SIGNATURES_MAX:
            _SIGNATURES.clear()
        _SIGNATURES[signature] = info
    return info


def _content_length(value: bytes) -> int:
    if b"\n" in value:
        value = unfold(value)
    value = value.strip(b" \t")
    if not value.isdigit():
        raise ParseError("malformed Content-Length")
    digits = value.lstrip(b"0") or b"0"
    if len(digits) > 10:
        raise ParseError("Content-Length out of range")
    return int(digits)
