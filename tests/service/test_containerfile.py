"""The ``Containerfile``, read statically (building it needs a container registry for its base
image, which the test machines cannot reach): every ``COPY`` source exists in the repository,
the ``HEALTHCHECK`` and the command are real ``siplb`` commands with real options, the image
runs as a user that is not root, the ports are exposed, and the config it ships is valid."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from siplb.cli import main
from siplb.config import load_config

ROOT = Path(__file__).resolve().parents[2]
CONTAINERFILE = ROOT / "Containerfile"


@dataclass(frozen=True)
class Instruction:
    stage: int  # which FROM it follows (0 is the first)
    name: str  # upper case
    args: str


def parse(text: str) -> list[Instruction]:
    """Instructions in order; continuation lines joined, comments dropped (the Dockerfile
    reference: a line ending in a backslash continues, a line starting with # is a comment)."""
    found: list[Instruction] = []
    stage = -1
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not pending):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        name, _, args = line.partition(" ")
        if name.upper() == "FROM":
            stage += 1
        found.append(Instruction(stage, name.upper(), args.strip()))
    return found


INSTRUCTIONS = parse(CONTAINERFILE.read_text())
FINAL = max(i.stage for i in INSTRUCTIONS)


def final(name: str) -> list[Instruction]:
    return [i for i in INSTRUCTIONS if i.name == name and i.stage == FINAL]


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list), args
    return [str(v) for v in value]


def test_base_images() -> None:
    bases = [i.args.split()[0] for i in INSTRUCTIONS if i.name == "FROM"]
    assert bases
    for base in bases:
        assert re.fullmatch(
            r"docker\.io/library/(python:3\.1[1-9]-slim|debian:bookworm-slim)", base
        )


def _copies() -> list[tuple[Instruction, list[str]]]:
    out = []
    for instruction in INSTRUCTIONS:
        if instruction.name not in ("COPY", "ADD"):
            continue
        words = shlex.split(instruction.args)
        if any(w.startswith("--from=") for w in words):
            continue  # from another stage, not the build context
        paths = [w for w in words if not w.startswith("--")]
        out.append((instruction, paths[:-1]))
    return out


@pytest.mark.parametrize(
    "source", [s for _, sources in _copies() for s in sources], ids=lambda s: str(s)
)
def test_copy_sources_exist(source: str) -> None:
    assert (ROOT / source).exists(), f"COPY {source}: not in the repository"


def test_copies_found() -> None:
    assert _copies(), "no COPY read: the parser lost them"


def test_runs_as_a_user_that_is_not_root() -> None:
    users = final("USER")
    assert users, "no USER: the image would run as root"
    user = users[-1].args.split(":")[0]
    assert user not in ("root", "0")
    created = " ".join(i.args for i in final("RUN"))
    assert re.search(rf"useradd\b.*\b{re.escape(user)}\b", created), "USER is never created"
    index = INSTRUCTIONS.index(users[-1])
    assert all(i.name != "USER" for i in INSTRUCTIONS[index + 1 :])


def test_exposed_ports() -> None:
    ports = {p for i in final("EXPOSE") for p in i.args.split()}
    assert {"5060/udp", "5060/tcp", "8080"} <= ports


def _siplb_help(argv: list[str]) -> str:
    words = [a for a in argv if not a.startswith("-") and not a.startswith("/")]
    result = CliRunner().invoke(main, [*_subcommand(words), "--help"])
    assert result.exit_code == 0, result.output
    return result.output


def _subcommand(words: list[str]) -> list[str]:
    """The leading words that name a command (``health``; ``bond client``), not values."""
    group: object = main
    path: list[str] = []
    for word in words:
        commands = getattr(group, "commands", {})
        if word not in commands:
            break
        group = commands[word]
        path.append(word)
    return path


def _assert_options(argv: list[str]) -> None:
    help_text = _siplb_help(argv)
    for option in (a for a in argv if a.startswith("-")):
        assert re.search(rf"(^|[\s,]){re.escape(option)}[\s,]", help_text), option


def test_healthcheck_is_siplb_health() -> None:
    checks = final("HEALTHCHECK")
    assert len(checks) == 1
    _, _, command = checks[0].args.partition("CMD ")
    shell = exec_form(command)
    assert shell[:2] == ["/bin/sh", "-c"]
    line, _, fallback = shell[2].partition(" || ")
    assert fallback == "exit 1"  # 2 (no answer) is reserved in a HEALTHCHECK: report 1
    argv = shlex.split(line)
    assert argv[:2] == ["siplb", "health"]
    assert _subcommand(argv[1:]) == ["health"]
    _assert_options(argv[1:])
    assert argv[argv.index("-c") + 1] == "/etc/siplb/siplb.toml"


def test_entrypoint_runs_the_config() -> None:
    entry = exec_form(final("ENTRYPOINT")[-1].args)
    command = exec_form(final("CMD")[-1].args)
    argv = entry + command
    assert argv == ["siplb", "run", "-c", "/etc/siplb/siplb.toml"]
    _assert_options(argv[1:])


def test_shipped_config_is_valid(tmp_path: Path) -> None:
    """The file copied to /etc/siplb/siplb.toml passes ``siplb check`` (its token file
    replaced by one here, as a mount would bring it)."""
    sources = [
        (i, s) for i, srcs in _copies() for s in srcs if i.args.endswith("/etc/siplb/siplb.toml")
    ]
    assert len(sources) == 1
    text = (ROOT / sources[0][1]).read_text()
    token = tmp_path / "admin.token"
    token.write_text("a-container-admin-token\n")
    config = tmp_path / "siplb.toml"
    config.write_text(text.replace("/etc/siplb/admin.token", str(token)))
    loaded = load_config(config)
    assert loaded.admin.address == ("0.0.0.0", 8080)  # EXPOSE 8080 reaches it
    assert {(lst.transport, lst.port) for lst in loaded.listeners} == {("udp", 5060)}
