"""Which link carries a datagram in ``balanced`` mode: smooth weighted round robin (the nginx
algorithm) over the live links, each weighted by its configured weight times its measured
quality, so a link losing packets gets a smaller share before it is declared dead.

Smooth round robin spreads a link's turns evenly (weights 2:1:1 give a b a c, not a a b c): the
datagrams a cut link swallows before it is noticed are spread out, not back to back.
"""

from __future__ import annotations

from collections.abc import Sequence

from .link import Link

MIN_QUALITY = 0.05
LOSS_PENALTY = 2.0  # 10% loss takes a fifth of the weight, 50% all but the floor
RTT_SLACK = 0.05  # a link this much slower than the fastest (and twice as slow) gets half


def quality(link: Link, fastest: float | None, now: float) -> float:
    """A factor in (0, 1]: what the link's loss and RTT make of its weight."""
    factor = max(MIN_QUALITY, 1.0 - LOSS_PENALTY * link.loss(now))
    srtt = link.srtt
    if srtt is not None and fastest is not None and srtt > max(2 * fastest, fastest + RTT_SLACK):
        factor /= 2
    return factor


class Balancer:
    """Smooth weighted round robin; the state is each link's running credit."""

    def __init__(self) -> None:
        self._credit: dict[int, float] = {}

    def pick(self, links: Sequence[Link], now: float) -> Link:
        rtts = [link.srtt for link in links if link.srtt is not None]
        fastest = min(rtts) if rtts else None
        total = 0.0
        best: Link | None = None
        for link in links:
            weight = link.weight * quality(link, fastest, now)
            credit = self._credit.get(link.id, 0.0) + weight
            self._credit[link.id] = credit
            total += weight
            if best is None or credit > self._credit[best.id]:
                best = link
        if best is None:
            raise ValueError("no link to pick from")
        self._credit[best.id] -= total
        return best
