"""Who may use the admin API, against a real server (``Balancer(admin=True)`` listening on
127.0.0.1) and a real HTTP client: the token only in the Authorization header, the Host check
that stops DNS rebinding, no API at all without ``[admin]``, and refusals counted by reason and
logged at a bounded rate."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import quote

import aiohttp
import pytest

from siplb.admin.auth import host_name
from siplb.app import Balancer
from siplb.logs import LOG_EVERY, RefusalLog

from .conftest import DESTS, TOKEN, config_text, run_async, served_admin

GOOD = {"Authorization": f"Bearer {TOKEN}"}
WRONG = {"Authorization": "Bearer not-it"}
DRAIN = f"/api/sets/pbx/destinations/{quote(DESTS[0], safe='')}/drain"


@asynccontextmanager
async def client(balancer: Balancer) -> AsyncIterator[tuple[aiohttp.ClientSession, str, int]]:
    """An HTTP client for the balancer's admin server: (session, base URL, port)."""
    assert balancer.admin is not None
    assert balancer.admin.port is not None
    async with aiohttp.ClientSession() as session:
        yield session, balancer.admin.url, balancer.admin.port


def refusal_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "admin: refused" in r.getMessage()]


# ---- the Host header's name ------------------------------------------------------------------
HOST_NAMES = [
    # (Host header, its name; None: malformed)
    ("localhost", "localhost"),
    ("LocalHost:8080", "localhost"),
    ("127.0.0.1:8080", "127.0.0.1"),
    ("[::1]:8080", "::1"),
    ("[::1]", "::1"),
    ("[2001:DB8::5]", "2001:db8::5"),
    ("lb.example.net.", "lb.example.net"),
    ("lb.example.net:", "lb.example.net"),  # RFC 3986 port = *DIGIT
    ("::1", None),  # an IPv6 address needs its brackets
    ("[::1", None),
    ("[::1]8080", None),
    ("lb:http", None),
    ("lb:8o80", None),
    ("lb:８０", None),  # fullwidth digits
    (":8080", None),
    ("", None),
]


@pytest.mark.parametrize(("value", "expected"), HOST_NAMES)
def test_host_name(value: str, expected: str | None) -> None:
    assert host_name(value) == expected


# ---- the token: only in the Authorization header ---------------------------------------------
TOKEN_CASES = [
    # (method, path, headers, expected status)
    ("GET", "/api/status", GOOD, 200),
    ("GET", "/api/status", {"Authorization": f"bearer  {TOKEN}"}, 200),
    ("POST", DRAIN, GOOD, 200),
    ("GET", "/api/status", {}, 401),
    ("GET", "/api/status", WRONG, 401),
    ("GET", f"/api/status?token={TOKEN}", {}, 401),
    ("GET", f"/api/status?token={TOKEN}", GOOD, 401),  # a good header does not excuse it
    ("GET", f"/api/stream?token={TOKEN}", {}, 401),  # what the dashboard once did
    ("GET", f"/metrics?token={TOKEN}", {}, 401),
    ("GET", f"/?token={TOKEN}", {}, 401),  # even on the open page
    ("POST", f"{DRAIN}?token={TOKEN}", {}, 401),
]


@pytest.mark.parametrize(("method", "path", "headers", "expected"), TOKEN_CASES)
@run_async
async def test_the_token_is_taken_only_from_the_authorization_header(
    tmp_path: Path, method: str, path: str, headers: dict[str, str], expected: int
) -> None:
    async with (
        served_admin(tmp_path) as balancer,
        client(balancer) as (session, url, _),
        session.request(method, url + path, headers=headers) as response,
    ):
        assert response.status == expected, await response.text()


@run_async
async def test_a_token_in_the_url_is_refused_and_never_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with served_admin(tmp_path) as balancer, client(balancer) as (session, url, _):
        with caplog.at_level(logging.DEBUG):
            async with session.get(f"{url}/api/sets?token={TOKEN}") as response:
                assert response.status == 401
                assert "Authorization" in (await response.json())["error"]
        assert TOKEN not in caplog.text
        assert "?" not in refusal_lines(caplog)[0].split(" from ")[0]
        assert balancer.admin is not None
        assert balancer.admin.refused == {"token in the URL": 1}


# ---- the Host header: DNS rebinding ----------------------------------------------------------
HOST_CASES = [
    # ([admin] hosts, Host header ({port}: the admin port), expected status)
    ((), "127.0.0.1:{port}", 200),
    ((), "localhost:{port}", 200),
    ((), "LOCALHOST", 200),
    ((), "[::1]:{port}", 200),
    ((), "evil.example", 421),
    ((), "evil.example:{port}", 421),
    ((), "localhost.evil.example:{port}", 421),
    ((), "127.0.0.1.nip.io:{port}", 421),
    ((), "::1", 421),
    (("lb.example.net",), "LB.Example.Net:{port}", 200),
    (("lb.example.net",), "localhost:{port}", 421),  # hosts replaces the default names
    (("[2001:db8::5]",), "[2001:DB8::5]:{port}", 200),
]


@pytest.mark.parametrize(("hosts", "host", "expected"), HOST_CASES)
@run_async
async def test_host_is_checked(
    tmp_path: Path, hosts: tuple[str, ...], host: str, expected: int
) -> None:
    async with (
        served_admin(tmp_path, hosts=hosts) as balancer,
        client(balancer) as (session, url, port),
    ):
        headers = {"Host": host.format(port=port), **GOOD}
        async with session.get(url + "/api/status", headers=headers) as response:
            assert response.status == expected, await response.text()
        assert balancer.admin is not None
        assert balancer.admin.refused["wrong host"] == int(expected == 421)


REBOUND = ["/", "/static/dashboard.js", "/api/status", "/api/sets", "/api/stream", "/metrics"]


@run_async
async def test_a_rebound_name_reads_nothing_even_without_a_token(tmp_path: Path) -> None:
    """A page on evil.example, its name rebound to 127.0.0.1, asks from the operator's browser:
    without a token configured reads are open, but not for that Host."""
    async with (
        served_admin(tmp_path, token=None) as balancer,
        client(balancer) as (session, url, port),
    ):
        for path in REBOUND:
            headers = {"Host": f"evil.example:{port}"}
            async with session.get(url + path, headers=headers) as response:
                assert response.status == 421, path
                assert "sets" not in await response.text()
            async with session.get(url + path) as response:
                assert response.status == 200, path  # the same read under our own name
                response.close()
        assert balancer.admin is not None
        assert balancer.admin.refused == {"wrong host": len(REBOUND)}


# ---- no [admin]: no API ------------------------------------------------------------------------
def free_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@run_async
async def test_without_admin_nothing_listens(tmp_path: Path) -> None:
    port = free_tcp_port()
    text = config_text(admin_listen=f"127.0.0.1:{port}")
    async with served_admin(tmp_path, text, enabled=False) as balancer:
        assert balancer.admin is None
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", port)
    async with served_admin(tmp_path, text) as balancer:  # the same config, enabled
        assert balancer.admin is not None
        assert balancer.admin.port == port


# ---- refusals: counted, logged at a bounded rate ---------------------------------------------
@run_async
async def test_a_hundred_bad_requests_give_one_line_per_reason(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with served_admin(tmp_path) as balancer, client(balancer) as (session, url, port):
        with caplog.at_level(logging.DEBUG):
            for headers in (WRONG, {"Host": f"evil.example:{port}"}, {}):
                for _ in range(100):
                    async with session.get(url + "/api/status", headers=headers) as response:
                        assert response.status in (401, 421)
        lines = refusal_lines(caplog)
        assert len(lines) == 3, lines
        assert [line.split(": ", 2)[2] for line in lines] == [
            "wrong token",
            f"wrong host 'evil.example:{port}'",
            "missing token",
        ]
        assert balancer.admin is not None
        assert balancer.admin.refused == {
            "wrong token": 100,
            "wrong host": 100,
            "missing token": 100,
        }
        assert balancer.recorder.auth_refusals == 200  # the metric counts token refusals


@run_async
async def test_the_next_line_counts_those_left_out(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with served_admin(tmp_path) as balancer, client(balancer) as (session, url, _):
        assert balancer.admin is not None
        now = [0.0]
        balancer.admin.guard.clock = lambda: now[0]
        with caplog.at_level(logging.WARNING, logger="siplb.admin"):
            for at in [0.0] * 50 + [LOG_EVERY - 0.1] * 49 + [LOG_EVERY]:
                now[0] = at
                async with session.get(url + "/api/sets", headers=WRONG) as response:
                    assert response.status == 401
        lines = refusal_lines(caplog)
        assert len(lines) == 2, lines
        assert "more" not in lines[0]
        assert lines[1].endswith("wrong token (and 98 more since the last such line)")


MALFORMED = [
    b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n",  # TLS to the HTTP port
    b"OPTIONS sip:lb.example.net SIP/2.0\r\nVia: SIP/2.0/TCP 192.0.2.1\r\n\r\n",  # SIP
    b"GET / HTTP/1.1\r\nHost: localhost\r\nno colon here\r\n\r\n",
    b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: localhost\r\n\r\n",
]


async def send_raw(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 5)  # the server answers 400 and closes
    writer.close()
    await writer.wait_closed()
    return answer


@run_async
async def test_malformed_requests_are_refused_in_one_line_without_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with served_admin(tmp_path) as balancer:
        assert balancer.admin is not None
        assert balancer.admin.port is not None
        with caplog.at_level(logging.DEBUG):
            for data in MALFORMED * 25:
                answer = await send_raw(balancer.admin.port, data)
                assert answer.split(b" ", 2)[1] == b"400", answer
        assert [r for r in caplog.records if r.exc_info] == []
        lines = refusal_lines(caplog)
        assert len(lines) == 1, lines
        assert "malformed request" in lines[0]
        assert balancer.admin.refused == {"malformed request": len(MALFORMED) * 25}


# ---- the rate limit on its own -----------------------------------------------------------------
def test_refusal_log_one_line_per_reason_and_source_per_interval() -> None:
    limit = RefusalLog(every=10.0)
    assert limit.admit("wrong token", "192.0.2.1", 0.0) == 0
    assert limit.admit("wrong token", "192.0.2.1", 5.0) is None
    assert limit.admit("wrong host", "192.0.2.1", 5.0) == 0  # another reason
    assert limit.admit("wrong token", "192.0.2.2", 5.0) == 0  # another source
    assert limit.admit("wrong token", "192.0.2.1", 9.9) is None
    assert limit.admit("wrong token", "192.0.2.1", 10.0) == 2
    assert limit.admit("wrong token", "192.0.2.1", 30.0) == 0


def test_refusal_log_shares_one_line_between_sources_past_its_capacity() -> None:
    limit = RefusalLog(every=10.0, capacity=3)
    for n in range(3):
        assert limit.admit("wrong host", f"192.0.2.{n}", 0.0) == 0
    assert limit.admit("wrong host", "198.51.100.1", 1.0) == 0  # one line for all the others
    assert limit.admit("wrong host", "198.51.100.2", 1.0) is None
    assert limit.admit("wrong host", "198.51.100.3", 1.0) is None
    assert limit.admit("wrong host", "198.51.100.4", 12.0) == 0  # over: old windows forgotten
    assert limit.admit("wrong host", "198.51.100.4", 13.0) is None
