"""name-addr and addr-spec values of From, To, Contact, Route, Record-Route, Path (RFC 3261 20.10).

``( name-addr / addr-spec ) *( SEMI param )``, ``name-addr = [ display-name ] LAQUOT addr-spec
RAQUOT``, ``display-name = *(token LWS) / quoted-string``. Without angle brackets, parameters after
the URI belong to the header, not to the URI, and the URI may contain no comma, semicolon or
question mark (RFC 3261 20.10).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final

from .errors import LocalProtocolError, ParseError
from .headers import TOKEN, unfold
from .params import QUOTED_STRING, Params, format_params, parse_params, quote, unquote
from .uri import Uri, parse_uri

_QUOTED_RE: Final = re.compile(rb"[ \t]*(" + QUOTED_STRING + rb")[ \t]*<")
# RFC 4475 3.1.1.6: no LWS is needed between a token display name and "<". Written so that no
# input can make it backtrack exponentially (each token is delimited by white space).
_TOKENS_RE: Final = re.compile(rb"[ \t]*((?:" + TOKEN + rb"(?:[ \t]+" + TOKEN + rb")*)?)[ \t]*<")


@dataclass(frozen=True, slots=True)
class NameAddr:
    uri: bytes  # the addr-spec as written
    display: bytes | None = None  # unquoted, escapes resolved
    params: Params = field(default_factory=dict)
    bracketed: bool = True  # False for a bare addr-spec (``To: sip:a@b;tag=1``)

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def parsed_uri(self) -> Uri:
        return parse_uri(self.uri)

    def to_bytes(self) -> bytes:
        """The value as a header carries it (bare only when it was bare and can stay so)."""
        if not self.bracketed and self.display is None and not _BARE_BAD_RE.search(self.uri):
            return self.uri + format_params(self.params)
        if b">" in self.uri:
            raise LocalProtocolError(f"'>' in a URI: {self.uri!r}")
        out = b""
        if self.display is not None:
            out = quote(self.display) + b" "
        return out + b"<" + self.uri + b">" + format_params(self.params)


_BARE_BAD_RE: Final = re.compile(rb"[,;?]")


# Parsed values by their bytes, as for URIs (``uri._PARSED``): Contact, Route and Record-Route
# values repeat on every message of a dialog, From and To on every message of a transaction.
# Only values that parse are kept; the table is emptied when full. A ``NameAddr`` is frozen and
# its ``params`` are never changed in place, so the values can be shared.
_PARSED: Final[dict[bytes, NameAddr]] = {}
_PARSED_MAX: Final = 4096
_PARSED_MAX_BYTES: Final = 512


def parse_name_addr(value: bytes) -> NameAddr:
    """Parse one name-addr or addr-spec with its header parameters."""
    addr = _PARSED.get(value)
    if addr is None:
        addr = _parse_name_addr(value)
        if len(value) <= _PARSED_MAX_BYTES:
            if len(_PARSED) >= _PARSED_MAX:
                _PARSED.clear()
            _PARSED[value] = addr
    return addr


def _parse_name_addr(value: bytes) -> NameAddr:
    if b"\n" in value:
        value = unfold(value)
    value = value.strip(b" \t")
    if not value:
        raise ParseError("empty address")
    display: bytes | None = None
    if value[:1] == b'"':
        m = _QUOTED_RE.match(value)
        if m is None:
            raise ParseError("malformed quoted display name")
        display = unquote(m.group(1))
        start = m.end()
    elif b"<" in value:
        m = _TOKENS_RE.match(value)
        if m is None:
            raise ParseError("malformed display name")
        display = m.group(1).rstrip(b" \t") or None
        start = m.end()
    else:
        uri, semi, rest = value.partition(b";")
        uri = uri.rstrip(b" \t")
        if _BARE_BAD_RE.search(uri):
            raise ParseError("an addr-spec with ',', ';' or '?' must be in <>")
        _check_uri(uri)
        params = parse_params(semi + rest, "address") if semi else {}
        return NameAddr(uri, None, params, bracketed=False)
    close = value.find(b">", start)
    if close < 0:
        raise ParseError("missing '>' in address")
    uri = value[start:close]
    _check_uri(uri)
    return NameAddr(uri, display, parse_params(value[close + 1 :], "address"))


_URI_CHARS_BAD_RE: Final = re.compile(rb"[\x00-\x20<>\"\x7f-\xff]")


def _check_uri(uri: bytes) -> None:
    if not uri or _URI_CHARS_BAD_RE.search(uri):
        raise ParseError("malformed URI in address")
    parse_uri(uri)


_TAG_RE: Final = re.compile(rb";[ \t]*tag[ \t]*=[ \t]*(" + TOKEN + rb")[ \t]*(?:;|$)", re.I)
_DISPLAY_QUOTED_RE: Final = re.compile(rb"[ \t]*" + QUOTED_STRING)


def tag_of(value: bytes) -> bytes | None:
    """The ``tag`` parameter of a From/To value, fast path for the proxy's hot path.

    Looks only after the addr-spec (after its ``>`` when there is one), so neither a ``tag``
    uri-parameter inside the brackets nor a quoted display name can be taken for the header's.
    Returns ``None`` for a value without a tag, and for one too malformed to tell.
    """
    if 34 not in value:  # no '"': the first '>' closes the addr-spec
        gt = value.find(b">")
        if gt >= 0 or 60 not in value:  # a bare addr-spec has no ';' in its URI
            m = _TAG_RE.search(value, gt + 1)
            return m.group(1) if m else None
        return None
    return _tag_slow(value)


def _tag_slow(value: bytes) -> bytes | None:
    lt = value.find(b"<")
    if lt < 0:
        pos = value.find(b";")  # a bare addr-spec: its URI holds no '"', ';' or '<'
        if pos < 0 or 34 in value[:pos]:
            return None
    else:
        if 34 in value[:lt]:
            m = _DISPLAY_QUOTED_RE.match(value)
            if m is None:
                return None
            lt = value.find(b"<", m.end())
            if lt < 0:
                return None
        pos = value.find(b">", lt) + 1
        if pos == 0:
            return None
    try:  # a quoted parameter value may hide ";tag=": parse them all
        tag = parse_params(value[pos:], "address").get("tag")
    except ParseError:
        return None
    return None if tag is None else tag.encode("latin-1")
