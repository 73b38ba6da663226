"""siplb.config: TOML -> validated, frozen settings; every problem reported with its path."""

from __future__ import annotations

import dataclasses
import hashlib
import re
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from siplb.config import (
    DEFAULT_CONFIG_TOML,
    AdminSettings,
    Config,
    ConfigError,
    HostPort,
    LimitsSettings,
    ListenerSettings,
    LogSettings,
    Problem,
    ProxySettings,
    RouteRule,
    TcpSettings,
    TlsFiles,
    load_config,
    parse_config,
)
from siplb.config.build import build_config
from siplb.dispatch.spec import Algorithm, DestinationSpec, HashKey, HealthSettings, SetSpec

ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT / "tests" / "vectors" / "config"

# The example of the issue that specified the config; it must load exactly as written.
ISSUE_EXAMPLE = """\
[[listen]]
transport = "udp"
address = "127.0.0.1:5060"

[[sets]]
name = "pbx"
algorithm = "round-robin"
destinations = [
  { uri = "sip:127.0.0.1:5070", weight = 1 },
  { uri = "sip:127.0.0.1:5071", weight = 1 },
]

[health]
interval = 1.0
timeout = 0.5
down_after = 2
up_after = 2
"""

LISTEN = '[[listen]]\naddress = "127.0.0.1:5060"\n'
SET = '[[sets]]\nname = "pbx"\ndestinations = [{ uri = "sip:127.0.0.1:5070" }]\n'
MINIMAL = LISTEN + SET


def problems_of(text: str, **kwargs: Any) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, **kwargs)
    return [(problem.path, problem.message) for problem in info.value.problems]


def assert_problems(found: list[tuple[str, str]], expected: list[tuple[str, str]]) -> None:
    """Exactly the expected paths (in any order), each message containing its expected text."""
    assert sorted(path for path, _ in found) == sorted(path for path, _ in expected), found
    for path, text in expected:
        messages = [message for found_path, message in found if found_path == path]
        assert any(text in message for message in messages), (path, text, messages)


# --- good configs ------------------------------------------------------------------------------


def test_issue_example_loads_to_the_right_values() -> None:
    config = parse_config(ISSUE_EXAMPLE, source="issue.toml")
    assert config.listeners == (ListenerSettings("udp", "127.0.0.1", 5060),)
    assert config.sets == (
        SetSpec(
            "pbx",
            (
                DestinationSpec("sip:127.0.0.1:5070", "127.0.0.1", 5070, "udp", weight=1),
                DestinationSpec("sip:127.0.0.1:5071", "127.0.0.1", 5071, "udp", weight=1),
            ),
            Algorithm.ROUND_ROBIN,
            HashKey.CALL_ID,
        ),
    )
    assert config.health == HealthSettings(interval=1.0, timeout=0.5, down_after=2, up_after=2)
    assert config.routes == ()
    assert config.default_set == "pbx"
    assert config.source == "issue.toml"
    assert config.digest == hashlib.sha256(ISSUE_EXAMPLE.encode()).hexdigest()


def test_defaults() -> None:
    config = parse_config(MINIMAL)
    assert config.listeners[0].transport == "udp"
    assert config.listeners[0].recv_buffer == 4 * 1024 * 1024
    assert config.listeners[0].advertise is None
    assert config.listeners[0].tls is None
    assert config.sets[0].algorithm is Algorithm.ROUND_ROBIN
    assert config.sets[0].hash_key is HashKey.CALL_ID
    dest = config.sets[0].destinations[0]
    assert (dest.weight, dest.priority, dest.max_calls, dict(dest.attrs)) == (1, 0, None, {})
    assert config.default_set == "pbx"
    assert config.health == HealthSettings()
    assert config.health.dead_codes == frozenset({408, *range(500, 600)})
    assert config.proxy == ProxySettings()
    assert config.proxy.failover_codes == frozenset({408, 500, 502, 503, 504})
    assert (config.proxy.node_id, config.proxy.max_forwards, config.proxy.t1) == ("n1", 70, 0.5)
    assert config.tcp == TcpSettings(idle_timeout=600, connect_timeout=2.0, max_connections=10000)
    assert config.limits == LimitsSettings(65535, 256, 8192)
    assert config.log == LogSettings("info", "human")
    assert config.admin == AdminSettings("127.0.0.1", 8080, None, None)


def test_example_file_loads() -> None:
    path = ROOT / "examples" / "siplb.toml"
    config = load_config(path)
    assert config.source == str(path)
    assert config.digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert [spec.name for spec in config.sets] == ["pbx", "registrar", "trunks"]
    assert config.default_set == "pbx"
    assert len(config.listeners) == 3
    assert len(config.routes) == 3
    # The example sets every key of [health] and [proxy]; check a few took effect.
    assert config.health.dead_codes == frozenset({408, *range(500, 600)})
    assert config.set_named("registrar").hash_key is HashKey.TO_URI
    assert config.set_named("trunks").destinations[0].transport == "tls"


def test_default_config_toml_loads() -> None:
    config = parse_config(DEFAULT_CONFIG_TOML)
    assert config.listeners[0].address == ("127.0.0.1", 5060)
    assert config.sets[0].destinations[0].address == ("127.0.0.1", 5070)


@pytest.mark.parametrize("path", sorted(VECTORS.glob("good/*.toml")), ids=lambda p: p.name)
def test_good_vectors_load(path: Path) -> None:
    assert isinstance(load_config(path), Config)


def test_values_are_read_from_every_section() -> None:
    text = MINIMAL + (
        "[health]\ninterval = 2\ntimeout = 0.25\ndown_after = 3\nup_after = 4\n"
        'dead_codes = [408, 503, "6xx"]\npassive = false\n'
        '[proxy]\nnode_id = "b7"\nfailover_timeout = 1.5\nmax_attempts = 5\n'
        'failover_codes = ["5xx"]\nt1 = 0.25\nt2 = 2\nt4 = 3\nmax_call_age = 3600\n'
        "setup_timeout = 60\nretry_after = 0\ngrace_period = 0\nmax_forwards = 20\n"
        "record_route = false\n"
        "[tcp]\nidle_timeout = 30\nconnect_timeout = 0.5\nmax_connections = 10\n"
        "[limits]\nmax_message_size = 4096\nmax_headers = 64\nmax_line_length = 1024\n"
        '[log]\nlevel = "debug"\nformat = "json"\n'
        '[admin]\nlisten = "127.0.0.1:0"\ntoken = "s3cret"\n'
    )
    config = parse_config(text)
    assert config.health == HealthSettings(
        2.0, 0.25, 3, 4, frozenset({408, 503, *range(600, 700)}), passive=False
    )
    assert config.proxy == ProxySettings(
        "b7", 1.5, 5, frozenset(range(500, 600)), 0.25, 2.0, 3.0, 3600, 60, 0, 0, 20, False
    )
    assert config.tcp == TcpSettings(30, 0.5, 10)
    assert config.limits == LimitsSettings(4096, 64, 1024)
    assert config.log == LogSettings("debug", "json")
    assert config.admin == AdminSettings("127.0.0.1", 0, "s3cret", None)
    assert isinstance(config.health.interval, float)


# --- destination URIs and addresses ----------------------------------------------------------

URI_CASES = [
    ("sip:127.0.0.1:5070", "127.0.0.1", 5070, "udp"),
    ("sip:127.0.0.1", "127.0.0.1", 5060, "udp"),
    ("SIP:127.0.0.1", "127.0.0.1", 5060, "udp"),
    ("sip:127.0.0.1;transport=tcp", "127.0.0.1", 5060, "tcp"),
    ("sip:127.0.0.1:5080;transport=TCP", "127.0.0.1", 5080, "tcp"),
    ("sip:127.0.0.1;transport=udp", "127.0.0.1", 5060, "udp"),
    ("sip:127.0.0.1;transport=tls", "127.0.0.1", 5061, "tls"),
    ("sips:127.0.0.1", "127.0.0.1", 5061, "tls"),
    ("sips:127.0.0.1:5071", "127.0.0.1", 5071, "tls"),
    ("sips:127.0.0.1;transport=tcp", "127.0.0.1", 5061, "tls"),  # RFC 3261 26.2.2 spelling
    ("sip:[::1]:5070", "::1", 5070, "udp"),
    ("sip:[::1]:5070;transport=tcp", "::1", 5070, "tcp"),
    ("sip:[2001:DB8:0:0::1]", "2001:db8::1", 5060, "udp"),
    ("sips:[::1]", "::1", 5061, "tls"),
]


@pytest.mark.parametrize(("uri", "host", "port", "transport"), URI_CASES)
def test_destination_uri(uri: str, host: str, port: int, transport: str) -> None:
    text = LISTEN + f'[[sets]]\nname = "s"\ndestinations = [{{ uri = "{uri}" }}]\n'
    dest = parse_config(text).sets[0].destinations[0]
    assert (dest.uri, dest.host, dest.port, dest.transport) == (uri, host, port, transport)


BAD_URI_CASES = [
    ("sip:pbx.example.com", "DNS names are not supported yet"),
    ("sip:localhost:5070", "DNS names are not supported yet"),
    ("sip:::1", "IPv6 addresses must be in brackets"),
    ("sip:[::1", "missing ']'"),
    ("sip:[127.0.0.1]", "not a valid IPv6 address"),
    ("sip:[::1]x", "unexpected 'x'"),
    ("sip:10.0.0.256", "not a valid IPv4 address"),
    ("sip:127.0.0.1:70000", "invalid port '70000'"),
    ("sip:127.0.0.1:0", "port 0 is not a destination port"),
    ("sip:127.0.0.1:", "invalid port ''"),
    ("sip:", "missing host"),
    ("http://127.0.0.1", "must start with 'sip:' or 'sips:'"),
    ("127.0.0.1:5060", "must start with 'sip:' or 'sips:'"),
    ("sip:pbx@127.0.0.1", "remove 'user@'"),
    ("sip:127.0.0.1?Subject=x", "headers"),
    ("sip:127.0.0.1;lr", "unsupported URI parameter 'lr'"),
    ("sip:127.0.0.1;transport=sctp", "unsupported transport 'sctp'"),
    ("sip:127.0.0.1;transport=tcp;transport=udp", "transport is given twice"),
    ("sips:127.0.0.1;transport=udp", "sips: needs TLS"),
]


@pytest.mark.parametrize(("uri", "text"), BAD_URI_CASES)
def test_bad_destination_uri(uri: str, text: str) -> None:
    config = LISTEN + f'[[sets]]\nname = "s"\ndestinations = [{{ uri = "{uri}" }}]\n'
    assert_problems(problems_of(config), [("sets[0].destinations[0].uri", text)])


ADDRESS_CASES = [
    ("127.0.0.1:5060", ("127.0.0.1", 5060)),
    ("0.0.0.0:5060", ("0.0.0.0", 5060)),
    ("127.0.0.1:0", ("127.0.0.1", 0)),
    ("[::1]:5060", ("::1", 5060)),
    ("[::]:5070", ("::", 5070)),
    ("[2001:db8:0::10]:5060", ("2001:db8::10", 5060)),
]


@pytest.mark.parametrize(("address", "expected"), ADDRESS_CASES)
def test_listen_address(address: str, expected: tuple[str, int]) -> None:
    config = parse_config(f'[[listen]]\naddress = "{address}"\n' + SET)
    assert config.listeners[0].address == expected


BAD_ADDRESS_CASES = [
    ("localhost:5060", "DNS names are not supported yet"),
    ("127.0.0.1", "missing port"),
    ("[::1]", "missing port"),
    ("::1:5060", "IPv6 addresses must be in brackets"),
    ("127.0.0.1:65536", "invalid port"),
    ("127.0.0.1:-1", "invalid port"),
    ("300.0.0.1:5060", "not a valid IPv4 address"),
    (":5060", "missing host"),
]


@pytest.mark.parametrize(("address", "text"), BAD_ADDRESS_CASES)
def test_bad_listen_address(address: str, text: str) -> None:
    config = f'[[listen]]\naddress = "{address}"\n' + SET
    assert_problems(problems_of(config), [("listen[0].address", text)])


ADVERTISE_CASES = [
    ("sip.example.com", HostPort("sip.example.com", None)),
    ("sip.example.com:5080", HostPort("sip.example.com", 5080)),
    ("203.0.113.5", HostPort("203.0.113.5", None)),
    ("203.0.113.5:5060", HostPort("203.0.113.5", 5060)),
    ("[2001:db8::5]:5060", HostPort("2001:db8::5", 5060)),
    ("[2001:db8::5]", HostPort("2001:db8::5", None)),
]


@pytest.mark.parametrize(("advertise", "expected"), ADVERTISE_CASES)
def test_advertise(advertise: str, expected: HostPort) -> None:
    config = parse_config(LISTEN + f'advertise = "{advertise}"\n' + SET)
    assert config.listeners[0].advertise == expected


@pytest.mark.parametrize(
    ("host_port", "text"),
    [
        (HostPort("sip.example.com", None), "sip.example.com"),
        (HostPort("203.0.113.5", 5060), "203.0.113.5:5060"),
        (HostPort("2001:db8::5", 5060), "[2001:db8::5]:5060"),
        (HostPort("2001:db8::5", None), "[2001:db8::5]"),
    ],
)
def test_host_port_text(host_port: HostPort, text: str) -> None:
    assert str(host_port) == text


# --- one problem at a time, each with its path --------------------------------------------------

PROBLEM_CASES = [
    # [[listen]]
    ("no listener", SET, [("listen", "at least one [[listen]]")]),
    (
        "bad transport",
        LISTEN + 'transport = "sctp"\n' + SET,
        [("listen[0].transport", "must be 'udp', 'tcp' or 'tls'")],
    ),
    (
        "address missing",
        '[[listen]]\ntransport = "udp"\n' + SET,
        [("listen[0].address", "required")],
    ),
    (
        "duplicate listener",
        LISTEN + LISTEN + SET,
        [("listen[1].address", "already bound by listen[0]")],
    ),
    (
        "duplicate listener ipv6",
        '[[listen]]\naddress = "[::1]:5060"\n[[listen]]\naddress = "[0::1]:5060"\n' + SET,
        [("listen[1].address", "[::1]:5060 is already bound by listen[0]")],
    ),
    (
        "recv_buffer on tcp",
        LISTEN + 'transport = "tcp"\nrecv_buffer = 1048576\n' + SET,
        [("listen[0].recv_buffer", "udp listeners only")],
    ),
    (
        "recv_buffer too small",
        LISTEN + "recv_buffer = 1024\n" + SET,
        [("listen[0].recv_buffer", "greater than or equal to 65536")],
    ),
    ("cert on udp", LISTEN + 'cert = "c.pem"\n' + SET, [("listen[0].cert", "tls listeners only")]),
    (
        "tls without files",
        '[[listen]]\ntransport = "tls"\naddress = "127.0.0.1:5061"\n' + SET,
        [("listen[0].cert", "required"), ("listen[0].key", "required")],
    ),
    (
        "advertise port 0",
        LISTEN + 'advertise = "203.0.113.5:0"\n' + SET,
        [("listen[0].advertise", "port 0 cannot be advertised")],
    ),
    (
        "advertise bad name",
        LISTEN + 'advertise = "bad_name!"\n' + SET,
        [("listen[0].advertise", "not a valid IPv4 address")],
    ),
    # [[sets]]
    ("no set", LISTEN, [("sets", "at least one [[sets]]")]),
    (
        "empty destinations",
        LISTEN + '[[sets]]\nname = "pbx"\ndestinations = []\n',
        [("sets[0].destinations", "at least one destination")],
    ),
    (
        "destinations missing",
        LISTEN + '[[sets]]\nname = "pbx"\n',
        [("sets[0].destinations", "required key is missing")],
    ),
    (
        "destination not a table",
        LISTEN + '[[sets]]\nname = "pbx"\ndestinations = ["sip:127.0.0.1"]\n',
        [("sets[0].destinations[0]", "expected a table")],
    ),
    ("duplicate set name", LISTEN + SET + SET, [("sets[1].name", "already defined by sets[0]")]),
    (
        "bad set name",
        LISTEN + '[[sets]]\nname = "my set"\ndestinations = [{ uri = "sip:127.0.0.1" }]\n',
        [("sets[0].name", "not a valid set name")],
    ),
    (
        "bad algorithm",
        LISTEN + SET + 'algorithm = "rr"\n',
        [("sets[0].algorithm", "'round-robin', 'weighted', 'hash'")],
    ),
    (
        "bad hash key",
        LISTEN + SET + 'algorithm = "hash"\nhash_key = "via"\n',
        [("sets[0].hash_key", "'call-id', 'from-uri', 'to-uri' or 'ruri-user'")],
    ),
    (
        "hash_key without hash",
        LISTEN + SET + 'hash_key = "from-uri"\n',
        [("sets[0].hash_key", 'algorithm = "hash" only')],
    ),
    (
        "weight 0",
        LISTEN + '[[sets]]\nname = "s"\ndestinations = [{ uri = "sip:127.0.0.1", weight = 0 }]\n',
        [("sets[0].destinations[0].weight", "greater than or equal to 1")],
    ),
    (
        "negative priority",
        LISTEN
        + '[[sets]]\nname = "s"\ndestinations = [{ uri = "sip:127.0.0.1", priority = -1 }]\n',
        [("sets[0].destinations[0].priority", "greater than or equal to 0")],
    ),
    (
        "max_calls 0",
        LISTEN
        + '[[sets]]\nname = "s"\ndestinations = [{ uri = "sip:127.0.0.1", max_calls = 0 }]\n',
        [("sets[0].destinations[0].max_calls", "greater than or equal to 1")],
    ),
    (
        "duplicate uri",
        LISTEN
        + '[[sets]]\nname = "s"\ndestinations = [\n  { uri = "sip:127.0.0.1" },\n'
        + '  { uri = "sip:127.0.0.2" },\n  { uri = "sip:127.0.0.1:5060;transport=udp" },\n]\n',
        [("sets[0].destinations[2].uri", "same destination as destinations[0]")],
    ),
    (
        "duplicate ipv6 uri",
        LISTEN
        + '[[sets]]\nname = "s"\n'
        + 'destinations = [{ uri = "sips:[::1]" }, { uri = "sip:[0::1]:5061;transport=tls" }]\n',
        [("sets[0].destinations[1].uri", "(tls [::1]:5061)")],
    ),
    # [[routes]] and default_set
    (
        "route to unknown set",
        MINIMAL + '[[routes]]\nset = "pbxx"\n',
        [("routes[0].set", "unknown set 'pbxx' (sets: 'pbx')")],
    ),
    (
        "route without set",
        MINIMAL + '[[routes]]\nmethod = "INVITE"\n',
        [("routes[0].set", "required")],
    ),
    (
        "bad regex",
        MINIMAL + '[[routes]]\nset = "pbx"\nruri_user = "[0-9"\n',
        [("routes[0].ruri_user", "invalid regular expression '[0-9'")],
    ),
    (
        "bad domain regex",
        MINIMAL + '[[routes]]\nset = "pbx"\nruri_domain = "(a"\n',
        [("routes[0].ruri_domain", "invalid regular expression")],
    ),
    (
        "lowercase method",
        MINIMAL + '[[routes]]\nset = "pbx"\nmethod = ["INVITE", "bye"]\n',
        [("routes[0].method", "did you mean 'BYE'?")],
    ),
    (
        "method not a token",
        MINIMAL + '[[routes]]\nset = "pbx"\nmethod = "IN VITE"\n',
        [("routes[0].method", "not a SIP method token")],
    ),
    (
        "empty method list",
        MINIMAL + '[[routes]]\nset = "pbx"\nmethod = []\n',
        [("routes[0].method", "non-empty list")],
    ),
    (
        "cidr with host bits",
        MINIMAL + '[[routes]]\nset = "pbx"\nsource = ["192.168.1.1/24"]\n',
        [("routes[0].source[0]", "did you mean '192.168.1.0/24'?")],
    ),
    (
        "bad cidr",
        MINIMAL + '[[routes]]\nset = "pbx"\nsource = ["10.0.0.0/8", "2001:db8::/129"]\n',
        [("routes[0].source[1]", "not an IPv4 or IPv6 network")],
    ),
    (
        "empty source list",
        MINIMAL + '[[routes]]\nset = "pbx"\nsource = []\n',
        [("routes[0].source", "never matches")],
    ),
    (
        "route after a catch-all",
        MINIMAL + '[[routes]]\nset = "pbx"\n[[routes]]\nset = "pbx"\nmethod = "INVITE"\n',
        [("routes[1]", "routes[0] before it matches every request")],
    ),
    (
        "unknown default_set",
        'default_set = "nope"\n' + MINIMAL,
        [("default_set", "unknown set 'nope'")],
    ),
    # [health]
    (
        "timeout not below interval",
        MINIMAL + "[health]\ninterval = 1\ntimeout = 1\n",
        [("health.timeout", "less than interval (1)")],
    ),
    (
        "timeout above the default interval",
        MINIMAL + "[health]\ntimeout = 2.5\n",
        [("health.timeout", "less than interval (1)")],
    ),
    (
        "zero interval",
        MINIMAL + "[health]\ninterval = 0\n",
        [("health.interval", "greater than 0")],
    ),
    (
        "down_after 0",
        MINIMAL + "[health]\ndown_after = 0\n",
        [("health.down_after", "greater than or equal to 1")],
    ),
    (
        "bad dead code class",
        MINIMAL + '[health]\ndead_codes = ["5xx", "7xx", 99]\n',
        [("health.dead_codes[1]", "'7xx'"), ("health.dead_codes[2]", "99 is not a status code")],
    ),
    ("nan", MINIMAL + "[health]\ninterval = nan\n", [("health.interval", "finite")]),
    # [proxy]
    ("bad node_id", MINIMAL + '[proxy]\nnode_id = "Node_1"\n', [("proxy.node_id", "a-z 0-9")]),
    (
        "long node_id",
        MINIMAL + '[proxy]\nnode_id = "n' + "1" * 16 + '"\n',
        [("proxy.node_id", "1 to 16")],
    ),
    ("t2 below t1", MINIMAL + "[proxy]\nt1 = 2\nt2 = 1\n", [("proxy.t2", "at least t1 (2)")]),
    (
        "setup longer than calls",
        MINIMAL + "[proxy]\nsetup_timeout = 100\nmax_call_age = 50\n",
        [("proxy.setup_timeout", "must not exceed max_call_age (50)")],
    ),
    (
        "2xx failover code",
        MINIMAL + "[proxy]\nfailover_codes = [200]\n",
        [("proxy.failover_codes[0]", "from 300 to 699")],
    ),
    (
        "max_attempts 0",
        MINIMAL + "[proxy]\nmax_attempts = 0\n",
        [("proxy.max_attempts", "greater than or equal to 1")],
    ),
    (
        "max_forwards 256",
        MINIMAL + "[proxy]\nmax_forwards = 256\n",
        [("proxy.max_forwards", "less than or equal to 255")],
    ),
    (
        "negative retry_after",
        MINIMAL + "[proxy]\nretry_after = -1\n",
        [("proxy.retry_after", "greater than or equal to 0")],
    ),
    (
        "fractional retry_after",
        MINIMAL + "[proxy]\nretry_after = 1.5\n",
        [("proxy.retry_after", "expected an integer")],
    ),
    # [tcp], [limits], [log], [admin]
    (
        "zero idle timeout",
        MINIMAL + "[tcp]\nidle_timeout = 0\n",
        [("tcp.idle_timeout", "greater than 0")],
    ),
    (
        "line longer than message",
        MINIMAL + "[limits]\nmax_message_size = 2048\nmax_line_length = 4096\n",
        [("limits.max_line_length", "must not exceed max_message_size (2048)")],
    ),
    (
        "tiny message size",
        MINIMAL + "[limits]\nmax_message_size = 100\n",
        [("limits.max_message_size", "greater than or equal to 1024")],
    ),
    (
        "bad log level",
        MINIMAL + '[log]\nlevel = "warn"\n',
        [("log.level", "'debug', 'info', 'warning' or 'error'")],
    ),
    (
        "admin bad listen",
        MINIMAL + '[admin]\nlisten = "localhost:8080"\n',
        [("admin.listen", "DNS names")],
    ),
    ("empty token", MINIMAL + '[admin]\ntoken = ""\n', [("admin.token", "at least 1 character")]),
    (
        "token and token_file",
        MINIMAL + '[admin]\ntoken = "x"\ntoken_file = "/nonexistent/siplb.token"\n',
        [("admin.token_file", "not both"), ("admin.token_file", "no such file")],
    ),
    (
        "regex not a string",
        MINIMAL + '[[routes]]\nset = "pbx"\nruri_user = 5\n',
        [("routes[0].ruri_user", "expected a regular expression string")],
    ),
    (
        "dead code not a code",
        MINIMAL + "[health]\ndead_codes = [true]\n",
        [("health.dead_codes[0]", "expected a status code")],
    ),
    # shapes and TOML types
    (
        "array for a string",
        MINIMAL + '[log]\nlevel = ["info"]\n',
        [("log.level", "(got an array)")],
    ),
    (
        "table for a number",
        MINIMAL + "[tcp]\nidle_timeout = { s = 1 }\n",
        [("tcp.idle_timeout", "expected a number (got a table)")],
    ),
    (
        "date for a number",
        MINIMAL + "[health]\ninterval = 1979-05-27\n",
        [("health.interval", "expected a number (got a date)")],
    ),
    (
        "string for a uri",
        LISTEN + '[[sets]]\nname = "s"\ndestinations = [{ uri = 5 }]\n',
        [("sets[0].destinations[0].uri", "expected a string")],
    ),
    ("listen not an array", 'listen = "127.0.0.1:5060"\n' + SET, [("listen", "expected an array")]),
    ("sets not tables", 'sets = ["pbx"]\n' + LISTEN, [("sets[0]", "expected a table")]),
    (
        "default_set not a string",
        "default_set = 1\n" + MINIMAL,
        [("default_set", "expected a string (got 1)")],
    ),
]


@pytest.mark.parametrize(
    ("text", "expected"),
    [case[1:] for case in PROBLEM_CASES],
    ids=[case[0] for case in PROBLEM_CASES],
)
def test_problem(text: str, expected: list[tuple[str, str]]) -> None:
    assert_problems(problems_of(text), expected)


# --- unknown keys at every level --------------------------------------------------------------

UNKNOWN_KEY_CASES = [
    ("top level", "colour = 1\n" + MINIMAL, "colour", ""),
    ("top level close", "default_sets = 'pbx'\n" + MINIMAL, "default_sets", "default_set"),
    ("top level table", MINIMAL + "[server]\nport = 1\n", "server", ""),
    ("listen", LISTEN + "adress = 'x'\n" + SET, "listen[0].adress", "address"),
    ("set", LISTEN + SET + "algoritm = 'hash'\n", "sets[0].algoritm", "algorithm"),
    (
        "destination",
        LISTEN + '[[sets]]\nname = "s"\ndestinations = [{ uri = "sip:127.0.0.1", prio = 1 }]\n',
        "sets[0].destinations[0].prio",
        "priority",
    ),
    ("route", MINIMAL + '[[routes]]\nset = "pbx"\nsources = []\n', "routes[0].sources", "source"),
    ("health", MINIMAL + "[health]\nup_afer = 1\n", "health.up_afer", "up_after"),
    ("proxy", MINIMAL + "[proxy]\nrecord_routes = true\n", "proxy.record_routes", "record_route"),
    ("tcp", MINIMAL + "[tcp]\nidle = 1\n", "tcp.idle", ""),
    ("limits", MINIMAL + "[limits]\nmax_header = 1\n", "limits.max_header", "max_headers"),
    ("log", MINIMAL + "[log]\nlevl = 'info'\n", "log.levl", "level"),
    ("admin", MINIMAL + "[admin]\nport = 8080\n", "admin.port", ""),
    ("quoted key", MINIMAL + '[log]\n"my key" = 1\n', 'log["my key"]', ""),
    ("nested table", MINIMAL + "[health.extra]\na = 1\n", "health.extra", ""),
]


@pytest.mark.parametrize(
    ("text", "path", "suggestion"),
    [case[1:] for case in UNKNOWN_KEY_CASES],
    ids=[case[0] for case in UNKNOWN_KEY_CASES],
)
def test_unknown_key(text: str, path: str, suggestion: str) -> None:
    found = problems_of(text)
    assert [p for p, _ in found] == [path]
    message = found[0][1]
    assert message.startswith("unknown key")
    if suggestion:
        assert message.endswith(f"did you mean {suggestion!r}?")
    else:
        assert "did you mean" not in message


# --- several problems, syntax errors, files ------------------------------------------------------


def test_every_problem_is_reported_at_once() -> None:
    text = (
        'default_set = "x"\n'
        '[[listen]]\naddress = "localhost:5060"\nbogus = 1\n'
        '[[sets]]\nname = "pbx"\n'
        'destinations = [{ uri = "sip:a.example" }, { uri = "sip:127.0.0.1", weight = 0 }]\n'
        '[[sets]]\nname = "pbx"\ndestinations = [{ uri = "sip:127.0.0.1" }]\n'
        '[[routes]]\nset = "y"\nmethod = "invite"\n'
        "[health]\ninterval = 0.5\ntimeout = 0.75\n"
        "[tcp]\nmax_connections = 0\n"
    )
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="bad.toml")
    expected = [
        ("listen[0].address", "DNS names are not supported yet"),
        ("listen[0].bogus", "unknown key"),
        ("sets[0].destinations[0].uri", "DNS names are not supported yet"),
        ("sets[0].destinations[1].weight", "greater than or equal to 1"),
        ("sets[1].name", "already defined by sets[0]"),
        ("routes[0].set", "unknown set 'y'"),
        ("routes[0].method", "did you mean 'INVITE'?"),
        ("default_set", "unknown set 'x'"),
        ("health.timeout", "less than interval (0.5)"),
        ("tcp.max_connections", "greater than or equal to 1"),
    ]
    found = [(problem.path, problem.message) for problem in info.value.problems]
    assert_problems(found, expected)
    assert info.value.source == "bad.toml"
    lines = str(info.value).splitlines()
    assert lines == [f"{path}: {message}" for path, message in found]


def test_problem_and_error_text() -> None:
    error = ConfigError([Problem("sets[0].name", "bad"), Problem("", "whole file")], "f.toml")
    assert str(error) == "sets[0].name: bad\nwhole file"
    assert error.problems == [Problem("sets[0].name", "bad"), Problem("", "whole file")]
    assert isinstance(error, Exception)


SYNTAX_CASES = [
    ('[[listen]\naddress = "x"\n', 1),
    ('[[listen]]\naddress = "127.0.0.1:5060\n', 2),
    ("[health]\ninterval = 1\ninterval = 2\n", 3),  # a key given twice
    ("[health]\n[health]\n", 2),
    ("a = \n", 1),
]


@pytest.mark.parametrize(("text", "line"), SYNTAX_CASES)
def test_toml_syntax_error(text: str, line: int) -> None:
    found = problems_of(text)
    assert len(found) == 1
    path, message = found[0]
    assert path == ""
    assert re.match(rf"TOML syntax error at line {line}, column \d+: \S", message), message


@pytest.mark.parametrize("path", sorted(VECTORS.glob("bad/*.toml")), ids=lambda p: p.name)
def test_bad_vectors(path: Path) -> None:
    expected = []
    for line in path.read_text().splitlines():
        if line.startswith("# expect: "):
            problem_path, _, text = line.removeprefix("# expect: ").partition(": ")
            expected.append((problem_path, text))
    assert expected, "a bad vector lists the problems it expects"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert_problems([(p.path, p.message) for p in info.value.problems], expected)


def test_missing_file() -> None:
    with pytest.raises(ConfigError) as info:
        load_config("/nonexistent/siplb.toml")
    assert [p.path for p in info.value.problems] == [""]
    assert "cannot read /nonexistent/siplb.toml" in str(info.value)


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "siplb.toml"
    path.write_bytes(MINIMAL.encode() + b"# caf\xe9\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "not UTF-8" in str(info.value)


def test_file_source_and_digest(tmp_path: Path) -> None:
    path = tmp_path / "siplb.toml"
    path.write_bytes(MINIMAL.encode())
    config = load_config(str(path))
    assert config.source == str(path)
    assert config.digest == hashlib.sha256(MINIMAL.encode()).hexdigest()


# --- TLS files and the admin token file ----------------------------------------------------------

TLS_LISTEN = '[[listen]]\ntransport = "tls"\naddress = "127.0.0.1:5061"\n'


def test_tls_files_are_taken_from_the_config_folder(tmp_path: Path) -> None:
    (tmp_path / "tls").mkdir()
    for name in ("cert.pem", "key.pem", "ca.pem"):
        (tmp_path / "tls" / name).write_text("placeholder: only existence is checked\n")
    path = tmp_path / "siplb.toml"
    path.write_text(
        TLS_LISTEN + 'cert = "tls/cert.pem"\nkey = "tls/key.pem"\nca = "tls/ca.pem"\n' + SET
    )
    listener = load_config(path).listeners[0]
    folder = tmp_path / "tls"
    assert listener.tls == TlsFiles(folder / "cert.pem", folder / "key.pem", folder / "ca.pem")
    assert listener.port == 5061


def test_tls_ca_may_be_a_folder(tmp_path: Path) -> None:
    for name in ("cert.pem", "key.pem"):
        (tmp_path / name).write_text("x\n")
    text = TLS_LISTEN + f'cert = "cert.pem"\nkey = "key.pem"\nca = "{tmp_path}"\n' + SET
    tls = parse_config(text, base_dir=tmp_path).listeners[0].tls
    assert tls is not None
    assert tls.ca == tmp_path


def test_missing_tls_files_are_problems(tmp_path: Path) -> None:
    (tmp_path / "cert.pem").write_text("x\n")
    text = TLS_LISTEN + 'cert = "cert.pem"\nkey = "key.pem"\nca = "ca.pem"\n' + SET
    found = problems_of(text, base_dir=tmp_path)
    assert_problems(
        found,
        [("listen[0].key", "no such file"), ("listen[0].ca", "no such file")],
    )
    assert str(tmp_path / "key.pem") in dict(found)["listen[0].key"]


def test_tcp_and_tls_cannot_share_a_port(tmp_path: Path) -> None:
    for name in ("cert.pem", "key.pem"):
        (tmp_path / name).write_text("x\n")
    text = (
        '[[listen]]\ntransport = "tcp"\naddress = "127.0.0.1:5061"\n'
        '[[listen]]\ntransport = "udp"\naddress = "127.0.0.1:5061"\n'
        + TLS_LISTEN
        + 'cert = "cert.pem"\nkey = "key.pem"\n'
        + SET
    )
    found = problems_of(text, base_dir=tmp_path)
    assert_problems(found, [("listen[2].address", "already bound by listen[0]")])


def test_admin_token_file(tmp_path: Path) -> None:
    (tmp_path / "admin.token").write_text("s3cret\n")
    config = parse_config(MINIMAL + '[admin]\ntoken_file = "admin.token"\n', base_dir=tmp_path)
    assert config.admin.token_file == tmp_path / "admin.token"
    assert config.admin.token is None


# --- route rules ---------------------------------------------------------------------------------

ROUTES = MINIMAL + (
    '[[sets]]\nname = "reg"\ndestinations = [{ uri = "sip:127.0.0.1:5080" }]\n'
    '[[routes]]\nset = "reg"\nmethod = "REGISTER"\n'
    '[[routes]]\nset = "reg"\nmethod = ["INVITE", "MESSAGE"]\nruri_user = "[0-9]{3}"\n'
    'ruri_domain = "example\\\\.com"\nsource = ["10.0.0.0/8", "2001:db8::/32"]\n'
)

# (rule index, method, ruri user, ruri domain, source, matches)
MATCH_CASES = [
    (0, "REGISTER", None, "example.com", "127.0.0.1", True),
    (0, "register", None, "example.com", "127.0.0.1", False),  # methods are case-sensitive
    (0, "INVITE", None, "example.com", "127.0.0.1", False),
    (1, "INVITE", "123", "example.com", "10.1.2.3", True),
    (1, "MESSAGE", "123", "EXAMPLE.COM", "2001:db8::7", True),  # domains are case-insensitive
    (1, "INVITE", "1234", "example.com", "10.1.2.3", False),  # full match, not search
    (1, "INVITE", "123", "example.community", "10.1.2.3", False),
    (1, "INVITE", "123", "exampleXcom", "10.1.2.3", False),
    (1, "INVITE", None, "example.com", "10.1.2.3", False),  # no user part
    (1, "INVITE", "123", "example.com", "11.0.0.1", False),
    (1, "INVITE", "123", "example.com", "::ffff:10.0.0.1", True),  # IPv4 on a dual-stack socket
    (1, "BYE", "123", "example.com", "10.1.2.3", False),
]


@pytest.mark.parametrize(("index", "method", "user", "domain", "source", "matches"), MATCH_CASES)
def test_route_rule_matches(
    index: int, method: str, user: str | None, domain: str, source: str, matches: bool
) -> None:
    rule = parse_config(ROUTES).routes[index]
    assert rule.matches(method, user, domain, ip_address(source)) is matches


def test_route_rules_are_parsed() -> None:
    config = parse_config(ROUTES)
    assert config.routes[0] == RouteRule("reg", frozenset({"REGISTER"}))
    rule = config.routes[1]
    assert rule.methods == frozenset({"INVITE", "MESSAGE"})
    assert rule.sources == (ip_network("10.0.0.0/8"), ip_network("2001:db8::/32"))
    assert RouteRule("pbx").matches("OPTIONS", None, "x", ip_address("::1"))


# --- the settings are frozen -------------------------------------------------------------------


def test_settings_are_frozen() -> None:
    config = parse_config(ISSUE_EXAMPLE)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.default_set = "other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.listeners[0].port = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.sets[0].destinations[0].attrs["x"] = "y"  # type: ignore[index]
    assert config.set_named("pbx") is config.sets[0]
    with pytest.raises(KeyError):
        config.set_named("nope")


# --- only ConfigError, whatever the document -----------------------------------------------------

_KEYS = sorted(
    {"listen", "sets", "routes", "default_set", "health", "proxy", "tcp", "limits", "log"}
    | {"admin", "transport", "address", "advertise", "recv_buffer", "cert", "key", "ca", "name"}
    | {"algorithm", "hash_key", "destinations", "uri", "weight", "priority", "max_calls", "attrs"}
    | {"set", "method", "ruri_user", "ruri_domain", "source", "interval", "timeout", "t1", "t2"}
    | {"dead_codes", "failover_codes", "node_id", "listen", "token", "token_file", "level"}
)
_SCALARS = (
    st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(["sip:127.0.0.1", "127.0.0.1:5060", "[::1]:0", "5xx", "INVITE", "pbx"])
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(_KEYS), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(_KEYS), _VALUES, max_size=6))
def test_any_document_gives_a_config_or_a_config_error(document: dict[str, Any]) -> None:
    problems: list[Problem] = []
    try:
        build_config(document, source="<fuzz>", digest="", base_dir=None)
    except ConfigError as exc:
        problems = exc.problems
        assert problems, "a ConfigError lists at least one problem"
    assert all(problem.message for problem in problems)


# --- [registrar] and [tls] (the registrar front end behind NAT) -----------------------------------

REGISTRAR_CASES = [
    ("defaults", "", {}),
    (
        "all keys",
        "[registrar]\npath = false\nrequire_supported = true\nrequire_path = false\n"
        "contact_alias = false\nkeepalive_interval = 0\nkeepalive_misses = 5\n"
        "max_bindings = 10\n",
        {
            "path": False,
            "require_supported": True,
            "require_path": False,
            "contact_alias": False,
            "keepalive_interval": 0.0,
            "keepalive_misses": 5,
            "max_bindings": 10,
        },
    ),
]


@pytest.mark.parametrize(
    ("text", "fields"), [c[1:] for c in REGISTRAR_CASES], ids=[c[0] for c in REGISTRAR_CASES]
)
def test_registrar_section(text: str, fields: dict[str, Any]) -> None:
    from siplb.settings import RegistrarSettings

    config = parse_config(MINIMAL + text)
    assert config.registrar == dataclasses.replace(RegistrarSettings(), **fields)


REGISTRAR_PROBLEMS = [
    ("negative interval", "[registrar]\nkeepalive_interval = -1\n", "registrar.keepalive_interval"),
    ("zero misses", "[registrar]\nkeepalive_misses = 0\n", "registrar.keepalive_misses"),
    ("unknown key", "[registrar]\nkeepalive = 5\n", "registrar.keepalive"),
    ("string bool", '[registrar]\npath = "yes"\n', "registrar.path"),
    ("tls half a pair", '[tls]\ncert = "c.pem"\n', "tls.key"),
    ("tls unknown", "[tls]\nverify_peer = true\n", "tls.verify_peer"),
    ("verify_client on udp", "", "listen[0].verify_client"),
]


@pytest.mark.parametrize(
    ("text", "path"), [c[1:] for c in REGISTRAR_PROBLEMS], ids=[c[0] for c in REGISTRAR_PROBLEMS]
)
def test_registrar_and_tls_problems(text: str, path: str, tmp_path: Path) -> None:
    (tmp_path / "c.pem").write_text("x\n")
    listen = LISTEN + ("verify_client = true\n" if "verify_client" in path else "")
    found = problems_of(listen + SET + text, base_dir=tmp_path)
    assert path in dict(found), found


def test_tls_client_settings_and_client_verification(tmp_path: Path) -> None:
    from siplb.settings import TlsClientSettings

    for name in ("cert.pem", "key.pem", "ca.pem"):
        (tmp_path / name).write_text("x\n")
    text = (
        TLS_LISTEN
        + 'cert = "cert.pem"\nkey = "key.pem"\nca = "ca.pem"\nverify_client = true\n'
        + SET
        + '[tls]\nca = "ca.pem"\nverify = false\ncert = "cert.pem"\nkey = "key.pem"\n'
    )
    config = parse_config(text, base_dir=tmp_path)
    assert config.listeners[0].verify_client
    assert config.tls == TlsClientSettings(
        tmp_path / "ca.pem", False, tmp_path / "cert.pem", tmp_path / "key.pem"
    )
    without_ca = TLS_LISTEN + 'cert = "cert.pem"\nkey = "key.pem"\nverify_client = true\n' + SET
    assert_problems(
        problems_of(without_ca, base_dir=tmp_path), [("listen[0].verify_client", "needs ca")]
    )
