"""Parsers for the text values of a config: addresses, destination URIs, networks, codes.

Each parser returns the parsed value or raises ``ValueError`` whose message is written for the
operator (it names the bad value and, where it can, the fix).
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from dataclasses import dataclass
from typing import Any

from siplb.dispatch.spec import Transport
from siplb.settings import HostPort, IPNetwork

TRANSPORTS: tuple[Transport, ...] = ("udp", "tcp", "tls")
SIP_PORT = 5060  # RFC 3261 19.1.2
SIPS_PORT = 5061

# RFC 3261 25.1: hostname = *( domainlabel "." ) toplabel [ "." ]
_HOSTNAME = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)*[A-Za-z](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.?"
)
# RFC 3261 25.1: token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")
_TOKEN = re.compile(r"[A-Za-z0-9.!%*_+`'~-]+")
_PORT = re.compile(r"[0-9]{1,5}")
_CODE_CLASS = re.compile(r"([1-6])[xX][xX]")
KNOWN_METHODS = frozenset(
    {"INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "PRACK", "SUBSCRIBE", "NOTIFY"}
    | {"PUBLISH", "INFO", "REFER", "MESSAGE", "UPDATE"}
)


@dataclass(frozen=True, slots=True)
class DestinationUri:
    """A destination URI as written (``uri``) and what it names: an IP literal without
    brackets, a port and a transport."""

    uri: str
    host: str
    port: int
    transport: Transport


def _split_host_port(text: str, example: str) -> tuple[str, bool, int | None]:
    """Split ``host``, ``host:port``, ``[v6]`` or ``[v6]:port``; host is returned unbracketed."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"missing ']' after the IPv6 address in {text!r}")
        host, rest, bracketed = text[1:end], text[end + 1 :], True
        if rest and not rest.startswith(":"):
            raise ValueError(f"unexpected {rest!r} after ']' in {text!r}")
    elif text.count(":") > 1:
        raise ValueError(f"IPv6 addresses must be in brackets, like {example} (got {text!r})")
    else:
        host, sep, port_text = text.partition(":")
        rest, bracketed = sep + port_text, False
    if not host:
        raise ValueError(f"missing host in {text!r}")
    return host, bracketed, _port(rest[1:], text) if rest else None


def _port(text: str, whole: str) -> int:
    if not _PORT.fullmatch(text) or int(text) > 65535:
        raise ValueError(f"invalid port {text!r} in {whole!r}: use a number from 0 to 65535")
    return int(text)


def _ip_literal(host: str, bracketed: bool) -> str:
    """The normalized text of an IP literal, or ValueError saying why ``host`` is not one."""
    try:
        if bracketed:
            return str(ipaddress.IPv6Address(host))
        return str(ipaddress.IPv4Address(host))
    except ValueError:
        pass
    if bracketed:
        raise ValueError(f"{host!r} is not a valid IPv6 address")
    if _HOSTNAME.fullmatch(host):
        raise ValueError(
            f"{host!r} is a DNS name: DNS names are not supported yet, use an IP address"
        )
    raise ValueError(f"{host!r} is not a valid IPv4 address")


def parse_bind_address(text: str) -> tuple[str, int]:
    """``ip:port`` or ``[ipv6]:port`` to bind; the port is required, 0 means any free port."""
    host, bracketed, port = _split_host_port(text, "[::1]:5060")
    ip = _ip_literal(host, bracketed)
    if port is None:
        example = f"[{ip}]:5060" if bracketed else f"{ip}:5060"
        raise ValueError(f"missing port in {text!r}: write it like {example!r}")
    return ip, port


def parse_advertise(text: str) -> HostPort:
    """``host[:port]`` to put in Via and Record-Route; a DNS name is allowed here."""
    host, bracketed, port = _split_host_port(text, "[2001:db8::1]:5060")
    if bracketed or not _HOSTNAME.fullmatch(host):
        host = _ip_literal(host, bracketed)
    if port == 0:
        raise ValueError(f"port 0 cannot be advertised (in {text!r})")
    return HostPort(host, port)


def parse_peer_address(text: str) -> tuple[str, int]:
    """``ip:port`` or ``[ipv6]:port`` that other nodes send to: a bind address, not port 0."""
    host, port = parse_bind_address(text)
    if port == 0:
        raise ValueError(f"port 0 cannot be reached by other nodes (in {text!r})")
    return host, port


def parse_service_address(text: str) -> HostPort:
    """``host:port`` of a service (a Redis Sentinel): an IP literal or a DNS name, a port."""
    host, bracketed, port = _split_host_port(text, "[2001:db8::1]:26379")
    if bracketed or not _HOSTNAME.fullmatch(host):
        host = _ip_literal(host, bracketed)
    if port is None or port == 0:
        raise ValueError(f"missing port in {text!r}: write it like 'host:26379'")
    return HostPort(host, port)


def parse_redis_url(text: str) -> str:
    """A ``redis://`` or ``rediss://`` URL with a host (``redis://[user:password@]host[:port][/db]``)."""
    url = urllib.parse.urlsplit(text)
    if url.scheme not in ("redis", "rediss"):
        raise ValueError(f"{text!r} is not a Redis URL: it must start with redis:// or rediss://")
    try:
        port = url.port
    except ValueError:
        raise ValueError(f"invalid port in {text!r}") from None
    if not url.hostname:
        raise ValueError(f"missing host in {text!r}")
    if port == 0:
        raise ValueError(f"port 0 is not a Redis port ({text!r})")
    if url.path not in ("", "/") and not url.path[1:].isdigit():
        raise ValueError(f"the path of {text!r} must be a database number, like /0")
    return text


def parse_host_name(text: str) -> str:
    """A name an HTTP Host header may carry, without its port: a DNS name (lower-cased, without
    a trailing dot) or an IP literal (IPv6 with or without brackets, kept without them)."""
    if text.startswith("[") or text.count(":") > 1:
        try:
            return str(ipaddress.IPv6Address(text.removeprefix("[").removesuffix("]")))
        except ValueError:
            raise ValueError(f"{text!r} is not a valid IPv6 address (and no port)") from None
    host, colon, _ = text.partition(":")
    if colon:
        raise ValueError(f"the host name only, without a port: did you mean {host!r}?")
    if _HOSTNAME.fullmatch(host):
        return host.lower().removesuffix(".")
    try:
        return str(ipaddress.IPv4Address(host))
    except ValueError:
        raise ValueError(f"{text!r} is not a DNS name or an IP address") from None


@dataclass(frozen=True, slots=True)
class NamedUri:
    """A destination URI naming a DNS host (RFC 3263): the port and transport it gives, if any
    (None: the lookups decide); ``secure`` for sips."""

    uri: str
    host: str  # lower case, no trailing dot
    port: int | None
    transport: Transport | None
    secure: bool


def parse_destination_uri(text: str) -> DestinationUri | NamedUri:
    """``sip:host[:port][;transport=udp|tcp|tls]`` or ``sips:host[:port]`` (RFC 3261 19.1); the
    host an IP literal or a DNS name (``NamedUri``, resolved per RFC 3263)."""
    scheme, colon, rest = text.partition(":")
    scheme = scheme.lower()
    if not colon or scheme not in ("sip", "sips"):
        raise ValueError(f"{text!r} is not a SIP URI: it must start with 'sip:' or 'sips:'")
    if "?" in rest:
        raise ValueError(f"headers ('?...') are not allowed in a destination URI ({text!r})")
    hostport, *params = rest.split(";")
    if "@" in hostport:
        raise ValueError(f"a destination URI names a host, not a user: remove 'user@' ({text!r})")
    host, bracketed, port = _split_host_port(hostport, "sip:[::1]:5060")
    transport = _uri_transport(scheme, params, text)
    if port == 0:
        raise ValueError(f"port 0 is not a destination port ({text!r})")
    if not bracketed and _HOSTNAME.fullmatch(host) and not _is_ipv4(host):
        given = transport if params else None  # None: NAPTR and SRV decide (RFC 3263 4.1)
        return NamedUri(text, host.lower().removesuffix("."), port, given, scheme == "sips")
    ip = _ip_literal(host, bracketed)
    if port is None:
        port = SIPS_PORT if transport == "tls" else SIP_PORT
    return DestinationUri(text, ip, port, transport)


def _uri_transport(scheme: str, params: list[str], text: str) -> Transport:
    value: str | None = None
    for param in params:
        name, _, param_value = param.partition("=")
        if name.lower() != "transport":
            raise ValueError(f"unsupported URI parameter {name!r} in {text!r}: only transport")
        if value is not None:
            raise ValueError(f"transport is given twice in {text!r}")
        value = param_value.lower()
        if value not in TRANSPORTS:
            raise ValueError(f"unsupported transport {param_value!r} in {text!r}: udp, tcp or tls")
    if scheme == "sips":
        # RFC 3261 26.2.2: sips means TLS on every hop; ";transport=tcp" is the old spelling.
        if value == "udp":
            raise ValueError(f"sips: needs TLS, so transport=udp is not allowed ({text!r})")
        return "tls"
    return "udp" if value is None else value


_SRV_PREFIXES = ("_sip._udp.", "_sip._tcp.", "_sips._tcp.")


def parse_srv_name(text: str) -> str:
    """An SRV owner name a set is filled from (RFC 3263 4.1): ``_sip._udp.example.com``,
    ``_sip._tcp.`` or ``_sips._tcp.``; returned in lower case without the trailing dot."""
    lower = text.lower().removesuffix(".")
    for prefix in _SRV_PREFIXES:
        if lower.startswith(prefix) and _HOSTNAME.fullmatch(lower[len(prefix) :]):
            return lower
    raise ValueError(
        f"{text!r} is not a SIP SRV name: write it like '_sip._udp.pbx.example.com' "
        "(or _sip._tcp., _sips._tcp.)"
    )


def parse_dns_server(text: str) -> tuple[str, int]:
    """A DNS server: ``ip`` or ``ip:port`` (``[ipv6]:port``); the port defaults to 53."""
    host, bracketed, port = _split_host_port(text, "[::1]:53")
    ip = _ip_literal(host, bracketed)
    if port == 0:
        raise ValueError(f"port 0 is not a DNS server port ({text!r})")
    return ip, 53 if port is None else port


def _is_ipv4(host: str) -> bool:
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return False
    return True


def parse_network(text: str) -> IPNetwork:
    """A CIDR (``10.0.0.0/8``, ``2001:db8::/32``) or a single address."""
    try:
        return ipaddress.ip_network(text)
    except ValueError:
        pass
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(f"{text!r} is not an IPv4 or IPv6 network like '10.0.0.0/8'") from None
    raise ValueError(f"{text!r} has host bits set: did you mean {str(network)!r}?")


def parse_codes(value: Any, low: int, high: int) -> frozenset[int]:
    """A status code (``503``) or a class of them (``"5xx"``), within ``low..high``."""
    if isinstance(value, int) and not isinstance(value, bool):
        if not low <= value <= high:
            raise ValueError(f"{value} is not a status code from {low} to {high}")
        return frozenset({value})
    if isinstance(value, str):
        match = _CODE_CLASS.fullmatch(value)
        if match is not None:
            start = int(match.group(1)) * 100
            if low <= start and start + 99 <= high:
                return frozenset(range(start, start + 100))
        raise ValueError(f"{value!r} is not a code class from {low // 100}xx to {high // 100}xx")
    raise ValueError('expected a status code like 503 or a class like "5xx"')


def parse_methods(value: Any) -> frozenset[str]:
    """One SIP method or a non-empty list of them; methods are case-sensitive tokens."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise ValueError('expected a method like "INVITE" or a non-empty list of methods')
    for item in items:
        if not isinstance(item, str) or not _TOKEN.fullmatch(item):
            raise ValueError(f"{item!r} is not a SIP method token")
        if item not in KNOWN_METHODS and item.upper() in KNOWN_METHODS:
            raise ValueError(f"SIP methods are case-sensitive: did you mean {item.upper()!r}?")
    return frozenset(items)


def compile_regex(value: Any, flags: int = 0) -> re.Pattern[str]:
    if not isinstance(value, str):
        raise ValueError("expected a regular expression string")
    try:
        return re.compile(value, flags)
    except re.error as exc:
        raise ValueError(f"invalid regular expression {value!r}: {exc}") from None


def check_token(value: str, what: str, pattern: str, explain: str) -> str:
    if not re.fullmatch(pattern, value):
        raise ValueError(f"{value!r} is not a valid {what}: {explain}")
    return value
