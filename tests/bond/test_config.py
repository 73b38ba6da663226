"""The bond's TOML files (siplb/config/bond.py): the examples parse, and a bad file lists every
problem with its path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from siplb.bond import Mode
from siplb.config import ConfigError
from siplb.config.bond import build_client, build_server, load_client, load_server

EXAMPLES = Path(__file__).parents[2] / "examples" / "bond"
KEY = "00" * 32


def test_the_example_client_parses() -> None:
    config = load_client(EXAMPLES / "client.toml")
    assert [link.name for link in config.links] == ["dsl1", "dsl2", "pppoe", "lte"]
    assert [link.id for link in config.links] == [1, 2, 3, 4]
    assert config.links[2].source is None
    assert config.links[2].interface == "ppp0"
    assert [flow.policy.mode for flow in config.flows] == [Mode.REDUNDANT, Mode.PARITY]
    assert len(config.flows[1].ports) == 200
    assert [flow.policy.reorder for flow in config.flows] == [0.0, 0.0]  # commented out: off


def test_the_example_server_parses_with_the_same_key() -> None:
    server = load_server(EXAMPLES / "server.toml")
    client = load_client(EXAMPLES / "client.toml")
    assert server.keys == {1: client.key}
    assert [flow.ports for flow in server.flows] == [flow.ports for flow in client.flows]


def client_doc(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "client": {"id": 1, "key": KEY, "server": ["192.0.2.1"]},
        "links": [{"source": "192.0.2.10"}],
        "flows": [{"id": 1, "ports": 5060}],
    }
    doc.update(changes)
    return doc


def test_a_minimal_client_gets_the_defaults() -> None:
    config = build_client(client_doc())
    assert config.links[0].server == ("192.0.2.1", 4600)
    assert config.flows[0].host == "127.0.0.1"
    assert config.flows[0].policy.mode is Mode.BALANCED
    assert config.status == ("127.0.0.1", 4601)


PORTS = [(5060, (5060,)), ([5060, 5062], (5060, 5062)), ("10000-10003", tuple(range(10000, 10004)))]


@pytest.mark.parametrize(("given", "ports"), PORTS)
def test_ports(given: Any, ports: tuple[int, ...]) -> None:
    assert build_client(client_doc(flows=[{"id": 1, "ports": given}])).flows[0].ports == ports


# (a change to the minimal client, the problems expected: path -> start of the message)
CASES = [
    ({"client": {"id": 1, "server": ["192.0.2.1"]}}, {"client": "give exactly one of key"}),
    (
        {"client": {"id": 1, "key": "abc", "server": ["192.0.2.1"]}},
        {"client.key": "a key is 32 bytes"},
    ),
    ({"client": {"id": 0, "key": KEY, "server": []}}, {"client.id": "", "client.server": ""}),
    ({"links": [{"weight": 2}]}, {"links[0]": "a link needs a source address"}),
    ({"links": [{"source": "eth0"}]}, {"links[0].source": "'eth0' is not an IP address"}),
    (
        {"links": [{"source": "192.0.2.1", "id": 2}, {"source": "192.0.2.2", "id": 2}]},
        {"links": "id 2 is used 2 times"},
    ),
    ({"flows": [{"id": 1, "ports": "9-1"}]}, {"flows[0].ports": "empty range"}),
    ({"flows": [{"id": 1, "ports": 5060, "mode": "fast"}]}, {"flows[0].mode": ""}),
    ({"flows": [{"id": 1, "ports": 5060, "colour": 1}]}, {"flows[0].colour": "unknown key"}),
    ({"flows": [{"id": 1, "ports": 5060, "reorder": -0.01}]}, {"flows[0].reorder": ""}),
    ({"flows": [{"id": 1, "ports": 5060, "reorder": "30ms"}]}, {"flows[0].reorder": ""}),
    ({"health": {"missed_beats": 0}}, {"health.missed_beats": ""}),
    ({"links": []}, {"links": ""}),
]


@pytest.mark.parametrize(("changes", "expected"), CASES)
def test_every_problem_is_listed_with_its_path(
    changes: dict[str, Any], expected: dict[str, str]
) -> None:
    with pytest.raises(ConfigError) as caught:
        build_client(client_doc(**changes))
    found = {problem.path: problem.message for problem in caught.value.problems}
    assert found.keys() == expected.keys()
    for path, start in expected.items():
        assert found[path].startswith(start)


def test_a_server_lists_every_problem() -> None:
    doc = {
        "server": {"listen": ["203.0.113.1"]},
        "clients": [{"id": 1, "key": KEY}, {"id": 1, "key_file": "missing.key"}],
        "flows": [{"id": 1, "ports": 5060}],
    }
    with pytest.raises(ConfigError) as caught:
        build_server(doc, base_dir=Path("/nonexistent"))
    assert [problem.path for problem in caught.value.problems] == [
        "server.listen[0]",
        "clients[1].key_file",
        "flows[0].target",
    ]


def test_a_flow_may_have_a_reorder_window() -> None:
    config = build_client(client_doc(flows=[{"id": 1, "ports": 5060, "reorder": 0.03}]))
    assert config.flows[0].policy.reorder == 0.03


def test_a_key_file_is_read_relative_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "site.key").write_text(KEY + "\n")
    doc = client_doc(client={"id": 1, "key_file": "site.key", "server": ["192.0.2.1:4700"]})
    assert build_client(doc, base_dir=tmp_path).key == bytes(32)
