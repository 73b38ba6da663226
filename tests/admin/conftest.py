"""An in-process balancer on loopback with its admin app behind aiohttp's test client.

    async with admin_lab(tmp_path, token="t") as lab:
        response = await lab.client.get("/api/status", headers=lab.auth)

The balancer is real (UDP sockets on 127.0.0.1, ephemeral ports, its destinations silent ports),
its config is a file in ``tmp_path`` so reloads read it again; the sampler does not run on its
own: a test calls ``lab.server.sample()`` when it wants a sample.

``served_admin`` starts the balancer as ``siplb run`` does, its admin server listening on its
own socket, for tests that need the real listener (Host names, refused connections):

    async with served_admin(tmp_path, hosts=("lb.example.net",)) as balancer:
        url = balancer.admin.url
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from siplb.admin.server import AdminServer
from siplb.app import Balancer
from siplb.config import load_config

DESTS = ("sip:127.0.0.1:9", "sip:127.0.0.1:19")
TOKEN = "admin-secret"


@pytest.fixture(autouse=True)
def silent_destinations() -> Iterator[None]:
    """The destinations' ports bound and never read: silent, as the tests expect, not refused
    (a port unreachable would fail them over at once). ``SO_REUSEPORT``: runs side by side."""
    socks = []
    try:
        for port in (9, 19, 29):  # 29: the destination some reloads add
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError as exc:
                pytest.fail(f"cannot bind 127.0.0.1:{port} (silent destination): {exc}")
        yield
    finally:
        for sock in socks:
            sock.close()


def config_text(
    destinations: Sequence[str] = DESTS,
    *,
    token: str | None = TOKEN,
    sets: str | None = None,
    extra: str = "",
    admin_listen: str = "127.0.0.1:0",
) -> str:
    dests = ", ".join(f'{{ uri = "{uri}" }}' for uri in destinations)
    admin = f'[admin]\nlisten = "{admin_listen}"\n' + (f'token = "{token}"\n' if token else "")
    body = sets or f'[[sets]]\nname = "pbx"\ndestinations = [{dests}]\n'
    return (
        '[[listen]]\ntransport = "udp"\naddress = "127.0.0.1:0"\n\n'
        # the destinations are silent ports: they start up (not probing), as these tests of the
        # API, not of health, expect
        f"{body}\n[health]\ninterval = 30.0\ntimeout = 0.5\nprobe_first = false\n\n{admin}{extra}"
    )


@dataclass
class Lab:
    balancer: Balancer
    server: AdminServer
    client: TestClient  # type: ignore[type-arg]
    config_path: Path
    token: str | None

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    async def json(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        kwargs.setdefault("headers", self.auth)
        response = await self.client.request(method, path, **kwargs)
        return response.status, await response.json()

    def write_config(self, text: str) -> None:
        self.config_path.write_text(text)


@contextlib.asynccontextmanager
async def admin_lab(tmp_path: Path, text: str | None = None, **kwargs: Any) -> AsyncIterator[Lab]:
    path = tmp_path / "siplb.toml"
    path.write_text(text if text is not None else config_text(**kwargs))
    config = load_config(path)
    balancer = Balancer(config, config_path=path)
    await balancer.start()
    server = AdminServer(balancer)
    balancer.admin = server
    client = TestClient(TestServer(server.app))
    await client.start_server()
    try:
        yield Lab(balancer, server, client, path, config.admin.token)
    finally:
        await client.close()
        balancer.admin = None
        await balancer.stop(grace=0)


@contextlib.asynccontextmanager
async def served_admin(
    tmp_path: Path, text: str | None = None, *, token: str | None = TOKEN, **admin: Any
) -> AsyncIterator[Balancer]:
    """A balancer started with ``admin=True``; ``admin`` replaces fields of its AdminSettings
    (``hosts=...``, ``enabled=False``)."""
    path = tmp_path / "siplb.toml"
    path.write_text(text if text is not None else config_text(token=token))
    config = load_config(path)
    config = replace(config, admin=replace(config.admin, **admin))
    balancer = Balancer(config, admin=True, config_path=path)
    await balancer.start()
    try:
        yield balancer
    finally:
        await balancer.stop(grace=0)


def run_async(test: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    """Run an async test function to completion on a fresh event loop."""

    @functools.wraps(test)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        asyncio.run(asyncio.wait_for(test(*args, **kwargs), timeout=30))

    return wrapper
