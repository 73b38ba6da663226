"""What a bad config raises: one ``ConfigError`` that lists every problem with its path."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from siplb.settings import Config


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a config.

    ``path`` names the offending key the way a reader finds it in the file
    (``sets[0].destinations[1].uri``); it is empty for a problem with the whole document
    (unreadable file, TOML syntax error).
    """

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(Exception):
    """A config that cannot be used; ``str()`` gives one problem per line."""

    def __init__(
        self, problems: Iterable[Problem], source: str = "<string>", partial: Config | None = None
    ) -> None:
        self.problems: list[Problem] = list(problems)
        self.source = source
        # what could be built despite the problems (None: not even that), for a caller that
        # needs only a section no problem is about (``siplb reload``: the admin address)
        self.partial = partial
        super().__init__("\n".join(str(problem) for problem in self.problems))

    def __str__(self) -> str:
        return "\n".join(str(problem) for problem in self.problems)
