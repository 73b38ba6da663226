"""SIP and SIPS URIs (RFC 3261 19.1), parsed only when asked for; other schemes kept opaque.

``SIP-URI = "sip:" [ userinfo ] hostport uri-parameters [ headers ]``. The user part keeps its
escapes (``%40``) as written; ``SipUri.user_unescaped`` decodes them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import unquote_to_bytes

from .errors import ParseError
from .params import Params, format_params

_SCHEME_RE: Final = re.compile(rb"[A-Za-z][A-Za-z0-9+\-.]*")
# userinfo characters: unreserved / escaped / user-unreserved ("&=+$,;?/"), plus ":" for password.
_USERINFO_RE: Final = re.compile(rb"(?:[A-Za-z0-9\-_.!~*'()&=+$,;?/:]|%[0-9A-Fa-f]{2})*")
_HOSTNAME_RE: Final = re.compile(rb"[A-Za-z0-9](?:[A-Za-z0-9\-.]*[A-Za-z0-9.])?")
_IPV6_RE: Final = re.compile(rb"\[([0-9A-Fa-f:.]+)\]")
# uri-parameter: pname [ "=" pvalue ], paramchar = param-unreserved / unreserved / escaped.
_URI_PARAM_RE: Final = re.compile(
    rb";((?:[A-Za-z0-9\-_.!~*'()\[\]/:&+$]|%[0-9A-Fa-f]{2})+)"
    rb"(?:=((?:[A-Za-z0-9\-_.!~*'()\[\]/:&+$]|%[0-9A-Fa-f]{2})+))?"
)
_HEADERS_RE: Final = re.compile(rb"(?:[A-Za-z0-9\-_.!~*'()\[\]/?:+$=&]|%[0-9A-Fa-f]{2})*")


@dataclass(frozen=True, slots=True)
class SipUri:
    scheme: str  # "sip" or "sips", lower case
    host: str  # IPv6 without brackets
    port: int | None = None
    user: bytes | None = None
    password: bytes | None = None
    params: Params = field(default_factory=dict)
    headers: bytes = b""  # after "?", as written

    @property
    def is_ipv6(self) -> bool:
        return ":" in self.host

    @property
    def host_port(self) -> str:
        host = f"[{self.host}]" if self.is_ipv6 else self.host
        return host if self.port is None else f"{host}:{self.port}"

    @property
    def user_unescaped(self) -> bytes | None:
        return None if self.user is None else unquote_to_bytes(self.user)

    @property
    def transport(self) -> str:
        """The ``transport`` parameter, or what the scheme implies (RFC 3261 19.1.4 / 26.2)."""
        value = self.params.get("transport")
        if value:
            return value.lower()
        return "tls" if self.scheme == "sips" else "udp"

    def to_bytes(self) -> bytes:
        out = bytearray(self.scheme.encode("ascii") + b":")
        if self.user is not None:
            out += self.user
            if self.password is not None:
                out += b":" + self.password
            out += b"@"
        out += self.host_port.encode("ascii")
        out += format_params(self.params)
        if self.headers:
            out += b"?" + self.headers
        return bytes(out)


@dataclass(frozen=True, slots=True)
class OpaqueUri:
    """A URI of a scheme we do not interpret (tel, urn, im, ...): scheme and text only."""

    scheme: str
    raw: bytes

    def to_bytes(self) -> bytes:
        return self.raw


Uri = SipUri | OpaqueUri


def parse_uri(raw: bytes) -> Uri:
    """Parse a URI; ``ParseError`` on a malformed SIP/SIPS URI or a missing scheme."""
    colon = raw.find(b":")
    if colon <= 0 or not _SCHEME_RE.fullmatch(raw, 0, colon):
        raise ParseError("URI has no scheme")
    scheme = raw[:colon].decode("ascii").lower()
    if scheme not in ("sip", "sips"):
        if not raw[colon + 1 :] or any(c <= 0x20 or c >= 0x7F for c in raw):
            raise ParseError(f"malformed {scheme} URI")
        return OpaqueUri(scheme, raw)
    return _parse_sip(raw, colon + 1, scheme)


def parse_sip_uri(raw: bytes) -> SipUri:
    """Parse a URI that must be SIP or SIPS (``ParseError`` with hint 416 otherwise)."""
    uri = parse_uri(raw)
    if not isinstance(uri, SipUri):
        raise ParseError(f"unsupported URI scheme {uri.scheme!r}", 416)
    return uri


def _parse_sip(raw: bytes, pos: int, scheme: str) -> SipUri:
    user: bytes | None = None
    password: bytes | None = None
    at = raw.find(b"@", pos)
    if at >= 0:
        if not _USERINFO_RE.fullmatch(raw, pos, at):
            raise ParseError("malformed user part in SIP URI")
        userinfo = raw[pos:at]
        user, sep, pw = userinfo.partition(b":")
        password = pw if sep else None
        if not user:
            raise ParseError("empty user part in SIP URI")
        pos = at + 1
    host, port, pos = _parse_hostport(raw, pos)
    params: Params = {}
    end = len(raw)
    while pos < end and raw[pos] == 0x3B:  # ";"
        m = _URI_PARAM_RE.match(raw, pos)
        if m is None:
            raise ParseError("malformed SIP URI parameter")
        name = unquote_to_bytes(m.group(1)).decode("latin-1").lower()
        value = m.group(2)
        params[name] = None if value is None else unquote_to_bytes(value).decode("latin-1")
        pos = m.end()
    headers = b""
    if pos < end:
        if raw[pos] != 0x3F or not _HEADERS_RE.fullmatch(raw, pos + 1):  # "?"
            raise ParseError("malformed SIP URI")
        headers = raw[pos + 1 :]
    return SipUri(scheme, host, port, user, password, params, headers)


def _parse_hostport(raw: bytes, pos: int) -> tuple[str, int | None, int]:
    m = _IPV6_RE.match(raw, pos) if raw[pos : pos + 1] == b"[" else _HOSTNAME_RE.match(raw, pos)
    if m is None:
        raise ParseError("malformed host in SIP URI")
    host = (m.group(1) if m.re is _IPV6_RE else m.group(0)).decode("ascii")
    pos = m.end()
    port: int | None = None
    if raw[pos : pos + 1] == b":":
        start = pos + 1
        pos = start
        while pos < len(raw) and 0x30 <= raw[pos] <= 0x39:
            pos += 1
        if pos == start or pos - start > 5 or int(raw[start:pos]) > 65535:
            raise ParseError("malformed port in SIP URI")
        port = int(raw[start:pos])
    return host.lower(), port, pos
