"""Files a config names (TLS files, the admin token, the blocklist): where they are, and whether
they exist when the config is loaded."""

from __future__ import annotations

from pathlib import Path

from .problems import Loc, Problems


def find_file(
    text: str | None,
    loc: Loc,
    problems: Problems,
    base_dir: Path | None,
    *,
    directory_ok: bool = False,
) -> Path | None:
    """The path ``text`` names, relative ones taken from ``base_dir``; a problem at ``loc`` when
    there is no such file (or folder, with ``directory_ok``). None when ``text`` is None."""
    if text is None:
        return None
    path = Path(text).expanduser()
    if base_dir is not None and not path.is_absolute():
        path = base_dir / path
    if not (path.is_file() or (directory_ok and path.is_dir())):
        problems.add(loc, f"no such file: {str(path)!r}")
    return path
