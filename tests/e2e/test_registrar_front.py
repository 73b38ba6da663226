"""The registrar front end with real peers on loopback: a SIPp phone registers through siplb to
Kamailio's registrar (``use_path``, ``path_mode``, ``path_use_received``); a SIPp caller calls it
through Kamailio; the INVITE reaches the phone through siplb at its registered address (for TCP
over the phone's own connection). Bad REGISTERs get 400 and disturb nothing."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .balancer import SiplbProcess, start_siplb
from .conftest import SippLauncher
from .harness import LOOPBACK, send_udp
from .kamailio import KamailioProcess

pytestmark = pytest.mark.e2e

REGISTRAR_CFG = Path(__file__).resolve().parent / "kamailio" / "registrar.cfg"
CALL_ID = "phone-%u@siplb-e2e"  # the phone's REGISTER and the call share it (see phone.xml)
REGISTERED = re.compile(r"REGISTER sip:alice@example\.com from \S+ path \[([^\]]*)\]")


@pytest.fixture
def balancers() -> Iterator[list[SiplbProcess]]:
    started: list[SiplbProcess] = []
    yield started
    for proc in started:
        code = proc.stop()
        assert code == 0, f"siplb exited with {code} on SIGTERM\n{proc.log_tail()}"


def wait_registered(kam: KamailioProcess, *, timeout: float = 10.0) -> str:
    """The Path Kamailio received with alice's REGISTER (its log line), once it is there."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = REGISTERED.search(kam.log())
        if found:
            time.sleep(0.3)  # the 200 on its way back to the phone
            return found.group(1)
        time.sleep(0.05)
    raise AssertionError(f"no REGISTER reached Kamailio in {timeout} s\n{kam.log()[-3000:]}")


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_a_call_reaches_a_phone_registered_through_siplb(
    transport: str,
    sipp: SippLauncher,
    kamailio: Callable[..., KamailioProcess],
    e2e_workdir: Path,
    balancers: list[SiplbProcess],
) -> None:
    kam = kamailio([], config=REGISTRAR_CFG)
    lb = start_siplb(
        e2e_workdir,
        [f"sip:{LOOPBACK}:{kam.port}"],
        transport=transport,
        extra="[registrar]\nkeepalive_interval = 60\n",
    )
    balancers.append(lb)
    phone = sipp.uac(
        lb.address,
        "phone.xml",
        calls=1,
        rate=1,
        transport=transport,
        timeout_s=40,
        extra_args=["-s", "alice", "-cid_str", CALL_ID],
        trace_msg=True,
    )
    path = wait_registered(kam)
    assert f"<sip:{LOOPBACK}:{lb.address[1]};lr;path" in path, path
    if transport == "tcp":  # the phone's connection is its only way back: its flow is in Path
        assert f"received=sip:{LOOPBACK}:" in path, path
        assert "%3Btransport%3Dtcp" in path, path
    else:  # same address as its Via: no NAT, no received
        assert "received" not in path, path
    caller = sipp.run_uac(
        kam.address, calls=1, rate=1, timeout_s=30, extra_args=["-s", "alice", "-cid_str", CALL_ID]
    )
    assert caller.stats.successful_calls == 1, caller.describe() + kam.log()[-3000:]
    result = phone.wait()
    assert result.stats.successful_calls == 1, result.describe()
    # the INVITE came from siplb (its Via on top), on the phone's registered address
    log = result.message_log()
    invite = log[log.index("INVITE sip:alice@") :]
    assert (
        f"Via: SIP/2.0/{transport.upper()} {LOOPBACK}:{lb.address[1]};branch=z9hG4bK-n1"
        in (invite[:2000])
    )


def test_malformed_register_gets_400_and_a_good_one_still_registers(
    sipp: SippLauncher,
    kamailio: Callable[..., KamailioProcess],
    e2e_workdir: Path,
    balancers: list[SiplbProcess],
) -> None:
    kam = kamailio([], config=REGISTRAR_CFG)
    lb = start_siplb(e2e_workdir, [f"sip:{LOOPBACK}:{kam.port}"])
    balancers.append(lb)
    bad_contact = _register(b"<sip:alice@127.0.0.1:5999", b"1")
    bad_path = _register(b"<sip:alice@127.0.0.1:5999>", b"2", b"Path: <sip:p.example.com;lr\r\n")
    for data in (bad_contact, bad_path):
        [reply] = send_udp(data, lb.address, wait=1.0)
        assert reply.startswith(b"SIP/2.0 400 "), reply
    assert "REGISTER sip:alice" not in kam.log()  # nothing reached the registrar
    phone = sipp.uac(
        lb.address,
        "phone.xml",
        calls=1,
        rate=1,
        timeout_s=30,
        extra_args=["-s", "alice", "-cid_str", CALL_ID],
    )
    wait_registered(kam)
    caller = sipp.run_uac(
        kam.address, calls=1, rate=1, timeout_s=30, extra_args=["-s", "alice", "-cid_str", CALL_ID]
    )
    assert caller.stats.successful_calls == 1, caller.describe()
    assert phone.wait().stats.successful_calls == 1


def _register(contact: bytes, n: bytes, extra: bytes = b"") -> bytes:
    return (
        b"REGISTER sip:example.com SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKbad" + n + b"\r\n"
        b"From: <sip:alice@example.com>;tag=bad" + n + b"\r\n"
        b"To: <sip:alice@example.com>\r\n"
        b"Call-ID: bad-" + n + b"@e2e\r\n"
        b"CSeq: 1 REGISTER\r\n"
        b"Contact: " + contact + b"\r\n" + extra + b"Max-Forwards: 70\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
