"""``siplb bond check`` and ``siplb bond status`` (siplb/cli_bond.py)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from siplb.cli import main
from siplb.io.bond import serve_status

EXAMPLES = Path(__file__).parents[2] / "examples" / "bond"


def test_check_accepts_the_examples() -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["bond", "check", "-c", str(EXAMPLES / "client.toml")])
    assert result.exit_code == 0, result.output
    assert "4 links, 2 flows" in result.output
    result = runner.invoke(main, ["bond", "check", "--server", "-c", str(EXAMPLES / "server.toml")])
    assert result.exit_code == 0, result.output


def test_check_lists_every_problem_and_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[client]\nid = 1\nserver = []\n[[links]]\nweight = 0\n[[flows]]\nid = 1\n")
    result = CliRunner().invoke(main, ["bond", "check", "-c", str(path)])
    assert result.exit_code == 2
    for where in ("client:", "client.server:", "links[0].weight:", "flows[0].ports:"):
        assert where in result.output


def test_key_prints_64_hex_digits() -> None:
    result = CliRunner().invoke(main, ["bond", "key"])
    assert len(bytes.fromhex(result.output.strip())) == 32


STATUS = {
    "role": "server",
    "clients": [
        {
            "client": 1,
            "name": "site1",
            "links": [
                {
                    "name": "1",
                    "state": "up",
                    "rtt_ms": 21.0,
                    "loss": 0.05,
                    "bytes_sent": 1000,
                    "bytes_received": 2000,
                    "packets_sent": 5,
                    "packets_received": 10,
                    "remote": "192.0.2.1:40000 via 203.0.113.10",
                },
                {
                    "name": "2",
                    "state": "down",
                    "rtt_ms": None,
                    "loss": 0.0,
                    "bytes_sent": 0,
                    "bytes_received": 0,
                    "packets_sent": 0,
                    "packets_received": 0,
                    "remote": None,
                },
            ],
            "delivered": 7,
            "duplicates": 1,
            "recovered": 2,
            "dropped": 0,
        }
    ],
    "unknown": 0,
    "send_errors": 0,
}


@pytest.fixture
def status_port() -> Iterator[int]:
    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(serve_status("127.0.0.1", 0, lambda: STATUS))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield server.sockets[0].getsockname()[1]
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    server.close()
    loop.close()


def test_status_prints_a_table(status_port: int) -> None:
    result = CliRunner().invoke(main, ["bond", "status", "--address", f"127.0.0.1:{status_port}"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "client 1: delivered 7, recovered 2, duplicates 1, dropped 0"
    assert lines[2].split() == ["1", "up", "21.0", "5.0%", "1000", "2000"]
    assert lines[3].split() == ["2", "down", "-", "0.0%", "0", "0"]


def test_status_of_nothing_fails_cleanly() -> None:
    result = CliRunner().invoke(main, ["bond", "status", "--address", "127.0.0.1:1"])
    assert result.exit_code == 1
    assert "127.0.0.1:1" in result.output
