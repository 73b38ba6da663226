"""Reading a config: file or text -> TOML -> ``Config``, or one ``ConfigError``."""

from __future__ import annotations

import hashlib
import re
import tomllib
from pathlib import Path

from siplb.settings import Config

from .build import build_config
from .errors import ConfigError, Problem

_TOML_WHERE = re.compile(
    r"(?P<reason>.*) \((?P<where>at line \d+, column \d+|at end of document)\)"
)


def load_config(path: str | Path) -> Config:
    """Read and validate the config file at ``path``.

    Relative file paths in it (TLS files, the admin token file) are taken from the file's
    folder. ``Config.digest`` is the sha256 of the file's bytes.
    """
    path = Path(path)
    source = str(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError([Problem("", f"cannot read {source}: {exc.strerror}")], source) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        message = f"not UTF-8 text (bad byte at offset {exc.start}); TOML files are UTF-8"
        raise ConfigError([Problem("", message)], source) from None
    return _parse(text, source, hashlib.sha256(data).hexdigest(), path.parent)


def parse_config(text: str, source: str = "<string>", *, base_dir: Path | None = None) -> Config:
    """Validate config ``text``; ``source`` names it in ``Config.source`` and in errors.

    Relative file paths in it are taken from ``base_dir``, or from the working directory.
    """
    return _parse(text, source, hashlib.sha256(text.encode()).hexdigest(), base_dir)


def _parse(text: str, source: str, digest: str, base_dir: Path | None) -> Config:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([Problem("", _syntax_message(str(exc)))], source) from None
    return build_config(raw, source=source, digest=digest, base_dir=base_dir)


def _syntax_message(error: str) -> str:
    match = _TOML_WHERE.fullmatch(error)
    if match is None:
        return f"TOML syntax error: {error}"
    return f"TOML syntax error {match['where']}: {match['reason']}"
