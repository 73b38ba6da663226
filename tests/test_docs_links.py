"""The README and docs/ hold together: links lead somewhere, every page is reachable, and the
README starts with the two commands DESIGN's contract promises (``make demo``, ``make test``)."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted([ROOT / "README.md", ROOT / "CHANGELOG.md", *DOCS.glob("*.md")])
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def prose(path: Path) -> list[str]:
    """The page's lines outside code fences, inline code removed (no links live there)."""
    lines, fenced = [], False
    for line in path.read_text().splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(re.sub(r"`[^`]*`", "", line))
    return lines


def anchor(title: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation gone, spaces as hyphens."""
    text = re.sub(r"<[^>]+>", "", title).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    fenced = False
    for line in path.read_text().splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        match = HEADING.match(line)
        if match and not fenced:
            base = anchor(match.group(2))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(path: Path) -> list[str]:
    return [target for line in prose(path) for target in LINK.findall(line)]


def relative(target: str) -> bool:
    return not re.match(r"^[a-z][a-z0-9+.-]*:", target) and not target.startswith("//")


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_relative_links_lead_somewhere(page: Path) -> None:
    broken = []
    for target in filter(relative, links(page)):
        file_part, _, fragment = target.partition("#")
        dest = (page.parent / unquote(file_part)).resolve() if file_part else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
            broken.append(f"{target}: no heading with anchor #{fragment}")
    assert not broken, f"{page.relative_to(ROOT)}: {broken}"


def test_every_docs_page_is_linked_from_the_readme_and_the_index() -> None:
    def targets(page: Path) -> set[Path]:
        return {
            (page.parent / unquote(target.partition("#")[0])).resolve()
            for target in filter(relative, links(page))
            if target.partition("#")[0]
        }

    readme, index = targets(ROOT / "README.md"), targets(DOCS / "README.md")
    pages = [page for page in DOCS.glob("*.md") if page.name != "README.md"]
    assert pages, "docs/ has no pages"
    for page in pages:
        assert page.resolve() in readme, f"README.md does not link docs/{page.name}"
        assert page.resolve() in index, f"docs/README.md does not link {page.name}"
    assert (DOCS / "README.md").resolve() in readme, "README.md does not link docs/README.md"


def test_readme_starts_with_make_demo_and_make_test() -> None:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"^```[a-z]*\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
    assert block is not None, "the README has no code block"
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines()]
    assert [command for command in commands if command][:2] == ["make demo", "make test"]
    assert "demo:" in (ROOT / "Makefile").read_text()
    assert "test:" in (ROOT / "Makefile").read_text()


def test_anchor_follows_github() -> None:
    assert anchor("Listening on every address (`0.0.0.0`, `[::]`)") == (
        "listening-on-every-address-0000-"
    )
    assert anchor("Route announcements: health, `siplb announce`, ExaBGP and BIRD") == (
        "route-announcements-health-siplb-announce-exabgp-and-bird"
    )
    assert anchor("[[sets.destinations]]") == "setsdestinations"
