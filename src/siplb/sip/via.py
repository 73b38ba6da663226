"""The Via header (RFC 3261 20.42, 18.2.1, RFC 3581 rport).

``via-parm = sent-protocol LWS sent-by *( SEMI via-params )``,
``sent-protocol = protocol-name SLASH protocol-version SLASH transport`` (white space allowed
around each slash), ``sent-by = host [ COLON port ]``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final

from .errors import ParseError
from .headers import split_list, unfold
from .params import SIMPLE_PARAMS, Params, format_params, parse_params, split_simple_params

MAGIC_COOKIE: Final = "z9hG4bK"  # RFC 3261 8.1.1.7

_VIA_RE: Final = re.compile(
    rb"[ \t]*([A-Za-z0-9\-.!%*_+`'~]+)[ \t]*/[ \t]*([A-Za-z0-9\-.!%*_+`'~]+)[ \t]*/[ \t]*"
    rb"([A-Za-z0-9\-.!%*_+`'~]+)[ \t]+"
    rb"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9\-.]*[A-Za-z0-9.])?)"
    rb"(?:[ \t]*:[ \t]*([0-9]{1,5}))?"
)


# The common shape (no white space, no quoted parameter values) in one C call.
_VIA_FAST_RE: Final = re.compile(
    rb"SIP/2\.0/([A-Za-z0-9\-.!%*_+`'~]+) "
    rb"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9\-.]*[A-Za-z0-9.])?)(?::([0-9]{1,5}))?"
    rb"(" + SIMPLE_PARAMS + rb")"
)


@dataclass(frozen=True, slots=True)
class Via:
    transport: str  # upper case: "UDP", "TCP", "TLS", ...
    host: str  # IPv6 without brackets
    port: int | None = None
    params: Params = field(default_factory=dict)
    protocol: str = "SIP/2.0"

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def received(self) -> str | None:
        return self.params.get("received")

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
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port is None else f"{host}:{self.port}"

    def to_bytes(self) -> bytes:
        return f"{self.protocol}/{self.transport} {self.sent_by}".encode("ascii") + format_params(
            self.params
        )


def parse_via(value: bytes) -> Via:
    """Parse one via-parm (one element of a Via header value)."""
    m = _VIA_FAST_RE.fullmatch(value)
    if m is not None:
        transport, host, port, raw_params = m.groups()
        params = split_simple_params(raw_params)
    else:
        value = unfold(value)
        m = _VIA_RE.match(value)
        if m is None:
            raise ParseError("malformed Via")
        name, version, transport, host, port = m.groups()
        if name.upper() != b"SIP" or version != b"2.0":
            raise ParseError("unsupported protocol in Via", 505 if name.upper() == b"SIP" else 400)
        params = parse_params(value[m.end() :], "Via")
    if "ttl" in params or "rport" in params or ("branch" in params and not params["branch"]):
        _check_params(params)
    port_num = int(port) if port is not None else None
    if port_num is not None and port_num > 65535:
        raise ParseError("malformed Via port")
    host_text = host.decode("ascii").lower()
    if host_text[0] == "[":
        host_text = host_text[1:-1]
    return Via(transport.decode("ascii").upper(), host_text, port_num, params)


def _check_params(params: Params) -> None:
    for key in ("ttl", "rport"):
        raw = params.get(key)
        if raw is not None and (not raw.isdigit() or len(raw) > 5 or int(raw) > 65535):
            raise ParseError(f"malformed Via {key}")
    if params.get("ttl", "0") is None:
        raise ParseError("Via ttl needs a value")
    if "branch" in params and not params["branch"]:
        raise ParseError("Via branch needs a value")


def parse_vias(value: bytes) -> list[Via]:
    """Parse every via-parm of one Via header value (``Via: a, b``)."""
    parts = split_list(unfold(value))
    if not parts:
        raise ParseError("empty Via")
    return [parse_via(part) for part in parts]
