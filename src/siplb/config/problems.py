"""Collecting problems: pydantic's errors rewritten in the words of a TOML file."""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Sequence
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from .errors import Problem

Loc = tuple[str | int, ...]
M = TypeVar("M", bound=BaseModel)

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")  # TOML bare key
_EXPECTED = {
    "dict_type": "expected a table",
    "list_type": "expected an array",
    "string_type": "expected a string",
    "int_type": "expected an integer",
    "float_type": "expected a number",
    "bool_type": "expected true or false",
    "finite_number": "expected a finite number",
}


def format_path(loc: Loc) -> str:
    """``("sets", 0, "destinations", 1, "uri")`` -> ``sets[0].destinations[1].uri``."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif _BARE_KEY.fullmatch(part):
            path += f".{part}" if path else part
        else:
            path += f"[{json.dumps(part)}]"
    return path


class Problems:
    """The problems found so far, in the order they were found."""

    def __init__(self) -> None:
        self.items: list[Problem] = []

    def add(self, loc: Loc, message: str) -> None:
        self.items.append(Problem(format_path(loc), message))

    def validate(self, model: type[M], data: Any, loc: Loc) -> M | None:
        """``model`` validated from ``data``, or None after recording every problem in it."""
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            self.record(model, loc, exc)
            return None

    def validate_partial(
        self, model: type[M], table: dict[str, Any], loc: Loc
    ) -> tuple[M | None, frozenset[str]]:
        """Like ``validate``, but after recording the problems, validate again without the
        broken keys, so checks across the other keys can still run; returns the model (with
        defaults in place of the broken keys) and the broken keys."""
        try:
            return model.model_validate(table), frozenset()
        except ValidationError as exc:
            self.record(model, loc, exc)
            broken = frozenset(str(error["loc"][0]) for error in exc.errors() if error["loc"])
        rest = {key: value for key, value in table.items() if key not in broken}
        try:
            return model.model_validate(rest), broken
        except ValidationError:
            return None, broken

    def check_order(
        self,
        model: BaseModel,
        broken: frozenset[str],
        loc: Loc,
        low: str,
        high: str,
        *,
        blame: Literal["low", "high"] = "high",
    ) -> None:
        """Check that field ``low`` of ``model`` does not exceed field ``high`` (both valid).

        The problem goes to the key ``blame`` names, unless the file gives only the other one:
        then a default is what conflicts, and the fix is in the key the file sets."""
        if broken & {low, high}:
            return
        low_value, high_value = getattr(model, low), getattr(model, high)
        if low_value <= high_value:
            return
        given = model.model_fields_set
        if given & {low, high} == {low}:
            blame = "low"
        elif given & {low, high} == {high}:
            blame = "high"
        if blame == "high":
            default = "" if low in given else ", its default"
            self.add((*loc, high), f"must be at least {low} ({_number(low_value)}{default})")
        else:
            default = "" if high in given else ", its default"
            self.add((*loc, low), f"must not exceed {high} ({_number(high_value)}{default})")

    def record(self, model: type[BaseModel], loc: Loc, exc: ValidationError) -> None:
        for error in exc.errors():
            self.add(loc + tuple(error["loc"]), describe(model, error))


def describe(model: type[BaseModel], error: ErrorDetails) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown key" + _suggestion(model, error["loc"])
    if kind == "missing":
        return "required key is missing"
    if kind == "value_error":
        return str(error.get("ctx", {}).get("error", error["msg"]))
    message = _EXPECTED.get(kind) or error["msg"].replace("Input should be", "must be")
    return f"{message} (got {shown(error['input'])})"


def shown(value: Any) -> str:
    """A value as the TOML file spells it, or the kind of value it is."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return f"a {type(value).__name__}"  # date, datetime, time


def _number(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _suggestion(model: type[BaseModel], loc: Sequence[str | int]) -> str:
    # Tables are validated one by one, so an unknown key is always a key of ``model`` itself.
    key = loc[-1] if len(loc) == 1 else None
    if not isinstance(key, str):
        return ""
    keys = [field.alias or name for name, field in model.model_fields.items()]
    close = difflib.get_close_matches(key, keys, n=1, cutoff=0.6)
    return f": did you mean {close[0]!r}?" if close else ""
