"""``siplb status``, ``siplb dest ...`` and ``siplb reload`` against a running ``siplb run``
(a real process on loopback), and SIGHUP with a bad file."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from click.testing import CliRunner

from e2e.balancer import ADMIN_TOKEN, SiplbProcess, start_siplb, write_config
from e2e.harness import free_port
from siplb.cli import main

pytestmark = pytest.mark.e2e

A, B = "sip:127.0.0.1:9", "sip:127.0.0.1:19"


@pytest.fixture(scope="module")
def lb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SiplbProcess]:
    proc = start_siplb(tmp_path_factory.mktemp("cli"), [A, B])
    yield proc
    assert proc.stop() == 0, proc.log_tail()


def cli(lb: SiplbProcess, *args: str, token: str | None = ADMIN_TOKEN) -> tuple[int, str, str]:
    env = {
        "SIPLB_ADMIN": lb.admin_url or "",
        "SIPLB_ADMIN_TOKEN": token or "",
        "SIPLB_ADMIN_TOKEN_FILE": "",
    }
    result = CliRunner().invoke(main, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


def rewrite(lb: SiplbProcess, destinations: list[str], extra: str = "") -> None:
    assert lb.admin_url is not None
    port = urlsplit(lb.admin_url).port
    write_config(lb.config_path, lb.address[1], destinations, admin_port=port, extra=extra)


def test_status_table(lb: SiplbProcess) -> None:
    code, out, err = cli(lb, "status")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("siplb ")
    assert str(lb.config_path) in lines[0]
    assert f"udp 127.0.0.1:{lb.address[1]}" in lines[1]
    assert "State" in out
    assert "ActiveCalls" in out
    rows = [line.split() for line in lines if line.startswith("  -> sip:")]
    assert [row[1] for row in rows] == [A, B]
    assert "pbx round-robin" in lines


def test_status_json(lb: SiplbProcess) -> None:
    code, out, _ = cli(lb, "status", "--json")
    assert code == 0
    body = json.loads(out)
    assert [d["uri"] for d in body["sets"][0]["destinations"]] == [A, B]
    assert body["status"]["config"]["file"] == str(lb.config_path)


def test_dest_drain_disable_enable_and_weight(lb: SiplbProcess) -> None:
    code, out, err = cli(lb, "dest", "drain", "pbx", A)
    assert code == 0, err
    assert out.startswith(f"{A} in pbx: drained")
    _, table, _ = cli(lb, "status")
    assert [line.split()[2] for line in table.splitlines() if A in line] == ["drained"]
    code, out, _ = cli(lb, "dest", "disable", "pbx", A)
    assert code == 0
    assert out.startswith(f"{A} in pbx: disabled")
    code, out, _ = cli(lb, "dest", "enable", "pbx", A)
    assert code == 0
    assert "drained" not in out
    assert "disabled" not in out
    code, out, _ = cli(lb, "dest", "weight", "pbx", B, "7")
    assert (code, out.strip()) == (0, f"{B} in pbx: weight 7")
    _, view = lb.api("GET", f"/api/sets/pbx/destinations/{B}")
    assert view["weight"] == 7  # type: ignore[index]


REFUSED = [
    (("status",), "wrong", "wrong token"),
    (("status",), None, "missing token"),
    (("dest", "drain", "pbx", A), "wrong", "wrong token"),
    (("dest", "drain", "nope", A), ADMIN_TOKEN, "no set 'nope'"),
    (("dest", "drain", "pbx", "sip:127.0.0.1:1"), ADMIN_TOKEN, "no destination"),
    (("dest", "weight", "pbx", A, "1000001"), ADMIN_TOKEN, "1000001 is not in the range"),
]


@pytest.mark.parametrize(("args", "token", "message"), REFUSED)
def test_refusals_exit_non_zero_with_the_reason(
    lb: SiplbProcess, args: tuple[str, ...], token: str | None, message: str
) -> None:
    code, _, err = cli(lb, *args, token=token)
    assert code != 0
    assert message in err


def test_unreachable_admin(tmp_path: Path) -> None:
    env = {"SIPLB_ADMIN": f"http://127.0.0.1:{free_port()}", "SIPLB_ADMIN_TOKEN": "x"}
    result = CliRunner().invoke(main, ["status"], env=env)
    assert result.exit_code == 1
    assert "cannot reach the admin API" in result.stderr


def test_config_option_gives_address_and_token(lb: SiplbProcess) -> None:
    result = CliRunner().invoke(
        main,
        ["status", "-c", str(lb.config_path)],
        env={"SIPLB_ADMIN": "", "SIPLB_ADMIN_TOKEN": "", "SIPLB_ADMIN_TOKEN_FILE": ""},
    )
    assert result.exit_code == 0, result.stderr
    assert A in result.stdout


def test_reload_good_then_bad_then_sighup_bad(lb: SiplbProcess) -> None:
    new = "sip:127.0.0.1:29"
    rewrite(lb, [A, B, new])
    code, out, err = cli(lb, "reload")
    assert code == 0, err
    assert f"added pbx {new}" in out
    assert "re-weighted pbx sip:127.0.0.1:19 7->1" in out  # the file's weight is back

    rewrite(lb, [A, "sip:bad uri"], extra="[surprise]\nkey = 1\n")
    code, out, err = cli(lb, "reload")
    assert code == 2
    assert "the running config stays" in err
    problem_lines = [line for line in err.splitlines() if line.startswith("  ")]
    assert len(problem_lines) >= 2, err
    assert any("surprise" in line for line in problem_lines), err

    lb.signal(signal.SIGHUP)  # the same refusal by signal: logged, nothing changes
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        if any("reload refused (SIGHUP)" in e.get("msg", "") for e in lb.log_lines()):
            break
        time.sleep(0.05)
    else:
        pytest.fail("SIGHUP with a bad file was not logged as refused\n" + lb.log_tail())
    _, body = lb.api("GET", "/api/sets")
    assert [d["uri"] for d in body["sets"][0]["destinations"]] == [A, B, new]  # type: ignore[index]
    _, status = lb.api("GET", "/api/status")
    assert status["config"]["reloads"] == {"ok": 1, "refused": 2}  # type: ignore[index]
