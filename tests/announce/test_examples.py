"""The anycast examples are what their programs accept: ``siplb check`` the node's config,
``exabgp --test`` its ExaBGP config (the ``run`` line pointed at this ``siplb``), ``bird -p``
the router's BIRD config."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from siplb.cli import main
from siplb.config import load_config

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "anycast"


def test_node_config_is_accepted() -> None:
    path = EXAMPLES / "node1.toml"
    result = CliRunner().invoke(main, ["check", "-c", str(path)])
    assert result.exit_code == 0, result.output
    config = load_config(path)
    assert config.announce is not None
    assert config.announce.prefixes == ("10.99.0.1/32",)
    assert any(listener.anycast for listener in config.listeners)
    # the anycast address is announced, and served by an anycast listener
    assert {f"{s.host}/32" for s in config.listeners if s.anycast} == set(config.announce.prefixes)


def test_exabgp_config_is_accepted(tmp_path: Path) -> None:
    text = (EXAMPLES / "exabgp.conf").read_text()
    assert "run /usr/local/bin/siplb announce --config /etc/siplb/node1.toml;" in text
    siplb = Path(sys.executable).with_name("siplb")
    conf = tmp_path / "exabgp.conf"
    conf.write_text(text.replace("/usr/local/bin/siplb", str(siplb)))
    env = {
        **os.environ,
        "exabgp_daemon_user": "root",
        "exabgp_daemon_drop": "false",
        "exabgp_api_cli": "false",
    }
    done = subprocess.run(
        ["/usr/sbin/exabgp", "--test", str(conf)],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


@pytest.mark.parametrize("broken", ["bogus 1;", "hold-time 1;"])
def test_exabgp_test_rejects_a_broken_config(tmp_path: Path, broken: str) -> None:
    """``exabgp --test`` does fail on a bad file (so the test above can fail too)."""
    siplb = Path(sys.executable).with_name("siplb")
    text = (EXAMPLES / "exabgp.conf").read_text().replace("/usr/local/bin/siplb", str(siplb))
    conf = tmp_path / "exabgp.conf"
    conf.write_text(text.replace("hold-time 3;", broken))
    env = {**os.environ, "exabgp_daemon_user": "root", "exabgp_api_cli": "false"}
    done = subprocess.run(
        ["/usr/sbin/exabgp", "--test", str(conf)],
        capture_output=True,
        timeout=30,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode != 0


def test_bird_config_is_accepted() -> None:
    done = subprocess.run(
        ["/usr/sbin/bird", "-p", "-c", str(EXAMPLES / "bird.conf")],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    text = (EXAMPLES / "bird.conf").read_text()
    assert "merge paths on" in text  # ECMP over the nodes
    assert "hold time 3;" in text
