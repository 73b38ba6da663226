"""Generic parameters: ``*( SEMI generic-param )`` as used by Via, name-addr and URIs.

RFC 3261 25.1: ``SEMI = SWS ";" SWS``, ``EQUAL = SWS "=" SWS``,
``generic-param = token [ EQUAL gen-value ]``, ``gen-value = token / host / quoted-string``.
Parameter names are case-insensitive and returned lower-cased; values keep their case. A valueless
parameter maps to ``None``.
"""

from __future__ import annotations

import re
from typing import Final

from .errors import ParseError

Params = dict[str, str | None]

_TOKEN: Final = rb"[A-Za-z0-9\-.!%*_+`'~]+"
# gen-value: a token, a host (IPv6 reference included) or a quoted string.
_VALUE: Final = rb'(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-.!%*_+`\'~:]+|"(?:[^"\\\r\n]|\\[\x00-\x09\x0b\x0c\x0e-\x7f])*")'
_PARAM_RE: Final = re.compile(
    rb"[ \t]*;[ \t]*(" + _TOKEN + rb")(?:[ \t]*=[ \t]*(" + _VALUE + rb"))?[ \t]*"
)


# The common case: no white space, no quoted strings. Checked in one C call, split cheaply.
SIMPLE_PARAMS: Final = (
    rb"(?:;[A-Za-z0-9\-.!%*_+`'~]+(?:=(?:[A-Za-z0-9\-.!%*_+`'~:]+|\[[0-9A-Fa-f:.]+\]))?)*"
)
_SIMPLE_RE: Final = re.compile(SIMPLE_PARAMS)


def parse_params(data: bytes, what: str) -> Params:
    """Parse ``;a=1;b;c="x y"`` (leading white space allowed) into a dict.

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
        raw = m.group(2)
        if raw is None:
            params[name] = None
        elif raw[:1] == b'"':
            params[name] = _unquote(raw).decode("latin-1")
        else:
            params[name] = raw.decode("ascii")
        pos = m.end()
    return params


def split_simple_params(data: bytes) -> Params:
    """Split parameters already checked against ``SIMPLE_PARAMS``."""
    params: Params = {}
    if data:
        for item in data[1:].split(b";"):
            name, eq, value = item.partition(b"=")
            params[name.decode("ascii").lower()] = value.decode("ascii") if eq else None
    return params


def _unquote(quoted: bytes) -> bytes:
    inner = quoted[1:-1]
    if b"\\" not in inner:
        return inner
    return re.sub(rb"\\(.)", rb"\1", inner, flags=re.S)


def format_params(params: Params) -> bytes:
    """Serialize parameters back to ``;name=value`` form (values needing it are quoted)."""
    out = bytearray()
    for name, value in params.items():
        out += b";" + name.encode("ascii")
        if value is not None:
            raw = value.encode("latin-1")
            if _TOKEN_OR_HOST.fullmatch(raw):
                out += b"=" + raw
            else:
                out += b'="' + raw.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return bytes(out)


_TOKEN_OR_HOST: Final = re.compile(rb"\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-.!%*_+`'~:]+")
