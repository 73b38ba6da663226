"""SIP requests and responses: ordered raw header lines, typed views parsed only when asked for.

A message keeps every header line exactly as it arrived (folding included), so serializing an
untouched message, or one with a header added at the top, gives back the same bytes for every line
we did not edit. Messages are values: the edit methods return a new message and leave the old one
as it was.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Self

from .errors import LocalProtocolError, ParseError
from .headers import LIST_HEADERS, canonical, is_token, split_list, unfold
from .nameaddr import NameAddr, parse_name_addr, tag_of
from .uri import Uri, parse_uri
from .via import Via, parse_via, parse_vias

CRLF: Final = b"\r\n"


@dataclass(frozen=True, slots=True)
class CSeq:
    number: int
    method: str


class Message:
    """What requests and responses share: header lines and a body."""

    __slots__ = ("_keys", "_lines", "_raw", "body")

    def __init__(
        self, keys: list[bytes], lines: list[bytes], body: bytes, raw: bytes | None = None
    ) -> None:
        # _keys[i] is the canonical name (lower case, compact form expanded) of _lines[i], the
        # whole header line as it arrived. Neither list is changed after construction.
        self._keys = keys
        self._lines = lines
        self.body = body
        self._raw = raw

    # ---- reading -------------------------------------------------------------------------
    def start_line(self) -> bytes:
        raise NotImplementedError  # pragma: no cover - defined by Request and Response

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        """Every header as (name as written, value with folding removed), in order."""
        out = []
        for line in self._lines:
            name, _, value = line.partition(b":")
            out.append((name.strip(b" \t"), unfold(value).strip(b" \t")))
        return out

    def header_names(self) -> list[bytes]:
        """Canonical names of every header line, in order."""
        return list(self._keys)

    def has(self, name: bytes) -> bool:
        return canonical(name) in self._keys

    def get(self, name: bytes) -> bytes | None:
        """The value of the first header line called ``name`` (any case, compact or long)."""
        try:
            i = self._keys.index(canonical(name))
        except ValueError:
            return None
        return _value(self._lines[i])

    def _first(self, key: bytes) -> bytes | None:
        """``get`` for a canonical key (no name normalisation: the hot path's accessor)."""
        keys = self._keys
        if key not in keys:
            return None
        return _value(self._lines[keys.index(key)])

    def get_all(self, name: bytes) -> list[bytes]:
        """Every line's value for ``name``, one entry per header line."""
        key = canonical(name)
        return [_value(line) for k, line in zip(self._keys, self._lines, strict=True) if k == key]

    def values(self, name: bytes) -> list[bytes]:
        """Every element of a list header, across lines and commas (RFC 3261 7.3.1)."""
        out: list[bytes] = []
        for value in self.get_all(name):
            out.extend(split_list(value))
        return out

    def count(self, name: bytes) -> int:
        return self._keys.count(canonical(name))

    # ---- typed views -----------------------------------------------------------------------
    @property
    def call_id(self) -> bytes | None:
        return self._first(b"call-id")

    @property
    def cseq(self) -> CSeq:
        value = self._first(b"cseq")
        if value is None:
            raise ParseError("missing CSeq")
        return parse_cseq(value)

    @property
    def max_forwards(self) -> int | None:
        value = self._first(b"max-forwards")
        if value is None:
            return None
        if not value.isdigit() or len(value) > 3 or int(value) > 255:
            raise ParseError("malformed Max-Forwards")
        return int(value)

    @property
    def content_length(self) -> int | None:
        value = self._first(b"content-length")
        return None if value is None else parse_content_length(value)

    @property
    def expires(self) -> int | None:
        value = self._first(b"expires")
        if value is None:
            return None
        if not value.isdigit() or len(value) > 10 or int(value) > 2**32 - 1:
            raise ParseError("malformed Expires")
        return int(value)

    @property
    def from_tag(self) -> bytes | None:
        value = self._first(b"from")
        return None if value is None else tag_of(value)

    @property
    def to_tag(self) -> bytes | None:
        value = self._first(b"to")
        return None if value is None else tag_of(value)

    def top_via(self) -> Via:
        """The first via-parm of the first Via line."""
        value = self._first(b"via")
        if value is None:
            raise ParseError("missing Via")
        if b"," in value:
            return parse_vias(value)[0]
        return parse_via(value)

    def vias(self) -> list[Via]:
        return [parse_via(v) for v in self.values(b"via")]

    def name_addr(self, name: bytes) -> NameAddr | None:
        value = self.get(name)
        return None if value is None else parse_name_addr(value)

    def name_addrs(self, name: bytes) -> list[NameAddr]:
        return [parse_name_addr(v) for v in self.values(name)]

    # ---- editing (each returns a new message) ----------------------------------------------
    def _with(self, keys: list[bytes], lines: list[bytes]) -> Self:
        raise NotImplementedError  # pragma: no cover - defined by Request and Response

    def with_header_first(self, name: bytes, value: bytes) -> Self:
        """Add a header line above all others (a proxy's Via or Record-Route)."""
        return self._with([canonical(name), *self._keys], [name + b": " + value, *self._lines])

    def with_header(self, name: bytes, value: bytes) -> Self:
        """Replace the value of the first ``name`` line (added at the end when absent)."""
        key = canonical(name)
        keys = list(self._keys)
        lines = list(self._lines)
        try:
            i = keys.index(key)
        except ValueError:
            keys.append(key)
            lines.append(name + b": " + value)
        else:
            lines[i] = lines[i].partition(b":")[0].rstrip(b" \t") + b": " + value
        return self._with(keys, lines)

    def without_header(self, name: bytes) -> Self:
        """Remove every line of ``name``."""
        key = canonical(name)
        pairs = [(k, line) for k, line in zip(self._keys, self._lines, strict=True) if k != key]
        return self._with([k for k, _ in pairs], [line for _, line in pairs])

    def without_top_value(self, name: bytes) -> Self:
        """Remove the top value of a list header (the first element of its first line)."""
        key = canonical(name)
        try:
            i = self._keys.index(key)
        except ValueError:
            raise LocalProtocolError(f"no {name!r} header to remove a value from") from None
        keys = list(self._keys)
        lines = list(self._lines)
        rest = split_list(_value(lines[i]))[1:] if key in LIST_HEADERS else []
        if rest:
            lines[i] = lines[i].partition(b":")[0].rstrip(b" \t") + b": " + b", ".join(rest)
        else:
            del keys[i]
            del lines[i]
        return self._with(keys, lines)

    # ---- serializing -----------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        if self._raw is not None:
            return self._raw
        if self._lines:
            return b"".join(
                (self.start_line(), CRLF, CRLF.join(self._lines), CRLF, CRLF, self.body)
            )
        return b"".join((self.start_line(), CRLF, CRLF, self.body))

    def __bytes__(self) -> bytes:
        return self.to_bytes()

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, Message)
        return (
            self.start_line() == other.start_line()
            and self.headers == other.headers
            and self.body == other.body
        )

    def __hash__(self) -> int:
        return hash((self.start_line(), self.body))


class Request(Message):
    __slots__ = ("method", "uri", "version")

    def __init__(
        self,
        method: str,
        uri: bytes,
        keys: list[bytes],
        lines: list[bytes],
        body: bytes = b"",
        raw: bytes | None = None,
        version: bytes = b"SIP/2.0",
    ) -> None:
        super().__init__(keys, lines, body, raw)
        self.method = method
        self.uri = uri
        self.version = version

    @classmethod
    def build(
        cls, method: str, uri: bytes, headers: list[tuple[bytes, bytes]], body: bytes = b""
    ) -> Request:
        """A new request from (name, value) pairs (for tests and locally generated requests)."""
        keys, lines = _pairs_to_lines(headers)
        return cls(method, uri, keys, lines, body)

    def start_line(self) -> bytes:
        return b" ".join((self.method.encode("ascii"), self.uri, self.version))

    def parsed_uri(self) -> Uri:
        return parse_uri(self.uri)

    def with_uri(self, uri: bytes) -> Request:
        return Request(self.method, uri, self._keys, self._lines, self.body, None, self.version)

    def _with(self, keys: list[bytes], lines: list[bytes]) -> Request:
        return Request(self.method, self.uri, keys, lines, self.body, None, self.version)

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri.decode('latin-1')}>"


class Response(Message):
    __slots__ = ("reason", "status", "version")

    def __init__(
        self,
        status: int,
        reason: bytes,
        keys: list[bytes],
        lines: list[bytes],
        body: bytes = b"",
        raw: bytes | None = None,
        version: bytes = b"SIP/2.0",
    ) -> None:
        super().__init__(keys, lines, body, raw)
        self.status = status
        self.reason = reason
        self.version = version

    @classmethod
    def build(
        cls, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], body: bytes = b""
    ) -> Response:
        keys, lines = _pairs_to_lines(headers)
        return cls(status, reason, keys, lines, body)

    def start_line(self) -> bytes:
        return b"%s %d %s" % (self.version, self.status, self.reason)

    def _with(self, keys: list[bytes], lines: list[bytes]) -> Response:
        return Response(self.status, self.reason, keys, lines, self.body, None, self.version)

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason.decode('latin-1')}>"


def _value(line: bytes) -> bytes:
    value = line.partition(b":")[2]
    if b"\n" in value:
        value = unfold(value)
    return value.strip(b" \t")


def _pairs_to_lines(headers: list[tuple[bytes, bytes]]) -> tuple[list[bytes], list[bytes]]:
    keys = []
    for name, _ in headers:
        key = canonical(name)
        if not key:
            raise LocalProtocolError(f"not a header name: {name!r}")
        keys.append(key)
    return keys, [name + b": " + value for name, value in headers]


_CSEQ_RE: Final = re.compile(rb"([0-9]{1,10}) ([A-Za-z0-9\-.!%*_+`'~]+)")


def parse_cseq(value: bytes) -> CSeq:
    """``CSeq = 1*DIGIT LWS Method``, number below 2**31 (RFC 3261 8.1.1.5)."""
    m = _CSEQ_RE.fullmatch(value)
    if m is not None:
        number = int(m.group(1))
        if number < 2**31:
            return CSeq(number, m.group(2).decode("ascii"))
    parts = unfold(value).split()
    if len(parts) != 2 or not parts[0].isdigit() or len(parts[0]) > 10:
        raise ParseError("malformed CSeq")
    number = int(parts[0])
    if number >= 2**31:
        raise ParseError("CSeq number out of range")
    method = parts[1]
    if not is_token(method):
        raise ParseError("malformed CSeq method")
    return CSeq(number, method.decode("ascii"))


def parse_content_length(value: bytes) -> int:
    if not value.isdigit() or len(value) > 10:
        raise ParseError("malformed Content-Length")
    return int(value)
