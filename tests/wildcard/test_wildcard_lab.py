"""One wildcard listener on a host with four addresses on one interface, in network namespaces
the test creates (and removes in ``finally``):

    peer 10.77.0.100, fd77::100 --- lb: 10.77.0.1-4, fd77::1-4 [siplb: 0.0.0.0:5060, [::]:5060]

The peer (caller and callee, real SIPp) sends to each of the four addresses: OPTIONS to siplb
are answered from the address they were sent to; a call through each address reaches the
callee with siplb's Via and Record-Route naming that address, never the wildcard, and its ACK
and BYE come back through it. A fifth address, added while siplb runs, is served from its first
datagram on. IPv6: OPTIONS to each of the four IPv6 addresses. Root needed (namespaces): the
test fails without it, never skips.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import pytest

from e2e import sipp as sp
from e2e.netns import NetLab, require_root

pytestmark = pytest.mark.e2e

V4 = [f"10.77.0.{n}" for n in (1, 2, 3, 4)]
V6 = [f"fd77::{n}" for n in (1, 2, 3, 4)]
PEER, PEER6 = "10.77.0.100", "fd77::100"
LATE = "10.77.0.5"  # added after siplb started
CALLEE_PORT = 5070

_REQUEST = """
import json, socket, sys
data, host, port = bytes.fromhex(sys.argv[1]), sys.argv[2], int(sys.argv[3])
family = socket.AF_INET6 if ":" in host else socket.AF_INET
with socket.socket(family, socket.SOCK_DGRAM) as sock:
    sock.settimeout(0.3)
    sock.sendto(data, (host, port))
    try:
        reply, source = sock.recvfrom(65535)
    except (TimeoutError, ConnectionRefusedError):
        print("null")
    else:
        print(json.dumps([reply.decode("latin-1"), source[0]]))
"""


def options(host: str, branch: str) -> bytes:
    uri = f"[{host}]" if ":" in host else host
    me = f"[{PEER6}]" if ":" in host else PEER
    return (
        f"OPTIONS sip:{uri}:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {me}:9;branch=z9hG4bK{branch};rport\r\n"
        f"From: <sip:t@{me}>;tag={branch}\r\nTo: <sip:{uri}>\r\nCall-ID: {branch}\r\n"
        "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def ask(lab: NetLab, host: str, attempts: int = 30) -> tuple[str, str]:
    """OPTIONS from the peer to siplb at ``host``: (the reply, the address it came from)."""
    for attempt in range(attempts):  # bounded: about 10 s
        out = lab.run("peer", sys.executable, "-c", _REQUEST, options(host, f"w{attempt}").hex(),
                      host, "5060")  # fmt: skip
        found = json.loads(out)
        if found is not None:
            return found[0], found[1]
    raise AssertionError(f"siplb at {host} never answered")


def build(lab: NetLab, workdir: Path) -> str:
    """The namespaces and addresses; the name of siplb's interface."""
    lab.namespace("lb")
    lab.namespace("peer")
    lb_end, _ = lab.link(("lb", f"{V4[0]}/24"), ("peer", f"{PEER}/24"))
    for address in V4[1:]:
        lab.run("lb", "ip", "addr", "add", f"{address}/24", "dev", lb_end)
    peer_end = lab.run("peer", "ip", "-o", "addr", "show", "to", PEER).split()[1]
    lab.run("peer", "ip", "addr", "add", f"{PEER6}/64", "dev", peer_end, "nodad")
    for address in V6:
        lab.run("lb", "ip", "addr", "add", f"{address}/64", "dev", lb_end, "nodad")
    return lb_end


def start_siplb(lab: NetLab, workdir: Path, *, callee: str = PEER) -> None:
    config = workdir / "siplb.toml"
    config.write_text(
        '[[listen]]\ntransport = "udp"\naddress = "0.0.0.0:5060"\n'
        '[[listen]]\ntransport = "udp"\naddress = "[::]:5060"\n'
        f'[[sets]]\nname = "pbx"\ndestinations = [{{ uri = "sip:{callee}:{CALLEE_PORT}" }}]\n'
        '[log]\nformat = "json"\n[admin]\nlisten = "127.0.0.1:0"\n'
    )
    lab.spawn("lb", "siplb", [sys.executable, "-m", "siplb", "run", "-c", str(config)],
              cwd=workdir)  # fmt: skip


def invites(messages: str) -> list[str]:
    """The INVITEs a SIPp callee received (its ``-trace_msg`` log)."""
    return [block for block in re.split(r"\n-{10,}[^\n]*\n", messages) if "INVITE sip:" in block]


def test_a_wildcard_listener_answers_and_routes_from_each_address(e2e_workdir: Path) -> None:
    require_root()
    sp.sipp_binary()
    with NetLab("wild") as lab:
        lb_end = build(lab, e2e_workdir)
        callee = sp.start_uas(e2e_workdir, "uas.xml", host=PEER, port=CALLEE_PORT,
                              netns=lab.ns("peer"), trace_msg=True, timeout_s=60)  # fmt: skip
        try:
            start_siplb(lab, e2e_workdir)
            for host in V4 + V6:  # OPTIONS to siplb itself: answered from where they were sent
                reply, source = ask(lab, host)
                assert reply.startswith("SIP/2.0 200 "), reply
                assert source == host, (host, source)
            # an address added while siplb runs: served from its first datagram on
            lab.run("lb", "ip", "addr", "add", f"{LATE}/24", "dev", lb_end)
            reply, source = ask(lab, LATE)
            assert reply.startswith("SIP/2.0 200 "), reply
            assert source == LATE, source
            for n, host in enumerate([*V4, LATE]):  # a call through each address, in turn
                caller = sp.start_uac((host, 5060), e2e_workdir, calls=1, rate=1, host=PEER,
                                      port=5080 + 10 * n, netns=lab.ns("peer"), timeout_s=20,
                                      trace_msg=True)  # fmt: skip
                result = caller.wait()
                assert result.stats.successful_calls == 1, result.describe()
                # the caller's dialog went through this address: its 200 carries our entry
                assert f"Record-Route: <sip:{host}:5060;lr>" in result.message_log(), host
            time.sleep(0.2)
        finally:
            messages = callee.stop().message_log()
        received = invites(messages)
        assert len(received) == len(V4) + 1, messages[-3000:]
        for host, invite in zip([*V4, LATE], received, strict=True):
            vias = [v.strip() for v in re.findall(r"^Via: (.*)$", invite, re.MULTILINE)]
            routes = [r.strip() for r in re.findall(r"^Record-Route: (.*)$", invite, re.MULTILINE)]
            assert vias[0].startswith(f"SIP/2.0/UDP {host}:5060;branch="), invite
            assert routes == [f"<sip:{host}:5060;lr>"], invite
        assert "0.0.0.0" not in messages, messages[-3000:]
        print(f"\nwildcard: {len(V4) + 1} IPv4 (one added while running) and {len(V6)} IPv6 "
              "addresses answered from themselves; a call through each IPv4 address, recorded "
              "and routed through the address it used")  # fmt: skip


BACKEND_LB, BACKEND = "10.78.0.1", "10.78.0.10"


def test_with_two_interfaces_a_request_leaves_from_the_routed_side(e2e_workdir: Path) -> None:
    """siplb with a second interface towards a private backend network: a call arriving on one
    of the four public addresses leaves towards the callee from the private address (the route
    decides, as with one listener per address) and records both sides (RFC 3261 16.6 step 4)."""
    require_root()
    sp.sipp_binary()
    with NetLab("wild2") as lab:
        build(lab, e2e_workdir)
        lab.namespace("backend")
        lab.link(("lb", f"{BACKEND_LB}/24"), ("backend", f"{BACKEND}/24"))
        callee = sp.start_uas(e2e_workdir, "uas.xml", host=BACKEND, port=CALLEE_PORT,
                              netns=lab.ns("backend"), trace_msg=True, timeout_s=60)  # fmt: skip
        try:
            start_siplb(lab, e2e_workdir, callee=BACKEND)
            ask(lab, V4[2])
            caller = sp.start_uac((V4[2], 5060), e2e_workdir, calls=1, rate=1, host=PEER,
                                  port=5080, netns=lab.ns("peer"), timeout_s=20)  # fmt: skip
            result = caller.wait()
            assert result.stats.successful_calls == 1, result.describe()
        finally:
            messages = callee.stop().message_log()
        [invite] = invites(messages)
        vias = [v.strip() for v in re.findall(r"^Via: (.*)$", invite, re.MULTILINE)]
        routes = [r.strip() for r in re.findall(r"^Record-Route: (.*)$", invite, re.MULTILINE)]
        assert vias[0].startswith(f"SIP/2.0/UDP {BACKEND_LB}:5060;branch="), invite
        assert routes == [f"<sip:{BACKEND_LB}:5060;lr>", f"<sip:{V4[2]}:5060;lr>"], invite
