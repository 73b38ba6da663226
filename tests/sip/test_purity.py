"""``siplb.sip`` is pure (docs/design.md section 2): no I/O, clock, logging or global randomness."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import siplb.sip

PACKAGE = Path(siplb.sip.__file__).parent
FILES = sorted(PACKAGE.glob("*.py"))
FORBIDDEN = {
    "asyncio",
    "datetime",
    "logging",
    "os",
    "random",
    "selectors",
    "socket",
    "ssl",
    "threading",
    "time",
}


def top_level_imports(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_there_are_files_to_check() -> None:
    assert len(FILES) >= 10


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_no_forbidden_imports(path: Path) -> None:
    imported = top_level_imports(ast.parse(path.read_text()))
    assert not imported & FORBIDDEN


def test_public_api() -> None:
    """The names other packages build on stay exported."""
    expected = {
        "CSeq",
        "DEFAULT_LIMITS",
        "FramingError",
        "KEEPALIVE",
        "KeepAlive",
        "Limits",
        "LocalProtocolError",
        "MAGIC_COOKIE",
        "Malformed",
        "Message",
        "MessageTooLarge",
        "NameAddr",
        "OpaqueUri",
        "ParseError",
        "Request",
        "Response",
        "SipUri",
        "StreamFramer",
        "Uri",
        "Via",
        "canonical",
        "parse",
        "parse_cseq",
        "parse_framed",
        "parse_name_addr",
        "parse_sip_uri",
        "parse_uri",
        "parse_via",
        "parse_vias",
        "split_list",
        "tag_of",
        "validate_request",
    }
    assert expected <= set(siplb.sip.__all__)
    for name in siplb.sip.__all__:
        assert hasattr(siplb.sip, name)
