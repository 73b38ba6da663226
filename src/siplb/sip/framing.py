"""Framing SIP on a byte stream (TCP, TLS): RFC 3261 18.3 and RFC 5626 3.5.1 keep-alives.

``StreamFramer.feed(data)`` takes whatever the socket read and returns what it completes:
messages, ``KeepAlive`` for a CRLF CRLF ping (answer it with a single CRLF pong), or raises
``FramingError`` when the stream cannot be resynchronised; the connection is then closed.
A message that frames correctly but does not parse is returned as a ``Malformed`` item, so the
shell can answer it and keep the connection.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from .errors import MessageTooLarge, ParseError
from .message import Request, Response
from .parser import DEFAULT_LIMITS, Limits, parse_framed

_CL_NAMES: Final = (b"content-length", b"l")


class FramingError(ParseError):
    """The byte stream cannot be cut into messages any more; close the connection."""


@dataclass(frozen=True, slots=True)
class KeepAlive:
    """A CRLF CRLF ping (RFC 5626 3.5.1): answer with CRLF."""


@dataclass(frozen=True, slots=True)
class Malformed:
    """A framed message that failed to parse: ``data`` and the ``error`` to answer with."""

    data: bytes
    error: ParseError


Framed = Request | Response | KeepAlive | Malformed
KEEPALIVE: Final = KeepAlive()


class StreamFramer:
    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self._buf = bytearray()
        self._limits = limits

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[Framed]:
        self._buf += data
        out: list[Framed] = []
        while True:
            item = self._next()
            if item is None:
                return out
            out.append(item)

    def _next(self) -> Framed | None:
        buf = self._buf
        if buf[:2] == b"\r\n":
            if buf[:4] == b"\r\n\r\n":
                del buf[:4]
                return KEEPALIVE
            if len(buf) < 4 and b"\r\n\r\n".startswith(bytes(buf)):
                return None  # maybe the start of a ping
            # a lone CRLF (a pong, or noise before a start line): skip it (RFC 3261 7.5)
            del buf[:2]
            return self._next()
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > self._limits.max_message_size:
                raise MessageTooLarge("headers over the message size limit")
            return None
        length = _content_length(bytes(buf[:end]))
        total = end + 4 + length
        if total > self._limits.max_message_size:
            raise MessageTooLarge(f"message of {total} bytes over the limit")
        if len(buf) < total:
            return None
        data = bytes(buf[:total])
        del buf[:total]
        try:
            return parse_framed(data, self._limits)
        except ParseError as exc:
            return Malformed(data, exc)


def _content_length(head: bytes) -> int:
    """Content-Length from a raw header block; ``FramingError`` when missing or unusable."""
    found: int | None = None
    for line in head.split(b"\r\n")[1:]:
        name, colon, value = line.partition(b":")
        if colon and name.strip(b" \t").lower() in _CL_NAMES:
            value = value.strip(b" \t")
            if not value.isdigit() or len(value) > 10:
                raise FramingError("malformed Content-Length on a stream")
            if found is not None and found != int(value):
                raise FramingError("conflicting Content-Length on a stream")
            found = int(value)
    if found is None:
        raise FramingError("Content-Length is required on a stream transport")
    return found
