"""Config for destinations by DNS name: host names in destination URIs, ``[[sets]] srv``, and
the ``[dns]`` section, with every problem reported at its path."""

from __future__ import annotations

import pytest

from siplb.admin.reloads import restart_warnings
from siplb.config import ConfigError, parse_config
from siplb.dispatch.spec import Algorithm, Query
from siplb.settings import DnsSettings

LISTEN = '[[listen]]\naddress = "127.0.0.1:5060"\n'


def one_set(body: str, extra: str = "") -> str:
    return LISTEN + f'[[sets]]\nname = "pbx"\n{body}\n{extra}'


NAME_CASES = [
    ("sip:pbx.example.com", Query("pbx.example.com")),
    ("sip:PBX1.Internal:5070", Query("pbx1.internal", port=5070)),
    ("sip:pbx.example.com.", Query("pbx.example.com")),
    ("sip:pbx.example.com;transport=tcp", Query("pbx.example.com", transport="tcp")),
    ("sips:pbx.example.com", Query("pbx.example.com", secure=True)),
    ("sips:pbx.example.com:5071", Query("pbx.example.com", port=5071, secure=True)),
    ("sip:localhost", Query("localhost")),
]


@pytest.mark.parametrize(("uri", "query"), NAME_CASES)
def test_a_destination_uri_may_name_a_host(uri: str, query: Query) -> None:
    config = parse_config(one_set(f'destinations = [{{ uri = "{uri}" }}]'))
    (spec,) = config.sets
    assert spec.destinations == ()
    (name,) = spec.names
    assert (name.text, name.query) == (uri, query)


def test_a_named_destination_keeps_its_weight_priority_cap_and_attrs() -> None:
    config = parse_config(
        one_set(
            'algorithm = "priority"\ndestinations = [\n'
            '  { uri = "sip:127.0.0.1:5070" },\n'
            '  { uri = "sip:pbx.example.com", weight = 3, priority = 2, max_calls = 40, '
            'attrs = { site = "b" } },\n]'
        )
    )
    (spec,) = config.sets
    assert [d.uri for d in spec.destinations] == ["sip:127.0.0.1:5070"]
    (name,) = spec.names
    assert (name.weight, name.priority, name.max_calls, dict(name.attrs)) == (
        3,
        2,
        40,
        {"site": "b"},
    )


SRV_CASES = [
    ("_sip._udp.pbx.example.com", "udp"),
    ("_SIP._TCP.pbx.example.com.", "tcp"),
    ("_sips._tcp.pbx.example.com", "tls"),
]


@pytest.mark.parametrize(("srv", "transport"), SRV_CASES)
def test_a_set_filled_from_srv_defaults_to_priority(srv: str, transport: str) -> None:
    config = parse_config(one_set(f'srv = "{srv}"'))
    (spec,) = config.sets
    assert spec.algorithm is Algorithm.PRIORITY
    (name,) = spec.names
    lower = srv.lower().removesuffix(".")
    assert name.query == Query(lower, srv=True, transport=transport)


def test_a_srv_set_keeps_an_algorithm_it_names_and_its_destinations() -> None:
    config = parse_config(
        one_set(
            'algorithm = "weighted"\nsrv = "_sip._udp.pbx.example.com"\n'
            'destinations = [{ uri = "sip:127.0.0.1:5070" }]'
        )
    )
    (spec,) = config.sets
    assert spec.algorithm is Algorithm.WEIGHTED
    assert [d.uri for d in spec.destinations] == ["sip:127.0.0.1:5070"]
    assert len(spec.names) == 1


def test_dns_defaults_and_servers_with_ports() -> None:
    assert parse_config(one_set('srv = "_sip._udp.x.example"')).dns == DnsSettings()
    config = parse_config(
        one_set(
            'srv = "_sip._udp.x.example"',
            '[dns]\nservers = ["127.0.0.1:5353", "10.0.0.53", "[::1]:53", "127.0.0.1:5353"]\n'
            "timeout = 1\nttl_floor = 1.5\nttl_ceiling = 60\n",
        )
    )
    assert config.dns == DnsSettings(
        (("127.0.0.1", 5353), ("10.0.0.53", 53), ("::1", 53)), 1.0, 1.5, 60.0
    )


PROBLEM_CASES = [
    ('srv = "pbx.example.com"', "", "sets[0].srv", "not a SIP SRV name"),
    ('srv = "_sip._sctp.pbx.example.com"', "", "sets[0].srv", "not a SIP SRV name"),
    ('srv = "_sip._udp."', "", "sets[0].srv", "not a SIP SRV name"),
    ('algorithm = "priority"', "", "sets[0].destinations", "at least one destination (or srv)"),
    (
        'destinations = [{ uri = "sip:pbx.example.com" }, { uri = "sip:PBX.example.com" }]',
        "",
        "sets[0].destinations[1].uri",
        "same destination as destinations[0]",
    ),
    (
        'srv = "_sip._udp.x.example"',
        '[dns]\nservers = ["dns.example.com"]\n',
        "dns.servers[0]",
        "DNS names",
    ),
    (
        'srv = "_sip._udp.x.example"',
        '[dns]\nservers = ["127.0.0.1:0"]\n',
        "dns.servers[0]",
        "port 0",
    ),
    ('srv = "_sip._udp.x.example"', "[dns]\nservers = []\n", "dns.servers", "resolv.conf"),
    ('srv = "_sip._udp.x.example"', "[dns]\nttl_floor = 600\n", "dns.ttl_floor", "ttl_ceiling"),
    ('srv = "_sip._udp.x.example"', "[dns]\ntimeout = 0\n", "dns.timeout", "greater than 0"),
    ('srv = "_sip._udp.x.example"', "[dns]\nport = 53\n", "dns.port", "unknown key"),
]


@pytest.mark.parametrize(("body", "extra", "path", "text"), PROBLEM_CASES)
def test_problems_have_their_path(body: str, extra: str, path: str, text: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(one_set(body, extra))
    found = [(p.path, p.message) for p in info.value.problems]
    assert [p for p, _ in found] == [path], found
    assert text in found[0][1], found


def test_a_changed_dns_section_waits_for_a_restart() -> None:
    body = 'srv = "_sip._udp.x.example"'
    old = parse_config(one_set(body, '[dns]\nservers = ["127.0.0.1:5353"]\n'))
    new = parse_config(one_set(body, '[dns]\nservers = ["127.0.0.1:5354"]\n'))
    assert restart_warnings(old, new) == ("[dns] changed: it takes effect when siplb restarts",)
    assert restart_warnings(old, old) == ()
