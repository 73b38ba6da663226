"""The Via header (RFC 3261 20.42, 18.2.1, RFC 3581 rport).

``via-parm = sent-protocol LWS sent-by *( SEMI via-params )``,
``sent-protocol = protocol-name SLASH protocol-version SLASH transport`` (white space allowed
around each slash), ``sent-by = host [ COLON port ]``.

A proxy reads the top Via of every message, mostly for its branch, so ``parse_via`` checks the
syntax in one regular expression and keeps the match: the branch comes straight out of it when it
is the first parameter (the usual place), and the other fields are decoded when read. The
parameters' meaning (a branch has a value, ttl and rport are numbers) is checked when ``params``,
or an accessor that needs it, is first read.
"""

from __future__ import annotations

import re
from typing import Final

from .errors import ParseError
from .headers import TOKEN, split_elements, unfold
from .params import SIMPLE_PARAMS, Params, format_params, parse_params, split_simple_params
from .uri import ipv6_text

MAGIC_COOKIE: Final = "z9hG4bK"  # RFC 3261 8.1.1.7

# host: an IPv6 reference or a hostname / IPv4 address. Underscores occur in real hostnames and
# are let through.
_HOST: Final = rb"\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_](?:[A-Za-z0-9_\-.]*[A-Za-z0-9_.])?"
_VALUE: Final = rb"\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-.!%*_+`'~:]+"

# The common shape in one C call: no white space, no quoted parameter values, no IPv6 reference
# (checked on the slow path), a port up to 65535. Group 5 is the branch when it is the first
# parameter.
_PORT: Final = rb"6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4}"
_VIA_FAST_RE: Final = re.compile(
    rb"SIP/2\.0/(" + TOKEN + rb") ([A-Za-z0-9_](?:[A-Za-z0-9_\-.]*[A-Za-z0-9_.])?)"
    rb"(?::(" + _PORT + rb"))?((?:;branch=(" + _VALUE + rb"))?" + SIMPLE_PARAMS + rb")"
)
# Any shape: LWS around the slashes and the colon, parameters parsed by ``parse_params``.
_VIA_RE: Final = re.compile(
    rb"[ \t]*(" + TOKEN + rb")[ \t]*/[ \t]*(" + TOKEN + rb")[ \t]*/[ \t]*(" + TOKEN + rb")[ \t]+"
    rb"(" + _HOST + rb")(?:[ \t]*:[ \t]*([0-9]{1,5}))?"
)
_TRANSPORTS: Final = {t.encode(): t for t in ("UDP", "TCP", "TLS", "SCTP", "WS", "WSS")}
# received: an IPv4 or IPv6 address; RFC 5118 4.5: IPv6 also seen as a reference in brackets
_ADDRESS_RE: Final = re.compile(rb"[0-9A-Fa-f:.]+|\[[0-9A-Fa-f:.]+\]")


class Via:
    """One via-parm. Immutable: the fields are read-only properties."""

    __slots__ = ("_host", "_m", "_params", "_port", "_protocol", "_raw", "_transport")

    _m: re.Match[bytes] | None  # the fast path's match, decoded when read
    _raw: bytes  # slow path: the parameters as written (what ``params`` is parsed from)
    _params: Params | None  # parsed and checked, once asked for

    def __init__(
        self,
        transport: str,
        host: str,
        port: int | None = None,
        params: Params | None = None,
        protocol: str = "SIP/2.0",
        match: re.Match[bytes] | None = None,
    ) -> None:
        """A Via from its parts; the parser's fast path gives only its ``match`` (the parts are
        decoded from it when read)."""
        self._m = match
        if match is not None:
            self._params = None
            return
        self._transport = transport
        self._host = host
        self._port = port
        self._protocol = protocol
        self._params = dict(params) if params else {}

    @property
    def transport(self) -> str:
        """Upper case: ``"UDP"``, ``"TCP"``, ``"TLS"``, ..."""
        m = self._m
        if m is None:
            return self._transport
        raw = m.group(1)
        return _TRANSPORTS.get(raw) or raw.decode("ascii").upper()

    @property
    def host(self) -> str:
        """Lower case; an IPv6 address without brackets."""
        m = self._m
        if m is None:
            return self._host
        return _host_text(m.group(2))

    @property
    def port(self) -> int | None:
        m = self._m
        if m is None:
            return self._port
        port = m.group(3)
        return None if port is None else int(port)  # the pattern keeps it under 65536

    @property
    def protocol(self) -> str:
        return "SIP/2.0" if self._m is not None else self._protocol

    @property
    def params(self) -> Params:
        """Every parameter, names lower-cased (``ParseError`` when one is malformed)."""
        params = self._params
        if params is None:
            m = self._m
            params = (
                split_simple_params(m.group(4)) if m is not None else parse_params(self._raw, "Via")
            )
            _check_params(params)
            self._params = params
        return params

    @property
    def branch(self) -> str | None:
        m = self._m
        if m is not None:
            branch = m.group(5)
            if branch is not None:
                return branch.decode("ascii")
        return self.params.get("branch")

    @property
    def received(self) -> str | None:
        """The address in ``received``: IPv6 without brackets, as RFC 3261 writes it, also
        when a sender put them there (RFC 5118 4.5: robust parsers read both)."""
        value = self.params.get("received")
        if value is None or ":" not in value:
            return value
        return ipv6_text(value.strip("[]").encode("ascii"))

    @property
    def has_rport(self) -> bool:
        return "rport" in self.params

    @property
    def rport(self) -> int | None:
        """The rport value; ``None`` when absent or valueless (a request asking for it)."""
        value = self.params.get("rport")
        return int(value) if value else None

    @property
    def maddr(self) -> str | None:
        return self.params.get("maddr")

    @property
    def ttl(self) -> int | None:
        value = self.params.get("ttl")
        return int(value) if value is not None else None

    @property
    def sent_by(self) -> str:
        host = self.host
        if ":" in host:
            host = f"[{host}]"
        port = self.port
        return host if port is None else f"{host}:{port}"

    def to_bytes(self) -> bytes:
        m = self._m
        if m is not None:
            return m.string
        head = f"{self.protocol}/{self.transport} {self.sent_by}".encode("ascii")
        return head + format_params(self.params)

    def _key(self) -> tuple[object, ...]:
        return (self.transport, self.host, self.port, self.params, self.protocol)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Via):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash((self.transport, self.host, self.port, tuple(self.params.items())))

    def __repr__(self) -> str:
        return f"Via({self.to_bytes().decode('latin-1')!r})"


def parse_via(value: bytes) -> Via:
    """Parse one via-parm (one element of a Via header value)."""
    m = _VIA_FAST_RE.fullmatch(value)
    if m is not None:
        return Via("", "", match=m)
    return _parse_via_slow(value)


def _parse_via_slow(value: bytes) -> Via:
    value = unfold(value).strip(b" \t")
    m = _VIA_RE.match(value)
    if m is None:
        raise ParseError("malformed Via")
    name, version, transport, host, port = m.groups()
    if name.upper() != b"SIP" or version != b"2.0":
        raise ParseError("unsupported protocol in Via", 505 if name.upper() == b"SIP" else 400)
    port_num = int(port) if port is not None else None
    if port_num is not None and port_num > 65535:
        raise ParseError("malformed Via port")
    raw = value[m.end() :]
    parse_params(raw, "Via")  # the syntax now; the meaning when read
    transport_text = _TRANSPORTS.get(transport.upper()) or transport.decode("ascii").upper()
    via = Via(transport_text, _host_text(host), port_num)
    via._raw = raw
    via._params = None
    return via


def _host_text(raw: bytes) -> str:
    if raw[:1] != b"[":
        return raw.decode("ascii").lower()
    try:
        return ipv6_text(raw[1:-1])
    except ValueError:
        raise ParseError("malformed IPv6 reference in Via") from None


def _check_params(params: Params) -> None:
    """RFC 3261 20.42 / RFC 3581: what the via-params mean, checked once they are read."""
    if "branch" in params and not params["branch"]:
        raise ParseError("Via branch needs a value")
    ttl = params.get("ttl", "0")
    if ttl is None or not _number(ttl, 255):
        raise ParseError("malformed Via ttl")
    rport = params.get("rport")
    if rport is not None and not _number(rport, 65535):
        raise ParseError("malformed Via rport")
    received = params.get("received", "0")
    if received is None or not _ADDRESS_RE.fullmatch(received.encode("latin-1")):
        raise ParseError("malformed Via received")
    if ":" in received:  # IPv6, bare or (RFC 5118 4.5) in brackets
        try:
            ipv6_text(received.strip("[]").encode("ascii"))
        except ValueError:
            raise ParseError("malformed Via received") from None


def _number(text: str, maximum: int) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= 5 and int(text) <= maximum


def parse_vias(value: bytes) -> list[Via]:
    """Parse every via-parm of one Via header value (``Via: a, b``); no empty element allowed."""
    return [parse_via(part) for part in split_elements(unfold(value))]
