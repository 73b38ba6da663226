"""``siplb --help`` and every command's help: each command and option says what it is for, a
group's list shows each command's summary whole, and counts printed read "1 listener", not
"1 listeners"."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from siplb.cli import main
from siplb.cli_help import summary
from siplb.words import plural


def _commands(
    group: click.Group, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    """Every command under ``group`` (groups too) with the words that call it."""
    for name, command in sorted(group.commands.items()):
        yield (*path, name), command
        if isinstance(command, click.Group):
            yield from _commands(command, (*path, name))


COMMANDS = dict(_commands(main))
GROUPS = {(): main} | {path: c for path, c in COMMANDS.items() if isinstance(c, click.Group)}


def _help(*args: str) -> str:
    result = CliRunner().invoke(main, [*args, "--help"], prog_name="siplb", terminal_width=80)
    assert result.exit_code == 0, result.output
    return result.output


def _squeezed(text: str) -> str:
    """Text without any whitespace: wrapping (also at hyphens) changes nothing."""
    return "".join(text.split())


def _name(path: tuple[str, ...]) -> str:
    return " ".join(path)


def test_the_walk_finds_the_commands() -> None:
    names = {_name(path) for path in COMMANDS}
    assert {"run", "check", "demo", "status", "dest drain", "bond client", "node drain"} <= names


@pytest.mark.parametrize("path", list(COMMANDS), ids=_name)
def test_every_command_and_option_has_help(path: tuple[str, ...]) -> None:
    command = COMMANDS[path]
    assert summary(command), f"siplb {_name(path)} has no help"
    silent = [
        param.opts[-1]
        for param in command.params
        if isinstance(param, click.Option) and not (param.help or "").strip()
    ]
    assert not silent, f"siplb {_name(path)}: options without help: {silent}"


@pytest.mark.parametrize("path", list(GROUPS), ids=lambda path: _name(path) or "siplb")
def test_a_group_lists_each_command_with_its_whole_summary(path: tuple[str, ...]) -> None:
    page = _squeezed(_help(*path).partition("Commands:")[2])
    group = GROUPS[path]
    for name, command in group.commands.items():
        assert _squeezed(f"{name} {summary(command)}") in page, f"{name}: {summary(command)}"
    assert "..." not in page


@pytest.mark.parametrize("path", list(COMMANDS), ids=_name)
def test_a_command_page_has_its_whole_help_and_every_option_help(path: tuple[str, ...]) -> None:
    page = _squeezed(_help(*path))
    command = COMMANDS[path]
    assert _squeezed(command.help or "") in page
    for param in command.params:
        if isinstance(param, click.Option) and param.help:
            assert _squeezed(param.help) in page, param.opts


PLURALS = [
    (0, "listener", None, "0 listeners"),
    (1, "listener", None, "1 listener"),
    (2, "listener", None, "2 listeners"),
    (1, "DNS name", None, "1 DNS name"),
    (3, "entry", "entries", "3 entries"),
    (1, "entry", "entries", "1 entry"),
]


@pytest.mark.parametrize(("count", "noun", "many", "expected"), PLURALS)
def test_plural(count: int, noun: str, many: str | None, expected: str) -> None:
    assert plural(count, noun, many) == expected


ONE_OF_EACH = """\
[[listen]]
transport = "udp"
address = "127.0.0.1:5060"

[[sets]]
name = "pbx"
destinations = [{ uri = "sip:127.0.0.1:5070" }]
"""

TWO_OF_EACH = """\
[[listen]]
transport = "udp"
address = "127.0.0.1:5060"

[[listen]]
transport = "tcp"
address = "127.0.0.1:5060"

[[sets]]
name = "pbx"
destinations = [{ uri = "sip:127.0.0.1:5070" }, { uri = "sip:127.0.0.1:5071" }]

[[sets]]
name = "voicemail"
destinations = [{ uri = "sip:127.0.0.1:5080" }]

[[routes]]
set = "voicemail"
ruri_user = "^\\\\*98"

[[routes]]
set = "pbx"
"""

CHECKS = {
    "one of each": (ONE_OF_EACH, "ok (1 listener, 1 set, 1 destination, 0 routes)"),
    "two of each": (TWO_OF_EACH, "ok (2 listeners, 2 sets, 3 destinations, 2 routes)"),
    "one problem": (ONE_OF_EACH.partition("[[sets]]")[0], "1 problem\n"),
}


@pytest.mark.parametrize("name", list(CHECKS))
def test_check_counts_in_words(tmp_path: Path, name: str) -> None:
    text, expected = CHECKS[name]
    path = tmp_path / "siplb.toml"
    path.write_text(text)
    result = CliRunner().invoke(main, ["check", "-c", str(path)])
    assert expected in result.output, result.output
