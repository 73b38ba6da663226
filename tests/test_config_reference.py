"""docs/configuration.md against the config schema: every key documented, nothing more.

The tables and their models are found the way the loader finds them: a config holding every
table (empty) is built while ``Problems`` records which model validates which path. Sub-tables
a model holds as ``dict[str, Any]`` or ``list[dict[str, Any]]`` are added and the build repeated
until nothing new turns up, so a table added to the schema is covered without editing this file.

The page has one ``## [table]`` (or ``## [[array]]``, or ``## Top level``) heading per table,
each followed by a markdown table ``| key | type | default | meaning |``. A key's default cell
says ``required`` for a key without a default; for a key whose default is a plain value (a
string, number or boolean) it holds that value as a TOML literal in its first code span.
"""

from __future__ import annotations

import contextlib
import enum
import re
import tomllib
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from siplb.config.build import build_config
from siplb.config.errors import ConfigError
from siplb.config.problems import Problems
from siplb.config.schema import DocumentModel

PAGE = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
TOP = "Top level"
Found = dict[tuple[str | int, ...], set[type[BaseModel]]]


def _sample(annotation: Any) -> Any:
    """An empty sub-table for a field that holds one (or an array of them), else None."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            sample = _sample(arg)
            if sample is not None:
                return sample
        return None
    if origin is list and args and typing.get_origin(args[0]) is dict:
        return [{}]
    if origin is dict and args and args[1] is Any:
        return {}
    return None


def _build(raw: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Found:
    found: Found = {}
    validate, validate_partial = Problems.validate, Problems.validate_partial

    def recording(original: Any) -> Any:
        def record(self: Problems, model: type[BaseModel], data: Any, loc: Any) -> Any:
            found.setdefault(tuple(loc), set()).add(model)
            return original(self, model, data, loc)

        return record

    with monkeypatch.context() as patch:
        patch.setattr(Problems, "validate", recording(validate))
        patch.setattr(Problems, "validate_partial", recording(validate_partial))
        with contextlib.suppress(ConfigError):
            build_config(raw, source="reference", digest="0", base_dir=None)
    return found


def _key(name: str, field: FieldInfo) -> str:
    return field.alias or name


def discover(monkeypatch: pytest.MonkeyPatch) -> Found:
    """Every table path the loader validates, with the models that validate it."""
    raw: dict[str, Any] = {}
    for name, field in DocumentModel.model_fields.items():
        sample = _sample(field.annotation)
        if sample is not None:
            raw[_key(name, field)] = sample
    for _ in range(10):
        found = _build(raw, monkeypatch)
        grown = False
        for loc, models in found.items():
            node: Any = raw
            for part in loc:
                node = node[part]
            for model in models:
                for name, field in model.model_fields.items():
                    sample = _sample(field.annotation)
                    if sample is not None and _key(name, field) not in node:
                        node[_key(name, field)] = sample
                        grown = True
        if not grown:
            return found
    raise AssertionError("the tables kept growing")


def heading(loc: tuple[str | int, ...]) -> str:
    """``("sets", 0, "destinations", 0)`` -> ``[[sets.destinations]]``."""
    if not loc:
        return TOP
    names = ".".join(str(part) for part in loc if isinstance(part, str))
    return f"[[{names}]]" if isinstance(loc[-1], int) else f"[{names}]"


def schema_keys(monkeypatch: pytest.MonkeyPatch) -> dict[str, dict[str, FieldInfo]]:
    """``{heading: {key: field}}`` for every table, the top level included."""
    found = discover(monkeypatch)
    sections: dict[str, dict[str, FieldInfo]] = {TOP: {}}
    for name, field in DocumentModel.model_fields.items():
        sections[TOP][_key(name, field)] = field
    for loc, models in found.items():
        keys = sections.setdefault(heading(loc), {})
        for model in models:
            for name, field in model.model_fields.items():
                keys[_key(name, field)] = field
    return sections


def sub_tables(sections: dict[str, dict[str, FieldInfo]]) -> set[tuple[str, str]]:
    """(table, key) pairs whose key is a table of its own, documented under its own heading."""
    names = {section.strip("[]") for section in sections if section != TOP}
    pairs = set()
    for section, keys in sections.items():
        prefix = "" if section == TOP else section.strip("[]") + "."
        pairs |= {(section, key) for key in keys if prefix + key in names}
    return pairs


HEADING = re.compile(r"^## +`?(\[\[?[A-Za-z0-9_.]+\]\]?|Top level)`?\s*$")
CELL = re.compile(r"(?<!\\)\|")  # a cell boundary: a pipe not escaped as \|
KEY = re.compile(r"`([^`]+)`")
CODE = re.compile(r"`([^`]+)`")


def documented() -> dict[str, dict[str, str]]:
    """``{heading: {key: default cell}}`` as the page has them."""
    sections: dict[str, dict[str, str]] = {}
    current: str | None = None
    for line in PAGE.read_text().splitlines():
        if line.startswith("## "):
            match = HEADING.match(line)
            current = match.group(1) if match else None
            if current is not None:
                assert current not in sections, f"{current} is documented twice"
                sections[current] = {}
            continue
        cells = [cell.strip() for cell in CELL.split(line.strip())[1:-1]]
        key = KEY.fullmatch(cells[0]) if len(cells) == 4 and line.startswith("|") else None
        if key and current is not None:
            assert key.group(1) not in sections[current], f"{current} {key.group(1)} twice"
            sections[current][key.group(1)] = cells[2]
    return sections


def simple_default(field: FieldInfo) -> tuple[bool, Any]:
    """(True, value) when the schema's default is a plain value a page can state exactly."""
    if field.is_required():
        return False, None
    value = field.get_default(call_default_factory=True)
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, bool | int | float | str):
        return True, value
    return False, None


def _literal(cell: str) -> Iterator[Any]:
    match = CODE.search(cell)
    if match is None:
        return
    try:
        yield tomllib.loads(f"v = {match.group(1)}")["v"]
    except tomllib.TOMLDecodeError:
        return


def _same(value: Any, given: Any) -> bool:
    """Equal, and a boolean only to a boolean (``1 == True`` in Python, not in TOML)."""
    return isinstance(value, bool) == isinstance(given, bool) and value == given


def test_every_table_has_a_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """A top-level table no model validates would escape this check: there must be none."""
    found = discover(monkeypatch)
    tables = {loc[0] for loc in found if loc}
    for name, field in DocumentModel.model_fields.items():
        if _sample(field.annotation) is not None:
            assert _key(name, field) in tables, f"no model found for the table {name}"


def test_every_key_is_documented(monkeypatch: pytest.MonkeyPatch) -> None:
    sections = schema_keys(monkeypatch)
    nested = sub_tables(sections)
    page = documented()
    missing = sorted(
        f"{section} {key}"
        for section, keys in sections.items()
        for key in keys
        if (section, key) not in nested and key not in page.get(section, {})
    )
    assert not missing, f"keys not in {PAGE.name}: {missing}"


def test_every_documented_key_exists(monkeypatch: pytest.MonkeyPatch) -> None:
    sections = schema_keys(monkeypatch)
    extra = sorted(
        f"{section} {key}"
        for section, keys in documented().items()
        for key in keys
        if key not in sections.get(section, {})
    )
    assert not extra, f"keys in {PAGE.name} that the schema does not have: {extra}"


def test_defaults_match(monkeypatch: pytest.MonkeyPatch) -> None:
    sections = schema_keys(monkeypatch)
    wrong = []
    for section, keys in documented().items():
        for key, cell in keys.items():
            field = sections.get(section, {}).get(key)
            if field is None:
                continue
            if field.is_required():
                if "required" not in cell.lower():
                    wrong.append(f"{section} {key}: required, the page says {cell!r}")
                continue
            plain, value = simple_default(field)
            if plain and not any(_same(value, given) for given in _literal(cell)):
                wrong.append(f"{section} {key}: default {value!r}, the page says {cell!r}")
    assert not wrong, "\n".join(wrong)


def test_heading_of_nested_arrays() -> None:
    assert heading(("sets", 0, "destinations", 0)) == "[[sets.destinations]]"
    assert heading(("protection", "rate")) == "[protection.rate]"
    assert heading(()) == TOP
