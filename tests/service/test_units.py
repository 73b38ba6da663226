"""The systemd units in ``packaging/``: read as systemd reads them (sections, repeated keys,
drop-ins), checked for what the balancer relies on, and verified by ``systemd-analyze``
(``verify`` and the offline ``security`` score), which needs no running systemd.

``systemd-analyze verify`` insists that every command exists: the tests verify a copy whose
``/opt/siplb/bin/siplb`` is this environment's ``siplb``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from siplb.cli import main

ROOT = Path(__file__).resolve().parents[2]
PACKAGING = ROOT / "packaging"
UNIT = PACKAGING / "siplb.service"
BOND = PACKAGING / "siplb-bond@.service"
DROP_IN = PACKAGING / "siplb.service.d" / "net-admin.conf"
INSTALLED = "/opt/siplb/bin/siplb"
ANALYZE = shutil.which("systemd-analyze")
SIPLB = Path(sys.executable).with_name("siplb")


def read_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """Sections of a unit file, each key with all its values in order (systemd keeps repeated
    keys: ExecReload= twice runs two commands). Continuation lines end with a backslash."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    pending = ""
    for raw in path.read_text().splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"{path.name}: {line!r} outside any section"
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: {line!r} is not key=value"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def one(section: dict[str, list[str]], key: str) -> str:
    values = section.get(key, [])
    assert len(values) == 1, f"{key}: {values}"
    return values[0]


def test_service_is_notify_with_reload_and_its_own_user() -> None:
    service = read_unit(UNIT)["Service"]
    assert one(service, "Type") == "notify"
    assert one(service, "NotifyAccess") == "main"  # the parent relays its workers
    assert one(service, "User") == "siplb"
    assert "DynamicUser" not in service
    assert one(service, "Restart") == "on-failure"
    assert one(service, "ExecStart") == f"{INSTALLED} run -c /etc/siplb/siplb.toml"
    assert one(service, "ExecStartPre") == f"{INSTALLED} check -c /etc/siplb/siplb.toml"
    assert service["ExecReload"][-1] == "/bin/kill -HUP $MAINPID"
    assert one(service, "KillMode") == "mixed"  # one SIGTERM, to the parent only
    assert one(service, "RestartPreventExitStatus") == "2"  # what `siplb run` exits on bad config


HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX AF_NETLINK",
    "AmbientCapabilities": "CAP_NET_BIND_SERVICE",
    "CapabilityBoundingSet": "CAP_NET_BIND_SERVICE",
    "SystemCallFilter": "@system-service",
}


@pytest.mark.parametrize(("key", "value"), HARDENING.items())
def test_service_hardening(key: str, value: str) -> None:
    assert one(read_unit(UNIT)["Service"], key) == value


def test_service_limits_open_files() -> None:
    assert int(one(read_unit(UNIT)["Service"], "LimitNOFILE")) >= 65536


def test_drop_in_adds_net_admin_only() -> None:
    service = read_unit(DROP_IN)["Service"]
    assert set(service) == {"AmbientCapabilities", "CapabilityBoundingSet"}
    for key in service:
        assert one(service, key).split() == ["CAP_NET_ADMIN", "CAP_NET_RAW"]


def test_bond_template_runs_the_instance() -> None:
    service = read_unit(BOND)["Service"]
    assert one(service, "ExecStart") == f"{INSTALLED} bond %i -c /etc/siplb/bond-%i.toml"
    assert one(service, "User") == "siplb"


def test_sysusers_and_tmpfiles_agree_with_the_unit() -> None:
    users = [line.split() for line in _lines(PACKAGING / "siplb.sysusers.conf")]
    assert [u[:2] for u in users] == [["u", "siplb"]]
    entries = [line.split() for line in _lines(PACKAGING / "siplb.tmpfiles.conf")]
    etc = next(e for e in entries if e[1] == "/etc/siplb")
    assert etc[0] == "d"
    assert etc[3:5] == ["root", "siplb"]  # the service reads, never writes, its config


def _lines(path: Path) -> list[str]:
    return [
        s for s in (line.strip() for line in path.read_text().splitlines()) if s and s[0] != "#"
    ]


# ---- every command the units run is a real siplb command --------------------------------------
def _commands() -> list[list[str]]:
    found = []
    for path in (UNIT, BOND):
        service = read_unit(path)["Service"]
        for key in ("ExecStartPre", "ExecStart", "ExecReload"):
            for value in service.get(key, []):
                argv = value.lstrip("-@:+!").split()
                if argv[0] == INSTALLED:
                    found.append(argv[1:])
    return found


@pytest.mark.parametrize("argv", _commands(), ids=" ".join)
def test_unit_commands_exist(argv: list[str]) -> None:
    args = [a.replace("%i", "client") for a in argv]
    options = [a for a in args if a.startswith("-")]
    words = [a for a in args if not a.startswith("-") and not a.startswith("/")]
    result = CliRunner().invoke(main, [*words, "--help"])
    assert result.exit_code == 0, result.output
    for option in options:
        assert re.search(rf"(^|[\s,]){re.escape(option)}[\s,]", result.output), option


# ---- systemd-analyze ---------------------------------------------------------------------------
def _local_copy(tmp_path: Path, unit: Path) -> Path:
    """The unit (and its drop-ins) with this environment's siplb in place of /opt/siplb."""
    copy = tmp_path / unit.name
    copy.write_text(unit.read_text().replace(INSTALLED, str(SIPLB)))
    drop_ins = unit.with_name(unit.name + ".d")
    if drop_ins.is_dir():
        shutil.copytree(drop_ins, tmp_path / drop_ins.name)
    return copy


def _analyze(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None, "systemd-analyze missing: `make system-deps` installs systemd"
    return subprocess.run(
        [ANALYZE, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize(
    ("unit", "name"), [(UNIT, "siplb.service"), (BOND, "siplb-bond@x.service")]
)
def test_systemd_analyze_verify(tmp_path: Path, unit: Path, name: str) -> None:
    copy = _local_copy(tmp_path, unit)
    if name != copy.name:  # a template is verified as one of its instances
        copy.rename(tmp_path / unit.name)
    result = _analyze("verify", "--man=no", f"./{name}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr  # no ignored key, no unknown value


def test_systemd_analyze_catches_a_mistake(tmp_path: Path) -> None:
    """The check above can fail: a misspelt value in the drop-in is reported."""
    copy = _local_copy(tmp_path, UNIT)
    drop_in = tmp_path / "siplb.service.d" / "net-admin.conf"
    drop_in.write_text(drop_in.read_text() + "Restart=on-failur\n")
    result = _analyze("verify", "--man=no", f"./{copy.name}", cwd=tmp_path)
    assert "on-failur" in result.stderr


def test_systemd_analyze_security_exposure(tmp_path: Path) -> None:
    """systemd's own exposure score, offline: at most 3.0 of 10 ("OK")."""
    copy = _local_copy(tmp_path, UNIT)
    result = _analyze(
        "security", "--offline=true", "--threshold=30", "--no-pager", f"./{copy.name}", cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout[-2000:]
    assert re.search(r"Overall exposure level for siplb\.service: [0-2]\.\d", result.stdout)
