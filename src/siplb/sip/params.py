"""Generic parameters: ``*( SEMI generic-param )`` as used by Via and name-addr headers.

RFC 3261 25.1: ``SEMI = SWS ";" SWS``, ``EQUAL = SWS "=" SWS``,
``generic-param = token [ EQUAL gen-value ]``, ``gen-value = token / host / quoted-string``.
Parameter names are case-insensitive and returned lower-cased; values keep their case. A valueless
parameter maps to ``None``. When a name appears twice, the first one counts.
"""

from __future__ import annotations

import re
from typing import Final

from .errors import LocalProtocolError, ParseError

Params = dict[str, str | None]

_TOKEN: Final = rb"[A-Za-z0-9\-.!%*_+`'~]+"
# host: an IPv6 reference, or a hostname / IPv4 address (token characters cover both); ":" lets
# an unbracketed IPv6 address through (RFC 3261 ``received``).
_HOST_VALUE: Final = rb"\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-.!%*_+`'~:]+"
# quoted-string: qdtext (LWS, printable ASCII but '"' and '\', UTF-8 bytes) or a quoted-pair.
QUOTED_STRING: Final = (
    rb'"(?:[\t\x20\x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\x00-\x09\x0b\x0c\x0e-\x7f])*"'
)
_PARAM_RE: Final = re.compile(
    rb"[ \t]*;[ \t]*("
    + _TOKEN
    + rb")(?:[ \t]*=[ \t]*("
    + _HOST_VALUE
    + rb"|"
    + QUOTED_STRING
    + rb"))?[ \t]*"
)
_QUOTED_PAIR_RE: Final = re.compile(rb"\\(.)", re.S)

# The common case: no white space, no quoted strings. Checked in one C call, split cheaply.
SIMPLE_PARAMS: Final = rb"(?:;" + _TOKEN + rb"(?:=(?:" + _HOST_VALUE + rb"))?)*"
_SIMPLE_RE: Final = re.compile(SIMPLE_PARAMS)


def parse_params(data: bytes, what: str) -> Params:
    """Parse ``;a=1;b;c="x y"`` (white space around the separators allowed) into a dict.

    Raises ``ParseError`` naming ``what`` on anything else: an empty parameter (``;;``), a ``=``
    without a value, an unterminated quoted string, stray characters.
    """
    if _SIMPLE_RE.fullmatch(data):
        return split_simple_params(data)
    params: Params = {}
    pos = 0
    end = len(data)
    match = _PARAM_RE.match
    while pos < end:
        m = match(data, pos)
        if m is None:
            if not data[pos:].strip(b" \t"):
                break
            raise ParseError(f"malformed parameters in {what}")
        name = m.group(1).decode("ascii").lower()
        if name not in params:
            params[name] = _value(m.group(2))
        pos = m.end()
    return params


def _value(raw: bytes | None) -> str | None:
    if raw is None:
        return None
    if raw[:1] == b'"':
        return unquote(raw).decode("latin-1")
    return raw.decode("ascii")


def split_simple_params(data: bytes) -> Params:
    """Split parameters already checked against ``SIMPLE_PARAMS``."""
    params: Params = {}
    if data:
        for item in data[1:].split(b";"):
            name, eq, value = item.partition(b"=")
            key = name.decode("ascii").lower()
            if key not in params:
                params[key] = value.decode("ascii") if eq else None
    return params


def unquote(quoted: bytes) -> bytes:
    """The content of a quoted-string, quoted-pairs resolved."""
    inner = quoted[1:-1]
    if b"\\" not in inner:
        return inner
    return _QUOTED_PAIR_RE.sub(rb"\1", inner)


def quote(raw: bytes) -> bytes:
    """A quoted-string carrying ``raw`` (``LocalProtocolError`` for CR or LF, which none can)."""
    if b"\r" in raw or b"\n" in raw:
        raise LocalProtocolError(f"CR or LF cannot be quoted: {raw!r}")
    return b'"' + re.sub(rb'([\\"\x00-\x08\x0b\x0c\x0e-\x1f\x7f])', rb"\\\1", raw) + b'"'


def format_params(params: Params) -> bytes:
    """Serialize parameters back to ``;name=value`` form (values needing it are quoted)."""
    out = bytearray()
    for name, value in params.items():
        raw_name = name.encode("ascii")
        if not _TOKEN_RE.fullmatch(raw_name):
            raise LocalProtocolError(f"not a parameter name: {name!r}")
        out += b";" + raw_name
        if value is not None:
            raw = value.encode("latin-1")
            out += b"=" + (raw if _HOST_VALUE_RE.fullmatch(raw) else quote(raw))
    return bytes(out)


_TOKEN_RE: Final = re.compile(_TOKEN)
_HOST_VALUE_RE: Final = re.compile(_HOST_VALUE)
