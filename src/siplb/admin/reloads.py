"""What a reload changes, and what it tells the operator (plain data).

A reload (SIGHUP or ``POST /api/reload``) installs a new file's destination sets and route rules
atomically; the outcome lists the destinations added, removed and re-weighted, and warns about
sections that only a restart applies. A refused reload lists every problem of the new file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from siplb.dispatch import SetSpec
from siplb.settings import Config

# Sections a running balancer keeps until it is restarted.
RESTART_SECTIONS = (
    ("listeners", "[[listen]]"),
    ("health", "[health]"),
    ("proxy", "[proxy]"),
    ("tcp", "[tcp]"),
    ("limits", "[limits]"),
    ("registrar", "[registrar]"),
    ("tls", "[tls]"),
    ("dns", "[dns]"),
)


@dataclass(frozen=True, slots=True)
class ReloadOutcome:
    ok: bool
    source: str
    digest: str = ""
    problems: tuple[tuple[str, str], ...] = ()  # (path, message) of a refused file
    added: tuple[str, ...] = ()  # "set uri"
    removed: tuple[str, ...] = ()
    reweighted: tuple[str, ...] = ()  # "set uri old->new"
    warnings: tuple[str, ...] = ()

    def summary(self) -> str:
        if not self.ok:
            return f"reload of {self.source} refused: {len(self.problems)} problem(s)"
        parts = [
            f"{label} {', '.join(items)}"
            for label, items in (
                ("added", self.added),
                ("removed", self.removed),
                ("re-weighted", self.reweighted),
            )
            if items
        ]
        changes = "; ".join(parts) if parts else "no destination changes"
        return f"reloaded {self.source} (sha256 {self.digest[:12]}): {changes}"

    def listed(self, most: int = 5) -> str:
        """A refused file's first ``most`` problems on one line (the journal's event)."""
        shown = [f"{path}: {message}" if path else message for path, message in self.problems]
        more = len(shown) - most
        return "; ".join(shown[:most]) + (f"; and {more} more" if more > 0 else "")

    def to_json(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "source": self.source,
            "sha256": self.digest,
            "problems": [{"path": path, "message": message} for path, message in self.problems],
            "added": list(self.added),
            "removed": list(self.removed),
            "reweighted": list(self.reweighted),
            "warnings": list(self.warnings),
            "summary": self.summary(),
        }


def diff_sets(
    old: Sequence[SetSpec], new: Sequence[SetSpec]
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """Destinations (as "set uri") added, removed and re-weighted from ``old`` to ``new``."""
    before = {(s.name, d.uri): d.weight for s in old for d in s.destinations}
    after = {(s.name, d.uri): d.weight for s in new for d in s.destinations}
    added = tuple(f"{name} {uri}" for name, uri in after if (name, uri) not in before)
    removed = tuple(f"{name} {uri}" for name, uri in before if (name, uri) not in after)
    reweighted = tuple(
        f"{name} {uri} {before[(name, uri)]}->{weight}"
        for (name, uri), weight in after.items()
        if (name, uri) in before and before[(name, uri)] != weight
    )
    return added, removed, reweighted


def restart_warnings(old: Config, new: Config) -> tuple[str, ...]:
    """Sections whose changes wait for a restart."""
    warnings = [
        f"{title} changed: it takes effect when siplb restarts"
        for attribute, title in RESTART_SECTIONS
        if getattr(old, attribute) != getattr(new, attribute)
    ]
    if old.admin.address != new.admin.address:
        warnings.append("[admin] listen changed: it takes effect when siplb restarts")
    return tuple(warnings)
