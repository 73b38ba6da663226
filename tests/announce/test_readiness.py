"""siplb.readiness: when the node is healthy, and the reasons when it is not."""

from __future__ import annotations

import pytest

from siplb.readiness import NodeFacts, Readiness, assess
from siplb.settings import SetsPolicy

UP = {"pbx": 2, "reg": 1}
PBX_DOWN = {"pbx": 0, "reg": 1}
ALL_DOWN = {"pbx": 0, "reg": 0}


def facts(
    up: dict[str, int],
    *,
    accepting: bool = True,
    listeners: int = 1,
    draining: bool = False,
    joining: bool = False,
) -> NodeFacts:
    return NodeFacts(
        accepting=accepting, listeners=listeners, draining=draining, up=up, joining=joining
    )


CASES: list[tuple[SetsPolicy, NodeFacts, tuple[str, ...]]] = [
    ("any", facts(UP), ()),
    ("any", facts(PBX_DOWN), ()),
    ("any", facts(ALL_DOWN), ("no destination up in any set",)),
    ("any", facts({}), ("no destination up in any set",)),
    ("every", facts(UP), ()),
    ("every", facts(PBX_DOWN), ("set 'pbx' has no destination up",)),
    (
        "every",
        facts(ALL_DOWN),
        ("set 'pbx' has no destination up", "set 'reg' has no destination up"),
    ),
    (("reg",), facts(PBX_DOWN), ()),
    (("pbx",), facts(PBX_DOWN), ("set 'pbx' has no destination up",)),
    (("gone",), facts(UP), ("set 'gone' is not configured",)),
    ("any", facts(UP, draining=True), ("the node is drained",)),
    ("any", facts(UP, joining=True), ("joining the cluster",)),
    ("any", facts(UP, accepting=False), ("stopping: no new calls",)),
    ("any", facts(UP, listeners=0), ("no listener open",)),
    (
        "every",
        facts(PBX_DOWN, accepting=False, draining=True),
        ("stopping: no new calls", "the node is drained", "set 'pbx' has no destination up"),
    ),
]


@pytest.mark.parametrize(("policy", "node", "reasons"), CASES)
def test_policy(policy: SetsPolicy, node: NodeFacts, reasons: tuple[str, ...]) -> None:
    assert assess(policy, node) == Readiness(not reasons, reasons)
