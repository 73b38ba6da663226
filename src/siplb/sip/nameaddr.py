"""name-addr and addr-spec values of From, To, Contact, Route, Record-Route, Path (RFC 3261 20.10).

``( name-addr / addr-spec ) *( SEMI param )``, ``name-addr = [ display-name ] LAQUOT addr-spec
RAQUOT``, ``display-name = *(token LWS) / quoted-string``. Without angle brackets, parameters after
the URI belong to the header, not to the URI.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final

from .errors import ParseError
from .headers import unfold
from .params import Params, format_params, parse_params
from .uri import Uri, parse_uri

_QUOTED_RE: Final = re.compile(rb'[ \t]*"((?:[^"\\\r\n]|\\[\x00-\x09\x0b\x0c\x0e-\x7f])*)"[ \t]*<')
_TOKENS_RE: Final = re.compile(rb"[ \t]*((?:[A-Za-z0-9\-.!%*_+`'~]+[ \t]*)*)<")


@dataclass(frozen=True, slots=True)
class NameAddr:
    uri: bytes  # the addr-spec as written
    display: bytes | None = None  # unquoted, escapes resolved
    params: Params = field(default_factory=dict)
    bracketed: bool = True

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def parsed_uri(self) -> Uri:
        return parse_uri(self.uri)

    def to_bytes(self) -> bytes:
        out = bytearray()
        if self.display is not None:
            out += b'"' + self.display.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'" '
        out += b"<" + self.uri + b">"
        out += format_params(self.params)
        return bytes(out)


def parse_name_addr(value: bytes) -> NameAddr:
    """Parse one name-addr or addr-spec with its header parameters."""
    value = unfold(value).strip(b" \t")
    if not value:
        raise ParseError("empty address")
    display: bytes | None = None
    if value[:1] == b'"':
        m = _QUOTED_RE.match(value)
        if m is None:
            raise ParseError("unterminated quoted display name")
        display = re.sub(rb"\\(.)", rb"\1", m.group(1), flags=re.S)
        start = m.end()
    elif b"<" in value:
        m = _TOKENS_RE.match(value)
        if m is None:
            raise ParseError("malformed display name")
        tokens = m.group(1).strip(b" \t")
        display = tokens or None
        start = m.end()
    else:
        uri, _, rest = value.partition(b";")
        uri = uri.rstrip(b" \t")
        _check_uri(uri)
        params = parse_params(b";" + rest, "address") if _ else {}
        return NameAddr(uri, None, params, bracketed=False)
    close = value.find(b">", start)
    if close < 0:
        raise ParseError("missing '>' in address")
    uri = value[start:close]
    _check_uri(uri)
    return NameAddr(uri, display, parse_params(value[close + 1 :], "address"))


def _check_uri(uri: bytes) -> None:
    if not uri or b" " in uri or b"\t" in uri or b"<" in uri:
        raise ParseError("malformed URI in address")
    parse_uri(uri)


_TAG_RE: Final = re.compile(rb";[ \t]*tag[ \t]*=[ \t]*([A-Za-z0-9\-.!%*_+`'~]+)", re.I)


def tag_of(value: bytes) -> bytes | None:
    """The ``tag`` parameter of a From/To value, fast path for the proxy's hot path.

    Looks only after the closing ``>`` (or anywhere when there is none, where a URI may not carry
    ``;tag``), so a ``tag`` uri-parameter inside brackets is never taken for the header's.
    """
    close = value.rfind(b">")
    m = _TAG_RE.search(value, close + 1 if close >= 0 else 0)
    return m.group(1) if m else None
