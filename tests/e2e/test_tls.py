"""TLS listeners and destinations with certificates the test makes (``certs.py``).

Debian's SIPp 3.6.1 is built without TLS (its ``-t`` knows no ``l1``), so TLS is proven with:
- SIPp caller -> siplb A (UDP) -> ``sips:`` destination -> siplb B (TLS listener that requires a
  client certificate) -> SIPp callee: A verifies B's certificate against the test CA and shows
  its own; every call goes through the TLS hop;
- a phone speaking TLS (Python's ``ssl`` over a real socket, with siplb's own stream framer)
  registers through siplb to Kamailio's registrar; a SIPp caller calls it through Kamailio and
  the INVITE arrives over the phone's TLS connection (RFC 5626 flow reuse).
"""

from __future__ import annotations

import socket
import ssl
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from siplb.sip import Request, Response, StreamFramer

from .balancer import STOP, SiplbProcess
from .certs import Leaf, make_ca, make_leaf
from .conftest import SippLauncher
from .harness import LOOPBACK, ManagedProcess, free_port, wait_sip_ready
from .kamailio import KamailioProcess
from .test_registrar_front import REGISTRAR_CFG, wait_registered

pytestmark = pytest.mark.e2e


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Leaf]:
    folder = tmp_path / "pki"
    ca = make_ca(folder)
    return {
        "ca": ca,
        "server": make_leaf(folder, ca, "server", ip=LOOPBACK),
        "client": make_leaf(folder, ca, "client"),
    }


@pytest.fixture
def processes() -> Iterator[list[ManagedProcess]]:
    started: list[ManagedProcess] = []
    yield started
    for proc in started:
        proc.stop(STOP)


def run_siplb(
    workdir: Path, name: str, text: str, udp_port: int, started: list[ManagedProcess]
) -> SiplbProcess:
    config = workdir / f"{name}.toml"
    config.write_text(text + '\n[log]\nformat = "json"\n[admin]\nlisten = "127.0.0.1:0"\n')
    process = ManagedProcess(
        name, [sys.executable, "-m", "siplb", "run", "-c", str(config)], cwd=workdir
    )
    started.append(process)
    wait_sip_ready((LOOPBACK, udp_port), timeout=10.0, process=process)
    return SiplbProcess(process, (LOOPBACK, udp_port), config)


def tls_listener(port: int, pki: dict[str, Leaf], *, verify_client: bool) -> str:
    return (
        f'[[listen]]\ntransport = "tls"\naddress = "{LOOPBACK}:{port}"\n'
        f'cert = "{pki["server"].cert}"\nkey = "{pki["server"].key}"\n'
        f'ca = "{pki["ca"].cert}"\nverify_client = {str(verify_client).lower()}\n'
    )


def test_calls_cross_a_tls_hop_between_two_balancers(
    sipp: SippLauncher, e2e_workdir: Path, pki: dict[str, Leaf], processes: list[ManagedProcess]
) -> None:
    uas = sipp.uas()
    port_a, port_b = free_port(), free_port()
    b = run_siplb(
        e2e_workdir,
        "siplb-b",
        tls_listener(port_b, pki, verify_client=True)
        + f'[[listen]]\ntransport = "udp"\naddress = "{LOOPBACK}:{port_b}"\n'
        + f'[[sets]]\nname = "pbx"\ndestinations = [{{ uri = "{uas.sip_uri}" }}]\n',
        port_b,
        processes,
    )
    a = run_siplb(
        e2e_workdir,
        "siplb-a",
        f'[[listen]]\ntransport = "udp"\naddress = "{LOOPBACK}:{port_a}"\n'
        f'[[sets]]\nname = "pbx"\ndestinations = [{{ uri = "sips:{LOOPBACK}:{port_b}" }}]\n'
        f'[tls]\nca = "{pki["ca"].cert}"\n'
        f'cert = "{pki["client"].cert}"\nkey = "{pki["client"].key}"\n',
        port_a,
        processes,
    )
    result = sipp.run_uac(a.address, calls=20, rate=20, timeout_s=30)
    assert result.stats.successful_calls == 20, result.describe() + a.log_tail() + b.log_tail()
    assert uas.stop().stats.calls_received == 20


def test_a_client_without_certificate_is_refused_when_verification_is_on(
    e2e_workdir: Path, pki: dict[str, Leaf], processes: list[ManagedProcess]
) -> None:
    port = free_port()
    run_siplb(
        e2e_workdir,
        "siplb",
        tls_listener(port, pki, verify_client=True)
        + f'[[listen]]\ntransport = "udp"\naddress = "{LOOPBACK}:{port}"\n'
        + '[[sets]]\nname = "pbx"\ndestinations = [{ uri = "sip:127.0.0.1:9" }]\n',
        port,
        processes,
    )
    context = ssl.create_default_context(cafile=str(pki["ca"].cert))
    with (
        socket.create_connection((LOOPBACK, port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=LOOPBACK) as tls,
    ):
        try:  # TLS 1.3: the refusal arrives with the first read, as an alert or a close
            tls.sendall(b"\r\n\r\n")
            answer = tls.recv(10)
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
            answer = b""
    assert answer == b"", "a client without a certificate got an answer"
    # with its certificate the same client gets through
    context.load_cert_chain(pki["client"].cert, pki["client"].key)
    with (
        socket.create_connection((LOOPBACK, port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=LOOPBACK) as tls,
    ):
        tls.sendall(b"\r\n\r\n")  # RFC 5626 ping
        assert tls.recv(10) == b"\r\n"  # pong


class TlsPhone:
    """A phone on a TLS connection: sends what it is given, reads framed messages."""

    def __init__(self, address: tuple[str, int], pki: dict[str, Leaf]) -> None:
        context = ssl.create_default_context(cafile=str(pki["ca"].cert))
        context.load_cert_chain(pki["client"].cert, pki["client"].key)
        raw = socket.create_connection(address, timeout=5)
        self.sock = context.wrap_socket(raw, server_hostname=address[0])
        self.local = self.sock.getsockname()[:2]
        self.framer = StreamFramer()
        self.queue: list[Request | Response] = []

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def receive(self, timeout: float = 10.0) -> Request | Response:
        deadline = time.monotonic() + timeout
        while not self.queue:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("the phone received nothing in time")
            self.sock.settimeout(left)
            data = self.sock.recv(65535)
            if not data:
                raise AssertionError("siplb closed the phone's connection")
            self.queue.extend(
                item for item in self.framer.feed(data) if isinstance(item, Request | Response)
            )
        return self.queue.pop(0)

    def close(self) -> None:
        self.sock.close()


def _reply(request: Request, status: int, reason: str, contact: bytes, tag: bytes) -> bytes:
    lines = [f"SIP/2.0 {status} {reason}".encode()]
    lines += [b"Via: " + v for v in request.get_all(b"via")]
    lines += [b"Record-Route: " + v for v in request.get_all(b"record-route")]
    to = request.get(b"to") or b""
    lines += [
        b"From: " + (request.get(b"from") or b""),
        b"To: " + (to if b"tag=" in to else to + b";tag=" + tag),
        b"Call-ID: " + (request.call_id or b""),
        b"CSeq: " + (request.get(b"cseq") or b""),
        b"Contact: " + contact,
        b"Content-Length: 0",
    ]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def test_a_tls_phone_registered_through_siplb_is_called_over_its_connection(
    sipp: SippLauncher,
    kamailio: Callable[..., KamailioProcess],
    e2e_workdir: Path,
    pki: dict[str, Leaf],
    processes: list[ManagedProcess],
) -> None:
    kam = kamailio([], config=REGISTRAR_CFG)
    port = free_port()
    lb = run_siplb(
        e2e_workdir,
        "siplb",
        tls_listener(port, pki, verify_client=True)
        + f'[[listen]]\ntransport = "udp"\naddress = "{LOOPBACK}:{port}"\n'
        + f'[[sets]]\nname = "registrar"\ndestinations = [{{ uri = "sip:{LOOPBACK}:{kam.port}" }}]\n',
        port,
        processes,
    )
    phone = TlsPhone((LOOPBACK, port), pki)
    try:
        host, lport = phone.local
        contact = f"<sip:alice@{host}:{lport};transport=tls>".encode()
        phone.send(
            f"REGISTER sip:example.com SIP/2.0\r\n"
            f"Via: SIP/2.0/TLS {host}:{lport};branch=z9hG4bKtlsreg1;rport\r\n"
            f"From: <sip:alice@example.com>;tag=tr1\r\nTo: <sip:alice@example.com>\r\n"
            f"Call-ID: tls-reg-1\r\nCSeq: 1 REGISTER\r\n"
            f"Contact: {contact.decode()}\r\nSupported: path\r\nExpires: 120\r\n"
            f"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n".encode()
        )
        ok = phone.receive()
        assert isinstance(ok, Response), ok
        assert ok.status == 200, ok
        path = wait_registered(kam)
        assert f"received=sip:{host}:{lport}%3Btransport%3Dtls" in path, path
        caller = sipp.uac(kam.address, calls=1, rate=1, timeout_s=30, extra_args=["-s", "alice"])
        invite = phone.receive()
        assert isinstance(invite, Request), invite
        assert invite.method == "INVITE", invite
        assert invite.top_via().transport == "TLS"
        phone.send(_reply(invite, 180, "Ringing", contact, b"ph1"))
        phone.send(_reply(invite, 200, "OK", contact, b"ph1"))
        methods = []
        for _ in range(2):  # the ACK, then the caller's BYE
            request = phone.receive()
            assert isinstance(request, Request), request
            methods.append(request.method)
            if request.method == "BYE":
                phone.send(_reply(request, 200, "OK", contact, b"ph1"))
        assert methods == ["ACK", "BYE"]
        result = caller.wait()
        assert result.stats.successful_calls == 1, result.describe() + lb.log_tail()
    finally:
        phone.close()
