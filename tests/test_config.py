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
    ClusterSettings,
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
    config_hash,
    load_config,
    parse_config,
)
from siplb.config.build import build_config
from siplb.config.protection import MAX_LINE_PROBLEMS, parse_blocklist
from siplb.dispatch.spec import Algorithm, DestinationSpec, HashKey, HealthSettings, SetSpec
from siplb.settings import (
    DEFAULT_SCANNER_AGENTS,
    AclRule,
    NftablesSettings,
    ProtectionSettings,
    RateSettings,
    ScannerSettings,
)

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
    # No [admin] table: no admin API.
    assert config.admin == AdminSettings("127.0.0.1", 8080, None, None, enabled=False)
    assert config.listeners[0].name is None


def test_defaults_equal_the_dataclass_defaults() -> None:
    config = parse_config(MINIMAL)
    assert config.tcp == TcpSettings()
    assert config.limits == LimitsSettings()
    assert config.proxy == ProxySettings()
    assert config.admin == dataclasses.replace(AdminSettings(), enabled=False)
    assert config.protection == ProtectionSettings()
    assert config.protection.scanners.user_agents == DEFAULT_SCANNER_AGENTS
    # Every table given but empty: the same defaults, and an empty [admin] turns the API on.
    empty = parse_config(
        MINIMAL + "[tcp]\n[limits]\n[admin]\n[protection]\n[protection.rate]\n"
        "[protection.scanners]\n[protection.nftables]\n"
    )
    assert (empty.tcp, empty.limits) == (TcpSettings(), LimitsSettings())
    assert empty.admin == AdminSettings()
    assert empty.protection == ProtectionSettings()


def test_example_file_loads() -> None:
    path = ROOT / "examples" / "siplb.toml"
    config = load_config(path)
    assert config.source == str(path)
    assert config.digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert [spec.name for spec in config.sets] == ["pbx", "registrar", "trunks"]
    assert [listener.name for listener in config.listeners] == ["public", "public-tcp", None]
    assert config.admin.enabled
    assert config.protection == ProtectionSettings()  # it documents the defaults
    assert config.default_set == "pbx"
    assert len(config.listeners) == 3
    assert len(config.routes) == 3
    # The example sets every key of [health] and [proxy]; check a few took effect.
    assert config.health.dead_codes == frozenset({408, *range(500, 600)})
    assert config.set_named("registrar").hash_key is HashKey.TO_URI
    assert config.set_named("trunks").destinations[0].transport == "tls"


def test_the_cluster_example_is_three_nodes_on_one_config() -> None:
    configs = [load_config(ROOT / "examples" / "cluster" / f"node{i}.toml") for i in (1, 2, 3)]
    assert [c.node_id for c in configs] == ["n1", "n2", "n3"]
    assert all(c.cluster is not None for c in configs)
    assert len({c.config_hash for c in configs}) == 1  # only identity and addresses differ
    assert len({c.cluster.peer for c in configs if c.cluster is not None}) == 3


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
        "record_route = false\nno_answer_status = 480\n"
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
        "b7",
        1.5,
        5,
        frozenset(range(500, 600)),
        0.25,
        2.0,
        3.0,
        3600,
        60,
        0,
        0,
        20,
        False,
        no_answer_status=480,
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
    ("sip:pbx..example.com", "not a valid IPv4 address"),  # names: tests/names/test_config.py
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
        [("sets[0].destinations", "at least one destination (or srv)")],
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
    ("top level", "volume = 1\n" + MINIMAL, "volume", ""),
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
        'destinations = [{ uri = "sip:a..example" }, { uri = "sip:127.0.0.1", weight = 0 }]\n'
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
        ("sets[0].destinations[0].uri", "not a valid IPv4 address"),
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
    | {"protection", "acl", "trusted", "blocklist", "passive_methods", "rate", "scanners"}
    | {"nftables", "action", "hosts", "user_agents", "extra_user_agents", "from_patterns"}
    | {"ban_time", "max_ban_time", "set4", "set6", "malformed", "max_transactions"}
    | {"cluster", "redis", "sentinels", "service", "peer", "secret", "heartbeat", "lease_ttl"}
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


# --- stream and message limits, listener names, [admin] hosts ------------------------------------

NAMED = '[[listen]]\nname = "pub"\naddress = "127.0.0.1:5060"\n' + SET

# (id, text after MINIMAL, the settings read, what they must equal)
SECTION_CASES: list[tuple[str, str, Any, Any]] = [
    (
        "tcp",
        "[tcp]\nmax_connections = 50\nmax_outbound = 60\nmax_per_source = 5\n"
        "header_timeout = 2\nmessage_timeout = 2\nmax_buffered = 1048576\n"
        "tls_handshake_timeout = 1.5\n",
        lambda c: c.tcp,
        TcpSettings(600.0, 2.0, 50, 60, 5, 2.0, 2.0, 1024 * 1024, 1.5),
    ),
    (
        "limits",
        '[limits]\nmalformed = "drop"\nmax_transactions = 10\nmax_transactions_per_source = 10\n',
        lambda c: c.limits,
        LimitsSettings(malformed="drop", max_transactions=10, max_transactions_per_source=10),
    ),
    ("limits reply", '[limits]\nmalformed = "reply"\n', lambda c: c.limits.malformed, "reply"),
    (
        "small total, per source given",
        "[limits]\nmax_transactions = 50\nmax_transactions_per_source = 5\n",
        lambda c: (c.limits.max_transactions, c.limits.max_transactions_per_source),
        (50, 5),
    ),
    (
        "bye_unconfirmed",
        "[proxy]\nbye_unconfirmed = true\n",
        lambda c: c.proxy,
        ProxySettings(bye_unconfirmed=True),
    ),
    ("empty admin", "[admin]\n", lambda c: c.admin, AdminSettings()),
    (
        "admin hosts",
        '[admin]\nhosts = ["Siplb.Example.NET.", "127.0.0.1", "[::1]", "2001:DB8:0::1", "localhost"]\n',
        lambda c: c.admin.hosts,
        ("siplb.example.net", "127.0.0.1", "::1", "2001:db8::1", "localhost"),
    ),
    (
        "admin hosts once each",
        '[admin]\nhosts = ["a.example", "A.example"]\n',
        lambda c: c.admin.hosts,
        ("a.example",),
    ),
    (
        "trusted and passive methods",
        '[protection]\ntrusted = ["10.0.0.0/8", "2001:db8::/32", "192.0.2.7"]\n'
        'passive_methods = ["INVITE", "OPTIONS"]\n',
        lambda c: (c.protection.trusted, c.protection.passive_methods),
        (
            (ip_network("10.0.0.0/8"), ip_network("2001:db8::/32"), ip_network("192.0.2.7/32")),
            frozenset({"INVITE", "OPTIONS"}),
        ),
    ),
    (
        "one passive method",
        '[protection]\npassive_methods = "BYE"\n',
        lambda c: c.protection.passive_methods,
        frozenset({"BYE"}),
    ),
    (
        "rate",
        "[protection.rate]\nenabled = false\nwindow = 2\ninvite = 10\nregister = 20\nother = 30\n"
        "ban_time = 5\nmax_ban_time = 5\nscore_half_life = 60\nmax_sources = 7\n",
        lambda c: c.protection.rate,
        RateSettings(False, 2.0, 10, 20, 30, 5.0, 5.0, 60.0, 7),
    ),
    (
        "scanners",
        '[protection.scanners]\nenabled = false\naction = "reply"\nban_time = 60\n'
        "max_failed_users = 3\nfailed_users_window = 1.5\nmax_register_failures = 2\n",
        lambda c: c.protection.scanners,
        ScannerSettings(False, "reply", DEFAULT_SCANNER_AGENTS, (), 60.0, 3, 1.5, 2),
    ),
    (
        "nftables",
        '[protection.nftables]\nenabled = true\ntable = "edge"\nset4 = "bad_v4"\nset6 = "bad_v6"\n'
        "create = false\n",
        lambda c: c.protection.nftables,
        NftablesSettings(True, "edge", "bad_v4", "bad_v6", False),
    ),
]


@pytest.mark.parametrize(
    ("text", "read", "expected"),
    [case[1:] for case in SECTION_CASES],
    ids=[case[0] for case in SECTION_CASES],
)
def test_section_values(text: str, read: Any, expected: Any) -> None:
    assert read(parse_config(MINIMAL + text)) == expected


# (id, [protection.scanners] keys, user_agents expected)
USER_AGENT_CASES = [
    ("defaults", "", DEFAULT_SCANNER_AGENTS),
    ("replaced", 'user_agents = ["evil", "worse"]', ("evil", "worse")),
    ("none at all", "user_agents = []", ()),
    ("added", 'extra_user_agents = ["evil"]', (*DEFAULT_SCANNER_AGENTS, "evil")),
    ("added to replaced", 'user_agents = ["a"]\nextra_user_agents = ["b", "a"]', ("a", "b")),
]


@pytest.mark.parametrize(
    ("keys", "expected"), [c[1:] for c in USER_AGENT_CASES], ids=[c[0] for c in USER_AGENT_CASES]
)
def test_scanner_user_agents(keys: str, expected: tuple[str, ...]) -> None:
    config = parse_config(MINIMAL + f"[protection.scanners]\n{keys}\n")
    assert config.protection.scanners.user_agents == expected


def test_scanner_from_patterns_ignore_case() -> None:
    text = MINIMAL + '[protection.scanners]\nfrom_patterns = ["^\\"?sipvicious", "@1\\\\.2"]\n'
    patterns = parse_config(text).protection.scanners.from_patterns
    assert [p.pattern for p in patterns] == ['^"?sipvicious', "@1\\.2"]
    assert patterns[0].search('"SIPVicious" <sip:100@192.0.2.1>') is not None
    assert patterns[1].search("<sip:100@1x2>") is None


def test_listener_names() -> None:
    text = (
        '[[listen]]\nname = "public.udp-1"\naddress = "127.0.0.1:5060"\n'
        '[[listen]]\naddress = "127.0.0.1:5061"\n'
        f'[[listen]]\nname = "{"x" * 32}"\naddress = "127.0.0.1:5062"\n' + SET
    )
    names = [listener.name for listener in parse_config(text).listeners]
    assert names == ["public.udp-1", None, "x" * 32]


# --- [[acl]] -------------------------------------------------------------------------------------

ACL = (
    '[[acl]]\naction = "allow"\nsource = ["192.0.2.0/24"]\nmethod = "REGISTER"\n'
    '[[acl]]\naction = "deny"\nsource = ["0.0.0.0/0", "::/0"]\nmethod = ["REGISTER", "SUBSCRIBE"]\n'
    'listen = ["pub"]\n'
    '[[acl]]\naction = "allow"\nsource = ["0.0.0.0/0"]\n'
)


def test_acl_rules_in_order() -> None:
    config = parse_config(NAMED + ACL)
    assert config.protection.acl == (
        AclRule("allow", (ip_network("192.0.2.0/24"),), frozenset({"REGISTER"})),
        AclRule(
            "deny",
            (ip_network("0.0.0.0/0"), ip_network("::/0")),
            frozenset({"REGISTER", "SUBSCRIBE"}),
            frozenset({"pub"}),
        ),
        AclRule("allow", (ip_network("0.0.0.0/0"),)),
    )
    assert config.protection == ProtectionSettings(acl=config.protection.acl)


# --- the blocklist file ---------------------------------------------------------------------------

BLOCKLIST_CASES = [
    ("empty", "", ()),
    ("comments and blanks", "# nothing yet\n\n   \n# 10.0.0.0/8\n", ()),
    (
        "networks and addresses",
        "198.51.100.0/24\n  203.0.113.7  \n2001:db8:bad::/48 # a comment\r\n::1\n",
        ("198.51.100.0/24", "203.0.113.7/32", "2001:db8:bad::/48", "::1/128"),
    ),
    ("each once", "198.51.100.0/24\n198.51.100.0/24\n", ("198.51.100.0/24",)),
]


@pytest.mark.parametrize(
    ("text", "expected"), [c[1:] for c in BLOCKLIST_CASES], ids=[c[0] for c in BLOCKLIST_CASES]
)
def test_blocklist_file(text: str, expected: tuple[str, ...], tmp_path: Path) -> None:
    (tmp_path / "blocked.txt").write_text(text)
    path = tmp_path / "siplb.toml"
    path.write_text(MINIMAL + '[protection]\nblocklist = "blocked.txt"\n')
    protection = load_config(path).protection
    assert protection.blocklist == tmp_path / "blocked.txt"
    assert protection.blocked == tuple(ip_network(net) for net in expected)


BAD_BLOCKLIST_CASES = [
    (
        "host bits",
        "10.0.0.0/8\n# fine\n192.168.1.1/24\n",
        ["blocked.txt line 3: '192.168.1.1/24' has host bits set"],
    ),
    (
        "not a network",
        "\n\nevil.example\n",
        ["blocked.txt line 3: 'evil.example' is not an IPv4 or IPv6"],
    ),
    (
        "two bad lines",
        "1.2.3.4/33\n10.0.0.0/8\n::g\n",
        ["blocked.txt line 1: '1.2.3.4/33'", "blocked.txt line 3: '::g'"],
    ),
    (
        "many bad lines",
        "bad\n" * (MAX_LINE_PROBLEMS + 5),
        [*(f"line {n}:" for n in range(1, MAX_LINE_PROBLEMS + 1)), "5 more bad lines"],
    ),
]


@pytest.mark.parametrize(
    ("text", "messages"),
    [c[1:] for c in BAD_BLOCKLIST_CASES],
    ids=[c[0] for c in BAD_BLOCKLIST_CASES],
)
def test_bad_blocklist_lines(text: str, messages: list[str], tmp_path: Path) -> None:
    (tmp_path / "blocked.txt").write_text(text)
    found = problems_of(MINIMAL + '[protection]\nblocklist = "blocked.txt"\n', base_dir=tmp_path)
    assert [path for path, _ in found] == ["protection.blocklist"] * len(messages)
    for (_, message), expected in zip(found, messages, strict=True):
        assert expected in message, (message, expected)


def test_missing_or_unreadable_blocklist(tmp_path: Path) -> None:
    text = MINIMAL + '[protection]\nblocklist = "blocked.txt"\n'
    found = problems_of(text, base_dir=tmp_path)
    assert found == [("protection.blocklist", f"no such file: {str(tmp_path / 'blocked.txt')!r}")]
    (tmp_path / "blocked.txt").write_bytes(b"10.0.0.0/8 # caf\xe9\n")
    assert_problems(problems_of(text, base_dir=tmp_path), [("protection.blocklist", "not UTF-8")])


def test_parse_blocklist_reports_line_numbers() -> None:
    networks, bad = parse_blocklist("10.0.0.0/8\nx\n\n# y\n10.0.0.0/33\n")
    assert networks == (ip_network("10.0.0.0/8"),)
    assert [number for number, _ in bad] == [2, 5]


# --- new keys, one problem at a time -------------------------------------------------------------

RATE = MINIMAL + "[protection.rate]\n"
SCANNERS = MINIMAL + "[protection.scanners]\n"
NFT = MINIMAL + "[protection.nftables]\n"
ACL_ANY = '[[acl]]\naction = "deny"\nsource = ["0.0.0.0/0"]\n'

NEW_PROBLEM_CASES = [
    # [[listen]] name
    (
        "listener name with a space",
        LISTEN + 'name = "my port"\n' + SET,
        [("listen[0].name", "not a valid listener name")],
    ),
    (
        "listener name too long",
        LISTEN + f'name = "{"x" * 33}"\n' + SET,
        [("listen[0].name", "1 to 32")],
    ),
    (
        "listener name not a string",
        LISTEN + "name = 1\n" + SET,
        [("listen[0].name", "expected a string")],
    ),
    (
        "duplicate listener name",
        NAMED + '[[listen]]\nname = "pub"\naddress = "127.0.0.1:5062"\n',
        [("listen[1].name", "listener 'pub' is already defined by listen[0]")],
    ),
    # [tcp]
    (
        "max_outbound 0",
        MINIMAL + "[tcp]\nmax_outbound = 0\n",
        [("tcp.max_outbound", "greater than or equal to 1")],
    ),
    (
        "max_per_source 0",
        MINIMAL + "[tcp]\nmax_per_source = 0\n",
        [("tcp.max_per_source", "greater than or equal to 1")],
    ),
    (
        "header_timeout 0",
        MINIMAL + "[tcp]\nheader_timeout = 0\n",
        [("tcp.header_timeout", "greater than 0")],
    ),
    (
        "tls_handshake_timeout negative",
        MINIMAL + "[tcp]\ntls_handshake_timeout = -1\n",
        [("tcp.tls_handshake_timeout", "greater than 0")],
    ),
    (
        "max_buffered below 1 MiB",
        MINIMAL + "[tcp]\nmax_buffered = 1048575\n",
        [("tcp.max_buffered", "greater than or equal to 1048576")],
    ),
    (
        "message before header timeout",
        MINIMAL + "[tcp]\nheader_timeout = 20\nmessage_timeout = 10\n",
        [("tcp.message_timeout", "must be at least header_timeout (20)")],
    ),
    (
        "message timeout below the default header timeout",
        MINIMAL + "[tcp]\nmessage_timeout = 5\n",
        [("tcp.message_timeout", "must be at least header_timeout (10, its default)")],
    ),
    (
        "header timeout above the default message timeout",
        MINIMAL + "[tcp]\nheader_timeout = 60\n",
        [("tcp.header_timeout", "must not exceed message_timeout (30, its default)")],
    ),
    # [limits]
    (
        "bad malformed",
        MINIMAL + '[limits]\nmalformed = "ignore"\n',
        [("limits.malformed", "'reply' or 'drop'")],
    ),
    (
        "max_transactions 0",
        MINIMAL + "[limits]\nmax_transactions = 0\n",
        [("limits.max_transactions", "greater than or equal to 1")],
    ),
    (
        "per source 0",
        MINIMAL + "[limits]\nmax_transactions_per_source = 0\n",
        [("limits.max_transactions_per_source", "greater than or equal to 1")],
    ),
    (
        "per source above total",
        MINIMAL + "[limits]\nmax_transactions = 100\nmax_transactions_per_source = 200\n",
        [("limits.max_transactions_per_source", "must not exceed max_transactions (100)")],
    ),
    (
        "total below the default per source",
        MINIMAL + "[limits]\nmax_transactions = 500\n",
        [
            (
                "limits.max_transactions",
                "must be at least max_transactions_per_source (1000, its default)",
            )
        ],
    ),
    # [proxy]
    (
        "bye_unconfirmed not a bool",
        MINIMAL + '[proxy]\nbye_unconfirmed = "yes"\n',
        [("proxy.bye_unconfirmed", "expected true or false")],
    ),
    # [admin] hosts
    (
        "admin host with port",
        MINIMAL + '[admin]\nhosts = ["siplb.example.net:8080"]\n',
        [("admin.hosts[0]", "did you mean 'siplb.example.net'?")],
    ),
    (
        "admin host bad name",
        MINIMAL + '[admin]\nhosts = ["ok.example", "bad_name!"]\n',
        [("admin.hosts[1]", "not a DNS name or an IP address")],
    ),
    (
        "admin host bad ipv4",
        MINIMAL + '[admin]\nhosts = ["300.1.1.1"]\n',
        [("admin.hosts[0]", "not a DNS name or an IP address")],
    ),
    (
        "admin host bad ipv6",
        MINIMAL + '[admin]\nhosts = ["[::1]:8080"]\n',
        [("admin.hosts[0]", "not a valid IPv6 address")],
    ),
    (
        "admin hosts empty",
        MINIMAL + "[admin]\nhosts = []\n",
        [("admin.hosts", "an empty list accepts no request")],
    ),
    (
        "admin hosts a string",
        MINIMAL + '[admin]\nhosts = "localhost"\n',
        [("admin.hosts", "expected an array")],
    ),
    ("admin not a table", 'admin = "on"\n' + MINIMAL, [("admin", "expected a table")]),
    # [protection]
    (
        "trusted host bits",
        MINIMAL + '[protection]\ntrusted = ["10.0.0.1/8"]\n',
        [("protection.trusted[0]", "did you mean '10.0.0.0/8'?")],
    ),
    (
        "trusted not a list",
        MINIMAL + '[protection]\ntrusted = "10.0.0.0/8"\n',
        [("protection.trusted", "expected an array")],
    ),
    (
        "empty blocklist name",
        MINIMAL + '[protection]\nblocklist = ""\n',
        [("protection.blocklist", "at least 1 character")],
    ),
    (
        "passive method case",
        MINIMAL + '[protection]\npassive_methods = ["invite"]\n',
        [("protection.passive_methods", "did you mean 'INVITE'?")],
    ),
    (
        "protection unknown table",
        MINIMAL + "[protection.pike]\nenabled = true\n",
        [("protection.pike", "unknown key")],
    ),
    (
        "rate not a table",
        MINIMAL + "[protection]\nrate = 5\n",
        [("protection.rate", "expected a table")],
    ),
    ("protection not a table", "protection = []\n" + MINIMAL, [("protection", "expected a table")]),
    # [protection.rate]
    ("rate window 0", RATE + "window = 0\n", [("protection.rate.window", "greater than 0")]),
    (
        "rate invite 0",
        RATE + "invite = 0\n",
        [("protection.rate.invite", "greater than or equal to 1")],
    ),
    (
        "rate register 0",
        RATE + "register = 0\n",
        [("protection.rate.register", "greater than or equal to 1")],
    ),
    (
        "rate register a string",
        RATE + 'register = "5"\n',
        [("protection.rate.register", "expected an integer")],
    ),
    (
        "rate other 0",
        RATE + "other = 0\n",
        [("protection.rate.other", "greater than or equal to 1")],
    ),
    ("rate ban_time 0", RATE + "ban_time = 0\n", [("protection.rate.ban_time", "greater than 0")]),
    (
        "rate half life negative",
        RATE + "score_half_life = -1\n",
        [("protection.rate.score_half_life", "greater than 0")],
    ),
    (
        "rate max_sources 0",
        RATE + "max_sources = 0\n",
        [("protection.rate.max_sources", "greater than or equal to 1")],
    ),
    (
        "rate enabled a string",
        RATE + 'enabled = "no"\n',
        [("protection.rate.enabled", "expected true or false")],
    ),
    (
        "max ban below ban",
        RATE + "ban_time = 600\nmax_ban_time = 60\n",
        [("protection.rate.max_ban_time", "must be at least ban_time (600)")],
    ),
    (
        "ban above the default max ban",
        RATE + "ban_time = 7200\n",
        [("protection.rate.ban_time", "must not exceed max_ban_time (3600, its default)")],
    ),
    # [protection.scanners]
    (
        "scanner action",
        SCANNERS + 'action = "block"\n',
        [("protection.scanners.action", "'drop' or 'reply'")],
    ),
    (
        "empty user agent",
        SCANNERS + 'user_agents = ["ok", ""]\n',
        [("protection.scanners.user_agents[1]", "must not be empty")],
    ),
    (
        "extra user agent not a string",
        SCANNERS + "extra_user_agents = [1]\n",
        [("protection.scanners.extra_user_agents[0]", "expected a string")],
    ),
    (
        "bad from pattern",
        SCANNERS + 'from_patterns = ["ok", "(x"]\n',
        [("protection.scanners.from_patterns[1]", "invalid regular expression '(x'")],
    ),
    (
        "scanner ban_time 0",
        SCANNERS + "ban_time = 0\n",
        [("protection.scanners.ban_time", "greater than 0")],
    ),
    (
        "max_failed_users 0",
        SCANNERS + "max_failed_users = 0\n",
        [("protection.scanners.max_failed_users", "greater than or equal to 1")],
    ),
    (
        "failed_users_window 0",
        SCANNERS + "failed_users_window = 0\n",
        [("protection.scanners.failed_users_window", "greater than 0")],
    ),
    (
        "max_register_failures 0",
        SCANNERS + "max_register_failures = 0\n",
        [("protection.scanners.max_register_failures", "greater than or equal to 1")],
    ),
    # [protection.nftables]
    (
        "nft table with a dash",
        NFT + 'table = "my-table"\n',
        [("protection.nftables.table", "not a valid nftables name")],
    ),
    ("nft set too long", NFT + f'set4 = "{"s" * 33}"\n', [("protection.nftables.set4", "1 to 32")]),
    (
        "nft empty set",
        NFT + 'set6 = ""\n',
        [("protection.nftables.set6", "not a valid nftables name")],
    ),
    (
        "nft same sets",
        NFT + 'set4 = "banned"\nset6 = "banned"\n',
        [("protection.nftables.set6", "must differ from set4 ('banned')")],
    ),
    (
        "nft enabled a number",
        NFT + "enabled = 1\n",
        [("protection.nftables.enabled", "expected true or false")],
    ),
    # [[acl]]
    (
        "acl without action",
        MINIMAL + '[[acl]]\nsource = ["0.0.0.0/0"]\n',
        [("acl[0].action", "required")],
    ),
    (
        "acl bad action",
        MINIMAL + '[[acl]]\naction = "reject"\nsource = ["0.0.0.0/0"]\n',
        [("acl[0].action", "'allow' or 'deny'")],
    ),
    ("acl without source", MINIMAL + '[[acl]]\naction = "deny"\n', [("acl[0].source", "required")]),
    (
        "acl empty source",
        MINIMAL + '[[acl]]\naction = "deny"\nsource = []\n',
        [("acl[0].source", "at least one network")],
    ),
    (
        "acl source host bits",
        MINIMAL + '[[acl]]\naction = "deny"\nsource = ["0.0.0.0/0", "10.1.0.0/8"]\n',
        [("acl[0].source[1]", "did you mean '10.0.0.0/8'?")],
    ),
    (
        "acl method case",
        MINIMAL + ACL_ANY + 'method = "register"\n',
        [("acl[0].method", "did you mean 'REGISTER'?")],
    ),
    (
        "acl unknown listener",
        NAMED + ACL_ANY + ACL_ANY + 'listen = ["pub", "private"]\n',
        [("acl[1].listen", "no listener is named 'private' (names: 'pub')")],
    ),
    (
        "acl listener none named",
        MINIMAL + ACL_ANY + 'listen = ["pub"]\n',
        [("acl[0].listen", "(names: none)")],
    ),
    (
        "acl bad listener name",
        NAMED + ACL_ANY + 'listen = ["my port"]\n',
        [("acl[0].listen[0]", "not a valid listener name")],
    ),
    ("acl empty listen", NAMED + ACL_ANY + "listen = []\n", [("acl[0].listen", "never matches")]),
    (
        "acl unknown listener and no action",
        NAMED + '[[acl]]\nsource = ["0.0.0.0/0"]\nlisten = ["nope"]\n',
        [("acl[0].action", "required"), ("acl[0].listen", "no listener is named 'nope'")],
    ),
    ("acl not an array", 'acl = "deny"\n' + MINIMAL, [("acl", "expected an array")]),
    ("acl rule not a table", 'acl = ["deny"]\n' + MINIMAL, [("acl[0]", "expected a table")]),
]


@pytest.mark.parametrize(
    ("text", "expected"),
    [case[1:] for case in NEW_PROBLEM_CASES],
    ids=[case[0] for case in NEW_PROBLEM_CASES],
)
def test_new_key_problem(text: str, expected: list[tuple[str, str]]) -> None:
    assert_problems(problems_of(text), expected)


NEW_UNKNOWN_KEY_CASES = [
    ("protection", MINIMAL + "[protection]\ntrustd = []\n", "protection.trustd", "trusted"),
    ("rate", RATE + "invites = 1\n", "protection.rate.invites", "invite"),
    ("rate alias", RATE + "registr = 1\n", "protection.rate.registr", "register"),
    ("scanners", SCANNERS + "user_agent = []\n", "protection.scanners.user_agent", "user_agents"),
    ("nftables", NFT + "set_4 = 'x'\n", "protection.nftables.set_4", "set4"),
    ("acl", MINIMAL + ACL_ANY + "methods = 'INVITE'\n", "acl[0].methods", "method"),
    ("admin", MINIMAL + "[admin]\nhost = []\n", "admin.host", "hosts"),
]


@pytest.mark.parametrize(
    ("text", "path", "suggestion"),
    [case[1:] for case in NEW_UNKNOWN_KEY_CASES],
    ids=[case[0] for case in NEW_UNKNOWN_KEY_CASES],
)
def test_new_unknown_key(text: str, path: str, suggestion: str) -> None:
    assert problems_of(text) == [(path, f"unknown key: did you mean {suggestion!r}?")]


def test_every_protection_problem_is_reported_at_once(tmp_path: Path) -> None:
    (tmp_path / "blocked.txt").write_text("10.0.0.0/8\nnot-a-network\n")
    text = (
        NAMED
        + "[limits]\nmax_transactions = 10\nmax_transactions_per_source = 20\n"
        + '[protection]\ntrusted = ["x"]\nblocklist = "blocked.txt"\n'
        + "[protection.rate]\ninvite = 0\n"
        + '[protection.scanners]\naction = "kill"\n'
        + '[protection.nftables]\ntable = "a b"\n'
        + '[[acl]]\naction = "deny"\nsource = []\nlisten = ["nope"]\n'
    )
    assert_problems(
        problems_of(text, base_dir=tmp_path),
        [
            ("limits.max_transactions_per_source", "must not exceed max_transactions (10)"),
            ("protection.trusted[0]", "not an IPv4 or IPv6 network"),
            ("protection.blocklist", "blocked.txt line 2"),
            ("protection.rate.invite", "greater than or equal to 1"),
            ("protection.scanners.action", "'drop' or 'reply'"),
            ("protection.nftables.table", "not a valid nftables name"),
            ("acl[0].source", "at least one network"),
            ("acl[0].listen", "no listener is named 'nope'"),
        ],
    )


def test_check_command_lists_every_problem(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from siplb.cli import main

    path = tmp_path / "siplb.toml"
    path.write_text(
        MINIMAL
        + '[protection]\nblocklist = "missing.txt"\n[tcp]\nmax_per_source = 0\n'
        + '[[acl]]\naction = "deny"\nsource = ["0.0.0.0/0"]\nlisten = ["nope"]\n'
    )
    result = CliRunner().invoke(main, ["check", "-c", str(path)])
    assert result.exit_code == 2
    for problem_path in ("protection.blocklist", "tcp.max_per_source", "acl[0].listen"):
        assert problem_path in result.output


# --- the hardened example ------------------------------------------------------------------------


def test_hardened_example_loads(tmp_path: Path) -> None:
    # Its admin token file is not shipped: load a copy next to a token, as an operator would.
    for name in ("hardened.toml", "blocked.txt"):
        (tmp_path / name).write_bytes((ROOT / "examples" / name).read_bytes())
    (tmp_path / "admin.token").write_text("s3cret\n")
    config = load_config(tmp_path / "hardened.toml")
    assert [listener.name for listener in config.listeners] == [
        "public-udp",
        "public-tcp",
        "private",
    ]
    assert (config.admin.enabled, config.admin.host) == (True, "127.0.0.1")
    assert config.admin.token_file == tmp_path / "admin.token"
    assert "siplb.example.net" in config.admin.hosts
    assert config.limits.malformed == "drop"
    assert config.tcp.max_per_source < TcpSettings().max_per_source
    protection = config.protection
    assert protection.blocked == (
        ip_network("198.51.100.0/24"),
        ip_network("203.0.113.0/24"),
        ip_network("2001:db8:bad::/48"),
    )
    assert [rule.action for rule in protection.acl] == ["allow", "deny", "allow"]
    assert protection.acl[1].methods == frozenset({"REGISTER"})
    assert protection.acl[1].listeners == frozenset({"public-udp", "public-tcp"})
    assert protection.scanners.action == "drop"
    assert protection.rate.enabled
    assert not protection.nftables.enabled


# --- [cluster] -----------------------------------------------------------------------------------

SECRET = "k" * 32
CLUSTER = (
    MINIMAL
    + '[cluster]\nnode_id = "a1"\nredis = "redis://127.0.0.1:6379/0"\npeer = "127.0.0.1:7000"\n'
    + f'secret = "{SECRET}"\n'
)
SENTINEL_CLUSTER = (
    MINIMAL
    + '[cluster]\nnode_id = "a1"\npeer = "[::1]:7000"\nname = "prod"\n'
    + 'sentinels = ["127.0.0.1:26379", "sentinel.example.net:26380"]\nservice = "siplb"\n'
    + f'secret = "{SECRET}"\nheartbeat = 0.1\ndead_after = 0.5\nlease_ttl = 2\n'
)
CLUSTER_BASE = MINIMAL + f'[cluster]\npeer = "127.0.0.1:7000"\nsecret = "{SECRET}"\n'
URL = 'redis = "redis://127.0.0.1"\n'


def test_no_cluster_table_means_alone() -> None:
    config = parse_config(MINIMAL + '[proxy]\nnode_id = "b7"\n')
    assert config.cluster is None
    assert config.node_id == config.proxy.node_id == "b7"


def test_cluster_with_a_redis_url() -> None:
    config = parse_config(CLUSTER)
    assert config.cluster == ClusterSettings(
        node_id="a1",
        peer=("127.0.0.1", 7000),
        secret=SECRET.encode(),
        redis="redis://127.0.0.1:6379/0",
    )
    assert config.cluster.prefix == "siplb:siplb:"
    assert (config.cluster.heartbeat, config.cluster.dead_after, config.cluster.lease_ttl) == (
        0.2,
        0.7,
        3.0,
    )
    assert config.node_id == config.proxy.node_id == "a1"  # one node id, wherever it is read
    assert SECRET not in repr(config)


def test_cluster_with_sentinels() -> None:
    cluster = parse_config(SENTINEL_CLUSTER).cluster
    assert cluster is not None
    assert cluster.redis is None
    assert cluster.sentinels == (
        HostPort("127.0.0.1", 26379),
        HostPort("sentinel.example.net", 26380),
    )
    assert (cluster.service, cluster.name, cluster.prefix) == ("siplb", "prod", "siplb:prod:")
    assert cluster.peer == ("::1", 7000)
    assert (cluster.heartbeat, cluster.dead_after, cluster.lease_ttl) == (0.1, 0.5, 2.0)


NODE_ID_CASES = [
    ("[proxy] only", CLUSTER_BASE + URL + '[proxy]\nnode_id = "p9"\n', "p9"),
    ("[cluster] only", CLUSTER_BASE + URL + 'node_id = "c3"\n', "c3"),
    ("both, the same", CLUSTER_BASE + URL + 'node_id = "c3"\n[proxy]\nnode_id = "c3"\n', "c3"),
]


@pytest.mark.parametrize(
    ("text", "node_id"), [case[1:] for case in NODE_ID_CASES], ids=[c[0] for c in NODE_ID_CASES]
)
def test_one_node_id(text: str, node_id: str) -> None:
    config = parse_config(text)
    assert config.cluster is not None
    assert config.node_id == config.cluster.node_id == config.proxy.node_id == node_id


def test_cluster_secret_file(tmp_path: Path) -> None:
    (tmp_path / "cluster.key").write_text(SECRET + "\n")
    text = CLUSTER.replace(f'secret = "{SECRET}"', 'secret_file = "cluster.key"')
    cluster = parse_config(text, base_dir=tmp_path).cluster
    assert cluster is not None
    assert (cluster.secret, cluster.secret_file) == (SECRET.encode(), tmp_path / "cluster.key")


def test_cluster_secret_file_problems(tmp_path: Path) -> None:
    (tmp_path / "short.key").write_text("short\n")
    (tmp_path / "binary.key").write_bytes(b"\xff" * 40)
    for name, message in [
        ("short.key", "too short: at least 32 characters (got 5)"),
        ("binary.key", "is not UTF-8 text"),
        ("missing.key", "no such file"),
    ]:
        text = CLUSTER.replace(f'secret = "{SECRET}"', f'secret_file = "{name}"')
        assert_problems(problems_of(text, base_dir=tmp_path), [("cluster.secret_file", message)])


CLUSTER_PROBLEM_CASES = [
    ("no redis", CLUSTER_BASE + 'node_id = "a1"\n', [("cluster.redis", "required")]),
    (
        "redis and sentinels",
        CLUSTER + 'sentinels = ["127.0.0.1:26379"]\nservice = "s"\n',
        [("cluster.sentinels", "not both"), ("cluster.service", "not both")],
    ),
    (
        "sentinels without service",
        CLUSTER_BASE + 'node_id = "a1"\nsentinels = ["127.0.0.1:26379"]\n',
        [("cluster.service", "required with sentinels")],
    ),
    (
        "service without sentinels",
        CLUSTER_BASE + 'node_id = "a1"\nservice = "s"\n',
        [("cluster.sentinels", "required with service")],
    ),
    (
        "no sentinel",
        CLUSTER_BASE + 'node_id = "a1"\nsentinels = []\nservice = "s"\n',
        [("cluster.sentinels", "at least one")],
    ),
    (
        "sentinel without port",
        CLUSTER_BASE + 'node_id = "a1"\nsentinels = ["127.0.0.1"]\nservice = "s"\n',
        [("cluster.sentinels[0]", "missing port")],
    ),
    (
        "bad service name",
        CLUSTER_BASE + 'node_id = "a1"\nsentinels = ["127.0.0.1:1"]\nservice = "a b"\n',
        [("cluster.service", "not a valid Sentinel service name")],
    ),
    (
        "not a redis url",
        CLUSTER_BASE + 'node_id = "a1"\nredis = "http://x"\n',
        [("cluster.redis", "redis://")],
    ),
    (
        "redis url without host",
        CLUSTER_BASE + 'node_id = "a1"\nredis = "redis://"\n',
        [("cluster.redis", "missing host")],
    ),
    (
        "redis url bad port",
        CLUSTER_BASE + 'node_id = "a1"\nredis = "redis://h:x"\n',
        [("cluster.redis", "invalid port")],
    ),
    (
        "redis url bad db",
        CLUSTER_BASE + 'node_id = "a1"\nredis = "redis://h/x"\n',
        [("cluster.redis", "database number")],
    ),
    (
        "no peer",
        MINIMAL + f'[cluster]\nnode_id = "a1"\n{URL}secret = "{SECRET}"\n',
        [("cluster.peer", "required key is missing")],
    ),
    ("peer port 0", CLUSTER.replace("7000", "0"), [("cluster.peer", "port 0")]),
    ("peer without port", CLUSTER.replace(":7000", ""), [("cluster.peer", "missing port")]),
    (
        "peer a DNS name",
        CLUSTER.replace("127.0.0.1:7000", "node1:7000"),
        [("cluster.peer", "DNS name")],
    ),
    (
        "short secret",
        CLUSTER.replace(SECRET, "x" * 31),
        [("cluster.secret", "at least 32 characters (got 31)")],
    ),
    (
        "no secret",
        CLUSTER.replace(f'secret = "{SECRET}"\n', ""),
        [("cluster.secret", "required: secret or secret_file")],
    ),
    (
        "secret and secret_file",
        CLUSTER + 'secret_file = "x"\n',
        [("cluster.secret_file", "not both")],
    ),
    (
        "no node id",
        CLUSTER_BASE + URL,
        [("cluster.node_id", "each node of a cluster needs its own id")],
    ),
    (
        "two different node ids",
        CLUSTER + '[proxy]\nnode_id = "b2"\n',
        [("cluster.node_id", "differs from [proxy] node_id ('b2')")],
    ),
    ("bad node id", CLUSTER.replace('"a1"', '"A_1"'), [("cluster.node_id", "a-z 0-9")]),
    (
        "bad [proxy] node id with a cluster",
        CLUSTER_BASE + URL + '[proxy]\nnode_id = "A_1"\n',
        [("proxy.node_id", "a-z 0-9")],
    ),
    (
        "bad cluster name",
        CLUSTER + 'name = "a:b"\n',
        [("cluster.name", "not a valid cluster name")],
    ),
    (
        "dead_after not above heartbeat",
        CLUSTER + "heartbeat = 0.5\ndead_after = 0.5\n",
        [("cluster.dead_after", "more than heartbeat (0.5)")],
    ),
    (
        "lease_ttl below dead_after",
        CLUSTER + "lease_ttl = 0.5\n",
        [("cluster.lease_ttl", "at least dead_after (0.7, its default)")],
    ),
    ("heartbeat zero", CLUSTER + "heartbeat = 0\n", [("cluster.heartbeat", "greater than 0")]),
    ("not a table", 'cluster = "yes"\n' + MINIMAL, [("cluster", "expected a table")]),
    (
        "every problem at once",
        MINIMAL + '[cluster]\nredis = "x"\npeer = "1.2.3.4:0"\nsecret = "short"\nheartbeat = -1\n',
        [
            ("cluster.redis", "redis://"),
            ("cluster.peer", "port 0"),
            ("cluster.secret", "too short"),
            ("cluster.heartbeat", "greater than 0"),
            ("cluster.node_id", "needs its own id"),
        ],
    ),
]


@pytest.mark.parametrize(
    ("text", "expected"),
    [case[1:] for case in CLUSTER_PROBLEM_CASES],
    ids=[case[0] for case in CLUSTER_PROBLEM_CASES],
)
def test_cluster_problem(text: str, expected: list[tuple[str, str]]) -> None:
    assert_problems(problems_of(text), expected)


def test_cluster_unknown_key() -> None:
    assert problems_of(CLUSTER + "secrets = 1\n") == [
        ("cluster.secrets", "unknown key: did you mean 'secret'?")
    ]


def test_config_hash_is_the_same_for_the_same_shared_settings() -> None:
    one = parse_config(CLUSTER)
    # another node: its own id, peer, listener, secret spelling, comments and key order
    two = parse_config(
        LISTEN.replace("5060", "5062")
        + "# the same set\n"
        + SET
        + f'[cluster]\npeer = "127.0.0.2:7000"\nsecret = "{"z" * 40}"\n'
        + 'redis = "redis://127.0.0.1:6379/0"\n[proxy]\nnode_id = "b2"\n'
        + '[log]\nlevel = "debug"\n'
    )
    changed = parse_config(CLUSTER + "heartbeat = 0.3\n")
    assert one.config_hash == two.config_hash
    assert one.config_hash != changed.config_hash
    assert re.fullmatch(r"[0-9a-f]{16}", one.config_hash)
    assert config_hash({"sets": [{"name": "a"}]}) == config_hash({"sets": [{"name": "a"}]})
    assert parse_config(MINIMAL).config_hash != one.config_hash
