"""SIP and SIPS URIs (RFC 3261 19.1, 25.1), parsed only when asked for; other schemes opaque.

``SIP-URI = "sip:" [ userinfo ] hostport uri-parameters [ headers ]``. The user and password keep
their escapes (``%40``) as written; ``SipUri.user_unescaped`` decodes them. Parameter names and
values are unescaped (``;%6C%72`` is ``lr``, RFC 4475 3.1.1.3) and escaped again on output.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import unquote_to_bytes

from .errors import LocalProtocolError, ParseError
from .params import Params

_SCHEME_RE: Final = re.compile(rb"[A-Za-z][A-Za-z0-9+\-.]*")
_ESCAPED: Final = rb"%[0-9A-Fa-f]{2}"
_UNRESERVED: Final = rb"A-Za-z0-9\-_.!~*'()"
# user = 1*( unreserved / escaped / user-unreserved ), user-unreserved = "&=+$,;?/"
_USER_RE: Final = re.compile(rb"(?:[" + _UNRESERVED + rb"&=+$,;?/]|" + _ESCAPED + rb")+")
# password = *( unreserved / escaped / "&" / "=" / "+" / "$" / "," )
_PASSWORD_RE: Final = re.compile(rb"(?:[" + _UNRESERVED + rb"&=+$,]|" + _ESCAPED + rb")*")
# hostname / IPv4address (underscores occur in real hostnames and are let through) or an IPv6
# reference.
_HOSTNAME_RE: Final = re.compile(rb"[A-Za-z0-9_](?:[A-Za-z0-9_\-.]*[A-Za-z0-9_.])?")
_IPV6_RE: Final = re.compile(rb"\[([0-9A-Fa-f:.]+)\]")
_PORT_RE: Final = re.compile(rb":([0-9]{1,5})")
# uri-parameter = pname [ "=" pvalue ], paramchar = param-unreserved / unreserved / escaped,
# param-unreserved = "[" / "]" / "/" / ":" / "&" / "+" / "$"
_PARAMCHAR: Final = rb"[" + _UNRESERVED + rb"\[\]/:&+$]"
_URI_PARAM_RE: Final = re.compile(
    rb";((?:" + _PARAMCHAR + rb"|" + _ESCAPED + rb")+)"
    rb"(?:=((?:" + _PARAMCHAR + rb"|" + _ESCAPED + rb")+))?"
)
_PARAMCHAR_RE: Final = re.compile(_PARAMCHAR)
# headers = "?" header *( "&" header ), header = hname "=" hvalue, hnv-unreserved = "[]/?:+$"
_HCHAR: Final = rb"(?:[" + _UNRESERVED + rb"\[\]/?:+$]|" + _ESCAPED + rb")"
_HEADERS_RE: Final = re.compile(
    _HCHAR + rb"+=" + _HCHAR + rb"*(?:&" + _HCHAR + rb"+=" + _HCHAR + rb"*)*"
)
# Other schemes: printable ASCII, no white space.
_OPAQUE_RE: Final = re.compile(rb"[\x21-\x7e]+")


@dataclass(frozen=True, slots=True)
class SipUri:
    scheme: str  # "sip" or "sips", lower case
    host: str  # lower case; IPv6 without brackets
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

    @property
    def lr(self) -> bool:
        """Loose routing (RFC 3261 19.1.1): the ``lr`` parameter is there."""
        return "lr" in self.params

    def to_bytes(self) -> bytes:
        out = bytearray(self.scheme.encode("ascii") + b":")
        if self.user is not None:
            out += self.user
            if self.password is not None:
                out += b":" + self.password
            out += b"@"
        out += self.host_port.encode("ascii")
        for name, value in self.params.items():
            out += b";" + _escape(name)
            if value is not None:
                out += b"=" + _escape(value)
        if self.headers:
            out += b"?" + self.headers
        return bytes(out)


@dataclass(frozen=True, slots=True)
class OpaqueUri:
    """A URI of a scheme we do not interpret (tel, urn, im, ...): scheme and text only."""

    scheme: str  # lower case
    raw: bytes

    def to_bytes(self) -> bytes:
        return self.raw


Uri = SipUri | OpaqueUri


# Parsed URIs by their bytes: a proxy reads the same few URIs over and over (every Contact,
# Route and Request-URI of a dialog, the From/To URIs of a trunk). Only URIs that parse are kept,
# and the table is emptied when full, so no input can make it grow without limit. The values are
# shared: a ``SipUri`` is frozen and its ``params`` are never changed in place (edits copy them).
_PARSED: Final[dict[bytes, Uri]] = {}
_PARSED_MAX: Final = 4096
_PARSED_MAX_BYTES: Final = 512


def parse_uri(raw: bytes) -> Uri:
    """Parse a URI; ``ParseError`` on a malformed SIP/SIPS URI or a missing scheme."""
    uri = _PARSED.get(raw)
    if uri is None:
        uri = _parse_uri(raw)
        if len(raw) <= _PARSED_MAX_BYTES:
            if len(_PARSED) >= _PARSED_MAX:
                _PARSED.clear()
            _PARSED[raw] = uri
    return uri


def _parse_uri(raw: bytes) -> Uri:
    colon = raw.find(b":")
    if colon <= 0 or not _SCHEME_RE.fullmatch(raw, 0, colon):
        raise ParseError("URI has no scheme")
    scheme = raw[:colon].decode("ascii").lower()
    if scheme not in ("sip", "sips"):
        if colon + 1 == len(raw) or not _OPAQUE_RE.fullmatch(raw):
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
        colon = raw.find(b":", pos, at)
        user_end = at if colon < 0 else colon
        if not _USER_RE.fullmatch(raw, pos, user_end):
            raise ParseError("malformed user part in SIP URI")
        user = raw[pos:user_end]
        if colon >= 0:
            if not _PASSWORD_RE.fullmatch(raw, colon + 1, at):
                raise ParseError("malformed password in SIP URI")
            password = raw[colon + 1 : at]
        pos = at + 1
    host, pos = _parse_host(raw, pos)
    port: int | None = None
    m = _PORT_RE.match(raw, pos)
    if m is not None:
        port = int(m.group(1))
        if port > 65535:
            raise ParseError("malformed port in SIP URI")
        pos = m.end()
    params: Params = {}
    end = len(raw)
    while pos < end and raw[pos] == 0x3B:  # ";"
        m = _URI_PARAM_RE.match(raw, pos)
        if m is None:
            raise ParseError("malformed SIP URI parameter")
        name = unquote_to_bytes(m.group(1)).decode("latin-1").lower()
        value = m.group(2)
        if name not in params:
            params[name] = None if value is None else unquote_to_bytes(value).decode("latin-1")
        pos = m.end()
    headers = b""
    if pos < end:
        if raw[pos] != 0x3F or not _HEADERS_RE.fullmatch(raw, pos + 1):  # "?"
            raise ParseError("malformed SIP URI")
        headers = raw[pos + 1 :]
    return SipUri(scheme, host, port, user, password, params, headers)


def ipv6_text(address: bytes) -> str:
    """The text of an IPv6 address (without brackets), compressed, lower case; ``ValueError``
    when it is none. RFC 5118 4.10: the RFC 3261 ABNF lets an IPv4 tail follow a ``::`` with
    a colon of its own (``2001:db8:::192.0.2.1``); such an address is read without the extra
    colon, as that RFC suggests, and written without it."""
    text = address.decode("ascii")
    try:
        return str(ipaddress.IPv6Address(text))
    except ValueError:
        head, sep, tail = text.rpartition(":::")
        if not sep or "." not in tail or ":" in tail:
            raise
        return str(ipaddress.IPv6Address(f"{head}::{tail}"))


def _parse_host(raw: bytes, pos: int) -> tuple[str, int]:
    if raw[pos : pos + 1] == b"[":
        m = _IPV6_RE.match(raw, pos)
        if m is None:
            raise ParseError("malformed IPv6 reference in SIP URI")
        try:
            host = ipv6_text(m.group(1))
        except ValueError:
            raise ParseError("malformed IPv6 reference in SIP URI") from None
        return host, m.end()
    m = _HOSTNAME_RE.match(raw, pos)
    if m is None:
        raise ParseError("malformed host in SIP URI")
    return m.group(0).decode("ascii").lower(), m.end()


def _escape(text: str) -> bytes:
    """A parameter name or value as paramchars, escaping what is not one."""
    try:
        raw = text.encode("latin-1")
    except UnicodeEncodeError:
        raise LocalProtocolError(f"not a byte string: {text!r}") from None
    return b"".join(
        bytes((c,)) if _PARAMCHAR_RE.fullmatch(bytes((c,))) else b"%%%02X" % c for c in raw
    )
