"""Header names, compact forms and the splitting of comma-separated header values.

RFC 3261 7.3.1: header names are case-insensitive; 7.3.3 lists the compact forms; a header whose
grammar is a comma-separated list may appear as several lines or as one line with commas, and
commas inside quoted strings and ``<...>`` do not separate values.
"""

from __future__ import annotations

import re
from typing import Final

# RFC 3261 7.3.3, RFC 3262, RFC 3515, RFC 3841, RFC 3892, RFC 4028, RFC 3903, RFC 4474 ...
COMPACT_FORMS: Final[dict[bytes, bytes]] = {
    b"v": b"via",
    b"i": b"call-id",
    b"f": b"from",
    b"t": b"to",
    b"m": b"contact",
    b"l": b"content-length",
    b"c": b"content-type",
    b"s": b"subject",
    b"k": b"supported",
    b"e": b"content-encoding",
    b"o": b"event",
    b"u": b"allow-events",
    b"r": b"refer-to",
    b"b": b"referred-by",
    b"x": b"session-expires",
    b"a": b"accept-contact",
    b"j": b"reject-contact",
    b"d": b"request-disposition",
    b"y": b"identity",
    b"n": b"identity-info",
}

# Headers whose grammar is a comma-separated list (RFC 3261 7.3.1 and section 20, and the
# extensions a proxy meets: RFC 3327 Path, RFC 3608 Service-Route, RFC 3841, RFC 7044 ...).
LIST_HEADERS: Final[frozenset[bytes]] = frozenset(
    {
        b"via",
        b"route",
        b"record-route",
        b"path",
        b"service-route",
        b"contact",
        b"allow",
        b"supported",
        b"require",
        b"proxy-require",
        b"unsupported",
        b"accept",
        b"accept-encoding",
        b"accept-language",
        b"allow-events",
        b"content-encoding",
        b"content-language",
        b"in-reply-to",
        b"alert-info",
        b"call-info",
        b"error-info",
        b"warning",
        b"accept-contact",
        b"reject-contact",
        b"request-disposition",
        b"history-info",
        b"p-asserted-identity",
        b"p-preferred-identity",
        b"p-associated-uri",
        b"privacy",
        b"reason",
    }
)

# RFC 3261 25.1: token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")
TOKEN: Final = rb"[A-Za-z0-9\-.!%*_+`'~]+"
_TOKEN_RE: Final = re.compile(TOKEN)

# Canonical keys are interned: the message layer's lookups use these very objects, so a list
# search finds them by identity.
_KEYS: dict[bytes, bytes] = {}


def key_for(canonical_name: bytes) -> bytes:
    """The interned lookup key for a canonical (lower-case, long-form) header name."""
    return _KEYS.setdefault(canonical_name, canonical_name)


# Raw header name as written -> canonical key. Real traffic uses a few dozen spellings, so the
# cache stays small; it is bounded anyway so garbage cannot grow it.
_CANON_CACHE: dict[bytes, bytes] = {}
_CANON_CACHE_MAX: Final = 4096
# ``canonical_cached(name)``: the cached key, or ``None`` (a C-level call for the parser's loop).
canonical_cached: Final = _CANON_CACHE.get
# ``canonical_lookup(name)``: the cached key, or ``KeyError`` for a name not seen yet.
canonical_lookup: Final = _CANON_CACHE.__getitem__


def is_token(value: bytes) -> bool:
    """RFC 3261 25.1 ``token``: one or more token characters."""
    return _TOKEN_RE.fullmatch(value) is not None


def canonical(name: bytes) -> bytes:
    """The lookup key of a header name as written: lower case, compact form expanded.

    White space around the name is ignored (``Via  :`` is a Via). Returns ``b""`` for a name that
    is not a token (the parser rejects such a header).
    """
    key = _CANON_CACHE.get(name)
    if key is not None:
        return key
    stripped = name.strip(b" \t")
    if not is_token(stripped):
        return b""
    key = stripped.lower()
    key = COMPACT_FORMS.get(key, key)
    if len(_CANON_CACHE) < _CANON_CACHE_MAX:  # bounded: garbage names cannot grow either table
        key = key_for(key)
        _CANON_CACHE[name] = key
    return key


def _commas(value: bytes) -> list[int]:
    """Offsets of the commas that separate list elements (none inside quotes or ``<...>``)."""
    out: list[int] = []
    in_quotes = False
    in_angle = False
    i = 0
    n = len(value)
    while i < n:
        c = value[i]
        if in_quotes:
            if c == 0x5C:  # backslash: quoted-pair, the next byte is taken as is
                i += 1
            elif c == 0x22:
                in_quotes = False
        elif c == 0x22:
            in_quotes = True
        elif c == 0x3C:
            in_angle = True
        elif c == 0x3E:
            in_angle = False
        elif c == 0x2C and not in_angle:
            out.append(i)
        i += 1
    return out


def split_elements(value: bytes) -> list[bytes]:
    """Split a comma-separated value into its stripped elements, empty ones included."""
    if b"," not in value:
        return [value.strip(b" \t")]
    if b'"' not in value and b"<" not in value:
        return [part.strip(b" \t") for part in value.split(b",")]
    parts: list[bytes] = []
    start = 0
    for comma in _commas(value):
        parts.append(value[start:comma].strip(b" \t"))
        start = comma + 1
    parts.append(value[start:].strip(b" \t"))
    return parts


def split_list(value: bytes) -> list[bytes]:
    """Split a comma-separated header value; commas in quotes or ``<...>`` do not count.

    Empty elements (``a,,b``) are dropped, as RFC 7230's list rule allows.
    """
    return [part for part in split_elements(value) if part]


def first_comma(value: bytes) -> int:
    """Offset of the comma ending the first list element of ``value``, or -1."""
    i = value.find(b",")
    if i < 0 or (b'"' not in value[:i] and b"<" not in value[:i]):
        return i
    commas = _commas(value)
    return commas[0] if commas else -1


def unfold(value: bytes) -> bytes:
    """Replace line folding (CRLF followed by white space) with one space (RFC 3261 7.3.1)."""
    if b"\n" not in value:
        return value
    lines = value.replace(b"\r\n", b"\n").split(b"\n")
    return b" ".join(line.strip(b" \t") for line in lines)
