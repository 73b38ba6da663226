"""Bytes -> ``Request`` or ``Response`` (RFC 3261 section 7, 18.3 framing on datagrams).

The contract (DESIGN.md section 5): ``parse(data)`` returns a message or raises ``ParseError``;
it never raises anything else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, cast

from .errors import MessageTooLarge, ParseError
from .headers import canonical, canonical_cached, is_token
from .message import CRLF, Request, Response


@dataclass(frozen=True, slots=True)
class Limits:
    max_message_size: int = 65535
    max_headers: int = 256
    max_line_length: int = 8192


DEFAULT_LIMITS: Final = Limits()

_VERSION_RE: Final = re.compile(rb"SIP/(\d+)\.(\d+)", re.I)
# The name part of every header line after the start line; a line without a colon yields nothing.
_NAME_RE: Final = re.compile(rb"\r\n([^:\r\n \t][^:\r\n]*):")
# Request-URI: no white space, controls or non-ASCII (RFC 4475 3.1.2.6, 3.1.2.7).
_URI_BAD_RE: Final = re.compile(rb"[\x00-\x20\x7f-\xff]")
# Singleton headers that may appear at most once (RFC 3261 7.3.1; torture case mcl01). The parser
# checks Content-Length, which framing depends on; validate_request checks the others.
SINGLETONS: Final = (b"content-length", b"call-id", b"cseq", b"from", b"to", b"max-forwards")
# Methods seen on every call, decoded once.
_METHODS: Final = {
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


def parse(data: bytes, limits: Limits = DEFAULT_LIMITS) -> Request | Response:
    """Parse one datagram's worth of SIP.

    A body is exactly Content-Length bytes; bytes after it are discarded (RFC 3261 18.3). Without
    a Content-Length, the body runs to the end of the data.
    """
    try:
        return _parse(data, limits, stream=False)
    except ParseError:
        raise
    except Exception as exc:  # pragma: no cover - the fuzz property keeps this unreachable
        raise ParseError(f"unparseable message ({type(exc).__name__})") from exc


def parse_framed(data: bytes, limits: Limits = DEFAULT_LIMITS) -> Request | Response:
    """Parse a message that a stream framer has cut out exactly (Content-Length is required)."""
    try:
        return _parse(data, limits, stream=True)
    except ParseError:
        raise
    except Exception as exc:  # pragma: no cover
        raise ParseError(f"unparseable message ({type(exc).__name__})") from exc


def _parse(data: bytes, limits: Limits, stream: bool) -> Request | Response:
    if len(data) > limits.max_message_size:
        raise MessageTooLarge(f"message of {len(data)} bytes over {limits.max_message_size}")
    if data[:2] == CRLF:  # RFC 3261 7.5: ignore CRLFs before the start line
        data = data.lstrip(b"\r\n")
    end = data.find(b"\r\n\r\n")
    if end < 0:
        raise ParseError("no empty line after the headers")
    head = data[:end]
    first = head.find(CRLF)
    if first < 0:
        start, lines = head, []
    else:
        start = head[:first]
        lines = head[first + 2 :].split(CRLF)
    if len(lines) > limits.max_headers:
        raise MessageTooLarge(f"more than {limits.max_headers} header lines")
    if len(head) > limits.max_line_length and max(map(len, lines)) > limits.max_line_length:
        raise MessageTooLarge(f"a line longer than {limits.max_line_length} bytes")
    if len(start) > limits.max_line_length:
        raise MessageTooLarge(f"a line longer than {limits.max_line_length} bytes")
    # One C call finds every line's name; a continuation line or a line without a colon yields
    # none, and the count tells.
    names: list[bytes] = _NAME_RE.findall(head, first) if first >= 0 else []
    if len(names) != len(lines):
        lines = _unfold_lines(lines)
        names = [line.partition(b":")[0] for line in lines]
    cached = list(map(canonical_cached, names))
    keys = cast(list[bytes], cached) if None not in cached else _keys_of(names)
    body = data[end + 4 :]
    raw: bytes | None = data
    if b"content-length" in keys:
        i = keys.index(b"content-length")
        value = lines[i].partition(b":")[2].strip(b" \t")
        if not value.isdigit() or len(value) > 10:
            raise ParseError("malformed Content-Length")
        length = int(value)
        if b"content-length" in keys[i + 1 :]:
            _check_duplicates(b"content-length", keys, lines)
        if len(body) < length:
            raise ParseError(f"body shorter than Content-Length ({len(body)} < {length})")
        if len(body) > length:
            body = body[:length]
            raw = data[: end + 4 + length]
    elif stream:
        raise ParseError("Content-Length is required on a stream transport")
    if start[:4] == b"SIP/":
        return _response(start, keys, lines, body, raw)
    return _request(start, keys, lines, body, raw)


def _request(
    start: bytes, keys: list[bytes], lines: list[bytes], body: bytes, raw: bytes | None
) -> Request:
    parts = start.split(b" ")
    if len(parts) != 3:
        raise ParseError("malformed request line")
    method, uri, version = parts
    name = _METHODS.get(method)
    if name is None:
        if not is_token(method):
            raise ParseError("malformed method")
        name = method.decode("ascii")
    if not uri or uri[:1] == b"<" or b":" not in uri:
        raise ParseError("malformed Request-URI")
    if _URI_BAD_RE.search(uri):
        raise ParseError("malformed Request-URI")
    if version != b"SIP/2.0":
        _check_version(version)
    return Request(name, uri, keys, lines, body, raw, version)


def _response(
    start: bytes, keys: list[bytes], lines: list[bytes], body: bytes, raw: bytes | None
) -> Response:
    version, _, rest = start.partition(b" ")
    _check_version(version)
    code, sep, reason = rest.partition(b" ")
    if len(code) != 3 or not code.isdigit() or code[:1] == b"0":
        raise ParseError("malformed status code")
    if not sep and rest != code:
        raise ParseError("malformed status line")
    if b"\r" in reason or b"\n" in reason:
        raise ParseError("malformed reason phrase")
    return Response(int(code), reason, keys, lines, body, raw, version)


def _check_version(version: bytes) -> None:
    if version == b"SIP/2.0":
        return
    m = _VERSION_RE.fullmatch(version)
    if m is None:
        raise ParseError("malformed SIP version")
    if (int(m.group(1)), int(m.group(2))) != (2, 0):
        raise ParseError(f"unsupported SIP version {version.decode('ascii')}", 505)


def _unfold_lines(lines: list[bytes]) -> list[bytes]:
    """Join continuation lines to the line they continue, keeping their bytes (7.3.1)."""
    out: list[bytes] = []
    for line in lines:
        if line[:1] in (b" ", b"\t"):
            if not out:
                raise ParseError("continuation line before the first header")
            out[-1] += CRLF + line
        elif b":" not in line:
            raise ParseError("header line without a colon")
        else:
            out.append(line)
    return out


def _keys_of(names: list[bytes]) -> list[bytes]:
    keys = [canonical(name) for name in names]
    if b"" in keys:
        raise ParseError("malformed header name")
    return keys


def _check_duplicates(key: bytes, keys: list[bytes], lines: list[bytes]) -> None:
    """Raise ``ParseError`` when the singleton header ``key`` appears more than once."""
    values = {
        line.partition(b":")[2].strip(b" \t")
        for k, line in zip(keys, lines, strict=True)
        if k == key
    }
    raise ParseError(
        f"{key.decode()} appears more than once"
        + (" with different values" if len(values) > 1 else "")
    )
