"""Whether this node should receive new traffic: the answer behind ``GET /api/health``,
``siplb health`` (keepalived's ``vrrp_script``) and ``siplb announce`` (ExaBGP's routes).

Rules, in one place. The node is healthy when all of these hold:

- it is **serving**: its event loop answers (an answer at all says so: a hung or dead process
  gives none, and the checkers treat silence as unhealthy), it has listeners open, and it is
  not stopping (``CoreView.accepting``);
- it is **not drained** (``BalancerView.draining``: an operator's ``siplb node drain``, or
  SIGTERM, which withdraws the route before the calls drain);
- it is **not joining** a cluster (``BalancerView.joining``): a node that has not yet heard
  the others through Redis, or the calls in setup they own, takes no traffic yet;
- its **destinations** satisfy ``[health] sets``: ``"any"`` (the default) wants a destination
  up in at least one set, ``"every"`` one up in every set, a list of names one up in each named
  set. "Up" is what takes new calls (``dispatch.health.SELECTABLE``: up or suspect), as this
  node sees it, which in a cluster includes what the other nodes report.

Each rule that fails adds one reason, in the order above, written for the operator.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from siplb.dispatch.health import SELECTABLE
from siplb.settings import SetsPolicy

if TYPE_CHECKING:
    from siplb.admin.view import BalancerView


@dataclass(frozen=True, slots=True)
class NodeFacts:
    """What the rules read of a running node."""

    accepting: bool  # not stopping
    listeners: int  # listeners open
    draining: bool
    up: Mapping[str, int]  # set name -> destinations up in it, in the sets' order
    joining: bool = False  # a cluster node not yet in step with the others


@dataclass(frozen=True, slots=True)
class Readiness:
    healthy: bool
    reasons: tuple[str, ...]  # empty when healthy


def assess(policy: SetsPolicy, facts: NodeFacts) -> Readiness:
    """The rules above, applied to ``facts``."""
    reasons: list[str] = []
    if not facts.accepting:
        reasons.append("stopping: no new calls")
    if facts.listeners == 0:
        reasons.append("no listener open")
    if facts.draining:
        reasons.append("the node is drained")
    if facts.joining:
        reasons.append("joining the cluster")
    reasons += _destinations(policy, facts.up)
    return Readiness(not reasons, tuple(reasons))


def _destinations(policy: SetsPolicy, up: Mapping[str, int]) -> list[str]:
    if policy == "any":
        if any(up.values()):
            return []
        return ["no destination up in any set"]
    names = tuple(up) if policy == "every" else policy
    return [_set_down(name, up) for name in names if not up.get(name)]


def _set_down(name: str, up: Mapping[str, int]) -> str:
    if name not in up:
        return f"set {name!r} is not configured"
    return f"set {name!r} has no destination up"


def facts_of(balancer: BalancerView) -> NodeFacts:
    """A running node's facts, read through the admin side's view."""
    core = balancer.core
    up: dict[str, int] = {}
    for spec in core.sets():
        count = 0
        for dest in spec.destinations:
            reading = core.destination(dest.uri)
            if reading is not None and reading.snapshot.state in SELECTABLE:
                count += 1
        up[spec.name] = count
    return NodeFacts(
        accepting=core.accepting,
        listeners=len(balancer.listeners),
        draining=balancer.draining,
        up=up,
        joining=balancer.joining,
    )


def readiness(balancer: BalancerView) -> Readiness:
    """The node's readiness now, under the policy of its current config."""
    return assess(balancer.config.readiness.sets, facts_of(balancer))
