"""Framing SIP on a byte stream (TCP, TLS): RFC 3261 18.3 and RFC 5626 3.5.1 keep-alives.

``StreamFramer.feed(data)`` takes whatever the socket read and returns what it completes:
messages, ``KeepAlive`` for a CRLF CRLF ping (answer it with a single CRLF pong), or raises
``FramingError`` when the stream cannot be cut into messages any more (no usable
Content-Length, or more bytes than the limits allow before a message is complete); the connection
is then closed, and every later ``feed`` raises again. A message that frames correctly but does
not parse is returned as a ``Malformed`` item, so the shell can answer it and keep the connection.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from .errors import ParseError
from .headers import unfold
from .message import Request, Response
from .parser import DEFAULT_LIMITS, Limits, parse_framed

PING: Final = b"\r\n\r\n"
_CONTENT_LENGTH_RE: Final = re.compile(
    rb"\r\n(?:content-length|l)[ \t]*:((?:[^\r\n]|\r\n[ \t])*)", re.I
)


class FramingError(ParseError):
    """The byte stream cannot be cut into messages any more; close the connection.

    ``status_hint`` is 513 when the limits were passed, else 400.
    """


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
    """Cuts one connection's byte stream into messages (Content-Length framing, RFC 3261 18.3)."""

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self._buf = bytearray()
        self._limits = limits
        self._searched = 0  # bytes of _buf known to hold no CRLF CRLF (the next search's start)
        self._total = 0  # size of the message at the head of _buf, once its headers are read
        self._broken: FramingError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned as an item."""
        return len(self._buf)

    @property
    def in_message(self) -> bool:
        """True while part of a message is buffered (more than the start of a keep-alive).

        Never more than ``max_message_size`` bytes are buffered between two ``feed`` calls: a
        header block must end within that many bytes, and a message may not be larger."""
        buf = self._buf
        return bool(buf) and not (len(buf) < 4 and PING.startswith(buf))

    @property
    def in_body(self) -> bool:
        """True while the message being received has its whole header block and awaits its body."""
        return self._total > 0

    def feed(self, data: bytes) -> list[Framed]:
        """Take bytes read from the connection; return every item they complete, in order."""
        if self._broken is not None:
            raise FramingError(self._broken.reason, self._broken.status_hint)
        self._buf += data
        out: list[Framed] = []
        try:
            while (item := self._next()) is not None:
                out.append(item)
        except FramingError as exc:
            self._broken = exc
            raise
        return out

    def _next(self) -> Framed | None:
        buf = self._buf
        total = self._total
        if not total:
            while buf[:2] == b"\r\n":
                if buf[:4] == PING:
                    del buf[:4]
                    self._searched = 0
                    return KEEPALIVE
                if len(buf) < 4 and PING.startswith(buf):
                    return None  # maybe the start of a ping
                del buf[:2]  # a lone CRLF (a pong, or noise before a start line): RFC 3261 7.5
                self._searched = 0
            if buf == b"\r":
                return None
            end = buf.find(PING, self._searched)
            limit = self._limits.max_message_size
            if end < 0:
                if len(buf) > limit:
                    raise FramingError(f"no complete header block in {limit} bytes", 513)
                self._searched = max(0, len(buf) - 3)
                return None
            total = end + 4 + _content_length(bytes(buf[:end]))
            if total > limit:
                raise FramingError(f"message of {total} bytes over {limit}", 513)
            self._total = total
        if len(buf) < total:
            return None  # the body is still coming
        data = bytes(buf[:total])
        del buf[:total]
        self._searched = 0
        self._total = 0
        try:
            return parse_framed(data, self._limits)
        except ParseError as exc:
            return Malformed(data, exc)


def _content_length(head: bytes) -> int:
    """Content-Length from a raw header block; ``FramingError`` when missing or unusable."""
    found: int | None = None
    for raw in _CONTENT_LENGTH_RE.findall(head):
        value = unfold(raw).strip(b" \t")
        if not value.isdigit():
            raise FramingError("malformed Content-Length on a stream")
        digits = value.lstrip(b"0") or b"0"
        if len(digits) > 10:
            raise FramingError("Content-Length out of range on a stream", 513)
        length = int(digits)
        if found is not None and found != length:
            raise FramingError("conflicting Content-Length values on a stream")
        found = length
    if found is None:
        raise FramingError("Content-Length is required on a stream transport")
    return found
