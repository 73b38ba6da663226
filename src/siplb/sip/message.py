"""SIP requests and responses: ordered raw header lines, typed views parsed only when asked for.

A message keeps the bytes it was parsed from and every header as it arrived: its name as written
and its raw value (folding included). Serializing an untouched message gives back those bytes; an
edit (a header added at the top, the top value of a list header removed, the Request-URI changed,
one header's value replaced) changes only the bytes it is about. Messages are values: the edit
methods return a new message and leave the old one as it was.
"""

from __future__ import annotations

import re
from itertools import chain
from typing import Final, Self

from .errors import LocalProtocolError, ParseError
from .headers import (
    LIST_HEADERS,
    canonical,
    first_comma,
    key_for,
    split_elements,
    unfold,
)
from .nameaddr import NameAddr, parse_name_addr, tag_of
from .scalars import SMALL_INTS, CSeq, bounded_int, parse_content_length, parse_cseq
from .uri import Uri, parse_uri
from .via import Via, parse_via

CRLF: Final = b"\r\n"

# Interned lookup keys (see ``headers.key_for``).
_CALL_ID: Final = key_for(b"call-id")
_CSEQ: Final = key_for(b"cseq")
_MAX_FORWARDS: Final = key_for(b"max-forwards")
_CONTENT_LENGTH: Final = key_for(b"content-length")
_EXPIRES: Final = key_for(b"expires")
_FROM: Final = key_for(b"from")
_TO: Final = key_for(b"to")
_VIA: Final = key_for(b"via")


class Message:
    """What requests and responses share: header lines, a body and the bytes on the wire."""

    __slots__ = ("_index", "_keys", "_names", "_raw", "_values", "body")

    # _keys[i] is the canonical name (lower case, compact form expanded) of header i, _names[i]
    # its name as written (white space before the colon included) and _values[i] its raw value
    # (everything after the colon, folding included). _index maps each key to the position of
    # its first line (built when first needed; the parser shares one per sequence of names).
    # _raw is the whole message: start line, then CRLF name ":" value for each header, then
    # CRLF CRLF and the body. None of these is changed after construction.
    _keys: list[bytes]
    _names: list[bytes]
    _values: list[bytes]
    _index: dict[bytes, int] | None
    _raw: bytes
    body: bytes

    def _set_body(self, body: bytes) -> None:
        self.body = body
        self._raw = _assemble(self.start_line(), self._names, self._values, body)

    # ---- reading -------------------------------------------------------------------------
    def start_line(self) -> bytes:
        raise NotImplementedError  # pragma: no cover - defined by Request and Response

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        """Every header as (name as written, value with folding removed), in order."""
        return [
            (name.strip(b" \t"), unfold(value).strip(b" \t"))
            for name, value in zip(self._names, self._values, strict=True)
        ]

    def header_names(self) -> list[bytes]:
        """Canonical names of every header line, in order."""
        return list(self._keys)

    def has(self, name: bytes) -> bool:
        index = self._index  # the parser's, shared; an edited message searches its short list
        return canonical(name) in (self._keys if index is None else index)

    def get(self, name: bytes) -> bytes | None:
        """The value of the first header line called ``name`` (any case, compact or long)."""
        return self._first(canonical(name))

    def _first(self, key: bytes) -> bytes | None:
        """``get`` for a canonical key (no name normalisation: the hot path's accessor)."""
        index = self._index
        if index is None:
            index = self._index = first_positions(self._keys)
        i = index.get(key)
        if i is None:
            return None
        value = self._values[i]
        if 10 in value:  # LF: a folded line
            value = unfold(value)
        return value.strip(b" \t")

    def get_all(self, name: bytes) -> list[bytes]:
        """Every line's value for ``name``, one entry per header line."""
        key = canonical(name)
        index = self._index
        if index is None:
            index = self._index = first_positions(self._keys)
        i = index.get(key)
        if i is None:
            return []
        keys = self._keys
        values = self._values
        out: list[bytes] = []
        left = keys.count(key)
        while True:
            value = values[i]
            if 10 in value:  # LF: a folded line
                value = unfold(value)
            out.append(value.strip(b" \t"))
            left -= 1
            if not left:
                return out
            i = keys.index(key, i + 1)

    def values(self, name: bytes) -> list[bytes]:
        """Every element of a list header, across lines and commas (RFC 3261 7.3.1).

        Empty elements (``a,,b``) are dropped; use the typed views to refuse them.
        """
        out: list[bytes] = []
        for value in self.get_all(name):
            if 0x2C in value:  # ","
                out.extend([part for part in split_elements(value) if part])
            elif value:
                out.append(value)
        return out

    def count(self, name: bytes) -> int:
        """How many header lines are called ``name``."""
        return self._keys.count(canonical(name))

    # ---- typed views -----------------------------------------------------------------------
    @property
    def call_id(self) -> bytes | None:
        return self._first(_CALL_ID)

    @property
    def cseq(self) -> CSeq:
        value = self._first(_CSEQ)
        if value is None:
            raise ParseError("missing CSeq")
        return parse_cseq(value)

    @property
    def max_forwards(self) -> int | None:
        value = self._first(_MAX_FORWARDS)
        if value is None:
            return None
        number = SMALL_INTS.get(value)
        return number if number is not None else bounded_int(value, 255, "Max-Forwards")

    @property
    def content_length(self) -> int | None:
        value = self._first(_CONTENT_LENGTH)
        return None if value is None else parse_content_length(value)

    @property
    def expires(self) -> int | None:
        """RFC 3261 20.19 delta-seconds (at most 2**32 - 1)."""
        value = self._first(_EXPIRES)
        return None if value is None else bounded_int(value, 2**32 - 1, "Expires")

    @property
    def from_tag(self) -> bytes | None:
        value = self._first(_FROM)
        return None if value is None else tag_of(value)

    @property
    def to_tag(self) -> bytes | None:
        value = self._first(_TO)
        return None if value is None else tag_of(value)

    def top_via(self) -> Via:
        """The first via-parm of the first Via line."""
        value = self._first(_VIA)
        if value is None:
            raise ParseError("missing Via")
        if 0x2C in value:  # ","
            end = first_comma(value)
            if end >= 0:
                value = value[:end].rstrip(b" \t")
        return parse_via(value)

    def vias(self) -> list[Via]:
        """Every via-parm, top first; an empty element (``Via: a,,b``) is a ``ParseError``."""
        out: list[Via] = []
        for value in self.get_all(b"via"):
            out.extend(parse_via(part) for part in split_elements(value))
        return out

    def name_addr(self, name: bytes) -> NameAddr | None:
        """The first header called ``name`` as a name-addr (From, To: single-valued headers)."""
        value = self.get(name)
        return None if value is None else parse_name_addr(value)

    def name_addrs(self, name: bytes) -> list[NameAddr]:
        """Every element of a list of name-addrs (Route, Record-Route, Path, Contact)."""
        return [parse_name_addr(v) for v in self.values(name)]

    # ---- editing (each returns a new message) ----------------------------------------------
    def _with(self, keys: list[bytes], names: list[bytes], values: list[bytes], raw: bytes) -> Self:
        raise NotImplementedError  # pragma: no cover - defined by Request and Response

    def with_header_first(self, name: bytes, value: bytes) -> Self:
        """Add a header line above all others (a proxy's Via or Record-Route)."""
        key = _checked_key(name, value)
        raw = self._raw
        s = raw.find(CRLF)
        return self._with(
            [key, *self._keys],
            [name, *self._names],
            [b" " + value, *self._values],
            b"".join((raw[:s], CRLF, name, b": ", value, raw[s:])),
        )

    def with_header(self, name: bytes, value: bytes) -> Self:
        """Replace the value of the first ``name`` line (added at the end when absent)."""
        key = _checked_key(name, value)
        keys = self._keys
        names = self._names
        values = list(self._values)
        raw = self._raw
        if key not in keys:
            at = self._offset(len(keys))
            raw = b"".join((raw[:at], CRLF, name, b": ", value, raw[at:]))
            return self._with([*keys, key], [*names, name], [*values, b" " + value], raw)
        i = keys.index(key)
        at = self._offset(i) + 3 + len(names[i])
        raw = b"".join((raw[:at], b" ", value, raw[at + len(values[i]) :]))
        values[i] = b" " + value
        return self._with(keys, names, values, raw)

    def without_header(self, name: bytes) -> Self:
        """Remove every line of ``name``."""
        key = canonical(name)
        kept = [i for i, k in enumerate(self._keys) if k != key]
        if len(kept) == len(self._keys):
            return self
        keys = [self._keys[i] for i in kept]
        names = [self._names[i] for i in kept]
        values = [self._values[i] for i in kept]
        return self._with(
            keys, names, values, _assemble(self.start_line(), names, values, self.body)
        )

    def without_top_value(self, name: bytes) -> Self:
        """Remove the top value of a list header (the first element of its first line).

        The rest of that line is kept byte for byte; the line goes when nothing is left in it.
        """
        key = canonical(name)
        keys = self._keys
        if key not in keys:
            raise LocalProtocolError(f"no {name!r} header to remove a value from")
        i = keys.index(key)
        raw = self._raw
        names = self._names
        values = self._values
        value = values[i]
        start = self._offset(i)
        end = start + 3 + len(names[i]) + len(value)
        comma = first_comma(value) if key in LIST_HEADERS else -1
        rest = value[comma + 1 :].lstrip(b" \t\r\n") if comma >= 0 else b""
        if not rest:
            return self._with(
                keys[:i] + keys[i + 1 :],
                names[:i] + names[i + 1 :],
                values[:i] + values[i + 1 :],
                raw[:start] + raw[end:],
            )
        new = value[: len(value) - len(value.lstrip(b" \t"))] + rest
        values = list(values)
        values[i] = new
        return self._with(
            keys, names, values, b"".join((raw[:start], CRLF, names[i], b":", new, raw[end:]))
        )

    def _offset(self, i: int) -> int:
        """Where header ``i`` starts in the raw message (at the CRLF before it)."""
        if not i:
            return self._raw.find(CRLF)
        return (
            self._raw.find(CRLF)
            + 3 * i
            + sum(map(len, self._names[:i]))
            + sum(map(len, self._values[:i]))
        )

    # ---- serializing -----------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        return self._raw

    def __bytes__(self) -> bytes:
        return self._raw

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

    method: str
    uri: bytes
    version: bytes

    def __init__(
        self,
        method: str,
        uri: bytes,
        version: bytes,
        keys: list[bytes],
        names: list[bytes],
        values: list[bytes],
        index: dict[bytes, int] | None = None,
    ) -> None:
        """A request without ``body`` and ``_raw`` (the caller sets both): the parser's and the
        editor's constructor. A request from header lines: ``from_lines``."""
        self.method = method
        self.uri = uri
        self.version = version
        self._keys = keys
        self._names = names
        self._values = values
        self._index = index

    @classmethod
    def from_lines(
        cls,
        method: str,
        uri: bytes,
        keys: list[bytes],
        lines: list[bytes],
        body: bytes = b"",
        version: bytes = b"SIP/2.0",
    ) -> Request:
        """A request from canonical keys and whole header lines (``name: value``)."""
        names, values = _split_lines(keys, lines)
        out = cls(method, uri, version, keys, names, values)
        out._set_body(body)
        return out

    @classmethod
    def build(
        cls, method: str, uri: bytes, headers: list[tuple[bytes, bytes]], body: bytes = b""
    ) -> Request:
        """A new request from (name, value) pairs (for tests and locally generated requests)."""
        keys, lines = _pairs_to_lines(headers)
        return cls.from_lines(method, uri, keys, lines, body)

    def start_line(self) -> bytes:
        return b" ".join((self.method.encode("ascii"), self.uri, self.version))

    def parsed_uri(self) -> Uri:
        return parse_uri(self.uri)

    def with_uri(self, uri: bytes) -> Request:
        """The same request with another Request-URI (RFC 3261 16.6 step 2)."""
        _uri_checked(uri)
        raw = self._raw
        start = b" ".join((self.method.encode("ascii"), uri, self.version))
        out = make_request(
            self.method, uri, self.version, self._keys, self._names, self._values, self._index
        )
        out.body = self.body
        out._raw = start + raw[raw.find(CRLF) :]
        return out

    def _with(
        self, keys: list[bytes], names: list[bytes], values: list[bytes], raw: bytes
    ) -> Request:
        out = make_request(self.method, self.uri, self.version, keys, names, values)
        out.body = self.body
        out._raw = raw
        return out

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri.decode('latin-1')}>"


class Response(Message):
    __slots__ = ("reason", "status", "version")

    status: int
    reason: bytes
    version: bytes

    def __init__(
        self,
        status: int,
        reason: bytes,
        version: bytes,
        keys: list[bytes],
        names: list[bytes],
        values: list[bytes],
        index: dict[bytes, int] | None = None,
    ) -> None:
        """A response without ``body`` and ``_raw`` (the caller sets both); from header lines:
        ``from_lines``."""
        self.status = status
        self.reason = reason
        self.version = version
        self._keys = keys
        self._names = names
        self._values = values
        self._index = index

    @classmethod
    def from_lines(
        cls,
        status: int,
        reason: bytes,
        keys: list[bytes],
        lines: list[bytes],
        body: bytes = b"",
        version: bytes = b"SIP/2.0",
    ) -> Response:
        """A response from canonical keys and whole header lines (``name: value``)."""
        names, values = _split_lines(keys, lines)
        out = cls(status, reason, version, keys, names, values)
        out._set_body(body)
        return out

    @classmethod
    def build(
        cls, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], body: bytes = b""
    ) -> Response:
        keys, lines = _pairs_to_lines(headers)
        return cls.from_lines(status, reason, keys, lines, body)

    def start_line(self) -> bytes:
        return b"%s %d %s" % (self.version, self.status, self.reason)

    def _with(
        self, keys: list[bytes], names: list[bytes], values: list[bytes], raw: bytes
    ) -> Response:
        out = make_response(self.status, self.reason, self.version, keys, names, values)
        out.body = self.body
        out._raw = raw
        return out

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason.decode('latin-1')}>"


def make_request(
    method: str,
    uri: bytes,
    version: bytes,
    keys: list[bytes],
    names: list[bytes],
    values: list[bytes],
    index: dict[bytes, int] | None = None,
) -> Request:
    """A request without ``body`` and ``_raw``; the caller sets both (the parser's constructor)."""
    return Request(method, uri, version, keys, names, values, index)


def make_response(
    status: int,
    reason: bytes,
    version: bytes,
    keys: list[bytes],
    names: list[bytes],
    values: list[bytes],
    index: dict[bytes, int] | None = None,
) -> Response:
    """A response without ``body`` and ``_raw``; the caller sets both."""
    return Response(status, reason, version, keys, names, values, index)


def first_positions(keys: list[bytes]) -> dict[bytes, int]:
    """Each key's first position in ``keys`` (later duplicates are overwritten by earlier)."""
    n = len(keys)
    return dict(zip(reversed(keys), range(n - 1, -1, -1), strict=True))


# Request-URI: no white space, controls or non-ASCII (RFC 4475 3.1.2.7, 3.1.2.8).
_URI_BAD_RE: Final = re.compile(rb"[\x00-\x20\x7f-\xff]")


def _uri_checked(uri: bytes) -> bytes:
    if not uri or _URI_BAD_RE.search(uri):
        raise LocalProtocolError(f"not a Request-URI: {uri!r}")
    return uri


def _assemble(start: bytes, names: list[bytes], values: list[bytes], body: bytes) -> bytes:
    n = len(names)
    pieces = chain.from_iterable(zip((CRLF,) * n, names, (b":",) * n, values, strict=True))
    return b"".join((start, *pieces, CRLF, CRLF, body))


def _checked_key(name: bytes, value: bytes) -> bytes:
    key = canonical(name)
    if not key:
        raise LocalProtocolError(f"not a header name: {name!r}")
    if 13 in value or 10 in value:
        raise LocalProtocolError(f"line break in a header value: {value!r}")
    return key


def _split_lines(keys: list[bytes], lines: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    """The names and values of whole header lines, one canonical key each."""
    if len(keys) != len(lines):
        raise LocalProtocolError("one key per header line")
    names: list[bytes] = []
    values: list[bytes] = []
    for line in lines:
        name, colon, value = line.partition(b":")
        if not colon:
            raise LocalProtocolError(f"header line without a colon: {line!r}")
        names.append(name)
        values.append(value)
    return names, values


def _pairs_to_lines(headers: list[tuple[bytes, bytes]]) -> tuple[list[bytes], list[bytes]]:
    keys = [_checked_key(name, value) for name, value in headers]
    return keys, [name + b": " + value for name, value in headers]
