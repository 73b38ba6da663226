"""What a request costs the proxy core when it is forwarded, and when it is refused (plain script).

The admission stage runs before any transaction, so that a flood costs less than the calls it
imitates. Each figure is the proxy core's ``receive`` for one datagram, from bytes to the
actions it leaves for the shell, in microseconds of this process's CPU time (the minimum over
many short repeats of ``timeit``, the least disturbed run):

- forwarded: a new INVITE from a caller, dispatched to a destination (server and client
  transaction made, 100 Trying and the forwarded INVITE built);
- banned: a datagram from a banned source (one lookup, not even parsed): a source past its
  rate budget is banned by the request that went over it, so this is a flood's cost;
- scanner: an INVITE with a scanner's User-Agent from a source not yet banned (parsed, matched,
  dropped, the source banned);
- acl: an INVITE refused by an [[acl]] rule (parsed, one stateless 403);
- malformed: an INVITE with a broken CSeq (parsed, one stateless 400).

Run it as ``PYTHONPATH=src python bench/admission.py [--quick]``.
"""

from __future__ import annotations

import itertools
import random
import sys
import time
import timeit
from collections.abc import Callable
from ipaddress import ip_network

from siplb.dispatch import Algorithm, DestinationSpec, HashKey, HealthSettings, SetSpec
from siplb.proxy.actions import Target
from siplb.proxy.core import Proxy
from siplb.proxy.listeners import Listener
from siplb.settings import (
    AclRule,
    LimitsSettings,
    ProtectionSettings,
    ProxySettings,
    RateSettings,
)

INVITE = (
    b"INVITE sip:bob@127.0.0.1:5060 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP %(host)s:5000;branch=z9hG4bK-%(n)d;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b"To: Bob <sip:bob@example.com>\r\n"
    b'From: "Alice" <sip:alice@example.com>;tag=%(n)d\r\n'
    b"Call-ID: bench-%(n)d@example.com\r\n"
    b"CSeq: %(cseq)s\r\n"
    b"Contact: <sip:alice@%(host)s:5000>\r\n"
    b"User-Agent: %(agent)s\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)

CALLER = "127.0.0.2"
BANNED = "127.0.0.3"
SCANNER = "127.0.0.4"
DENIED = "127.0.0.6"
MALFORMED = "127.0.0.7"


def make_proxy() -> Proxy:
    dests = tuple(
        DestinationSpec(f"sip:127.0.0.1:{port}", "127.0.0.1", port) for port in (5070, 5071)
    )
    protection = ProtectionSettings(
        acl=(AclRule("deny", (ip_network(f"{DENIED}/32"),)),),
        rate=RateSettings(window=1.0, invite=10**9, ban_time=3600.0),
    )
    return Proxy(
        listeners=[Listener(0, "udp", "127.0.0.1", 5060)],
        sets=[SetSpec("pbx", dests, Algorithm.ROUND_ROBIN, HashKey.CALL_ID)],
        default_set="pbx",
        settings=ProxySettings(),
        health=HealthSettings(),
        now=0.0,
        rng=random.Random(1),
        probing=False,
        protection=protection,
        caps=LimitsSettings(max_transactions=10**9, max_transactions_per_source=10**9),
    )


def sender(
    proxy: Proxy, host: str, agent: bytes, cseq: bytes = b"1 INVITE", *, rotate: bool = False
) -> Callable[[], None]:
    """One INVITE a call from ``host`` (``rotate``: each from a new host of 127.4.0.0/16)."""
    counter = itertools.count()
    source = Target("udp", host, 5000)

    def send() -> None:
        n = next(counter)
        if rotate:
            nonlocal source
            source = Target("udp", f"127.4.{n // 250 % 250}.{n % 250 + 1}", 5000)
        data = INVITE % {b"host": source.host.encode(), b"n": n, b"cseq": cseq, b"agent": agent}
        proxy.receive(data, source, 0, 1.0)
        proxy.out.clear()
        proxy.events.clear()

    return send


def best(stmt: Callable[[], object], number: int, repeat: int) -> float:
    times = timeit.repeat(stmt, number=number, repeat=repeat, timer=time.process_time)
    return min(times) / number * 1e6


def main() -> None:
    quick = "--quick" in sys.argv
    n, r = (300, 5) if quick else (1_000, 20)
    proxy = make_proxy()
    admission = proxy.admission
    assert admission is not None
    admission.ban(BANNED, 3600.0, "bench", 0.0)
    cases = {
        "forwarded": sender(proxy, CALLER, b"softphone/1.0"),
        "banned": sender(proxy, BANNED, b"softphone/1.0"),
        "scanner": sender(proxy, SCANNER, b"friendly-scanner", rotate=True),
        "acl": sender(proxy, DENIED, b"softphone/1.0"),
        "malformed": sender(proxy, MALFORMED, b"softphone/1.0", b"x INVITE"),
    }
    figures = {name: best(send, n, r) for name, send in cases.items()}
    forwarded = figures["forwarded"]
    print(f"Python {sys.version.split()[0]}; proxy core receive(), min of {r} x {n}")
    for name, us in figures.items():
        print(f"  {name:<12}{us:8.2f} us   {us / forwarded:5.2f} x forwarded")


if __name__ == "__main__":
    main()
