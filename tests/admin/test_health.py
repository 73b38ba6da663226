"""``GET /api/health``, ``POST /api/node`` and the commands that use them (``siplb health``,
``siplb node drain|resume``), on a real in-process balancer."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from siplb.cli import main
from siplb.dispatch import AdminState

from .conftest import DESTS, TOKEN, admin_lab, config_text, run_async, served_admin

GOOD = {"Authorization": f"Bearer {TOKEN}"}


@run_async
async def test_healthy_then_every_destination_disabled(tmp_path: Path) -> None:
    async with admin_lab(tmp_path) as lab:
        status, body = await lab.json("GET", "/api/health", headers={})
        assert (status, body["healthy"], body["reasons"], body["draining"]) == (
            200,
            True,
            [],
            False,
        )
        for uri in DESTS:
            lab.balancer.set_admin_state("pbx", uri, AdminState.DISABLED, "test")
        status, body = await lab.json("GET", "/api/health", headers={})
        assert status == 503
        assert body["reasons"] == ["no destination up in any set"]


SETS = (
    '[[sets]]\nname = "pbx"\ndestinations = [{ uri = "sip:127.0.0.1:9" }]\n'
    '[[sets]]\nname = "reg"\ndestinations = [{ uri = "sip:127.0.0.1:19" }]\n'
)


@pytest.mark.parametrize(
    ("policy", "reasons"),
    [
        ('"any"', []),
        ('"every"', ["set 'reg' has no destination up"]),
        ('["pbx"]', []),
        ('["reg"]', ["set 'reg' has no destination up"]),
    ],
)
@run_async
async def test_the_policy_of_the_config(tmp_path: Path, policy: str, reasons: list[str]) -> None:
    text = config_text(sets=SETS).replace("[health]\n", f"[health]\nsets = {policy}\n")
    async with admin_lab(tmp_path, text) as lab:
        lab.balancer.set_admin_state("reg", DESTS[1], AdminState.DISABLED, "test")
        status, body = await lab.json("GET", "/api/health")
        assert (status, body["reasons"]) == (200 if not reasons else 503, reasons)


@run_async
async def test_drain_and_resume_the_node(tmp_path: Path) -> None:
    async with admin_lab(tmp_path) as lab:
        status, body = await lab.json("POST", "/api/node", json={"drain": True})
        assert (status, body["healthy"], body["draining"]) == (503, False, True)
        assert body["reasons"] == ["the node is drained"]
        assert lab.balancer.draining
        status, body = await lab.json("GET", "/api/health", headers={})
        assert (status, body["draining"]) == (503, True)
        status, body = await lab.json("POST", "/api/node", json={"drain": False})
        assert (status, body["healthy"], body["draining"]) == (200, True, False)
        assert not lab.balancer.draining


@pytest.mark.parametrize("body", [{"drain": "yes"}, {"drain": 1}, {}, [True], "drain"])
@run_async
async def test_node_needs_a_boolean_drain(tmp_path: Path, body: Any) -> None:
    async with admin_lab(tmp_path) as lab:
        status, answer = await lab.json("POST", "/api/node", json=body)
        assert status == 400
        assert "drain" in answer["error"]
        assert not lab.balancer.draining


AUTH_CASES = [
    (True, "GET", "/api/health", {}, 200),  # keepalived and ExaBGP ask without the token
    (True, "POST", "/api/node", {}, 401),
    (True, "POST", "/api/node", GOOD, 503),  # drained: unhealthy
    (False, "GET", "/api/health", {}, 200),
    (False, "POST", "/api/node", {}, 403),  # no token configured: no changes
]


@pytest.mark.parametrize(("configured", "method", "path", "headers", "expected"), AUTH_CASES)
@run_async
async def test_token(
    tmp_path: Path,
    configured: bool,
    method: str,
    path: str,
    headers: dict[str, str],
    expected: int,
) -> None:
    async with admin_lab(tmp_path, token=TOKEN if configured else None) as lab:
        body = {"drain": True} if method == "POST" else None
        response = await lab.client.request(method, path, headers=headers, json=body)
        assert response.status == expected, await response.text()


@run_async
async def test_wrong_host_is_refused_even_for_health(tmp_path: Path) -> None:
    async with admin_lab(tmp_path) as lab:
        response = await lab.client.get("/api/health", headers={"Host": "evil.example"})
        assert response.status == 421


# ---- the commands ------------------------------------------------------------------------------
def invoke(*args: str) -> tuple[int, str]:
    env = {"SIPLB_ADMIN": "", "SIPLB_ADMIN_TOKEN": "", "SIPLB_ADMIN_TOKEN_FILE": ""}
    result = CliRunner().invoke(main, list(args), env=env)
    return result.exit_code, result.stdout


@run_async
async def test_health_and_node_commands(tmp_path: Path) -> None:
    async with served_admin(tmp_path) as balancer:
        assert balancer.admin is not None
        config = str(tmp_path / "siplb.toml")
        admin = ("--admin", balancer.admin.url)
        code, out = await asyncio.to_thread(invoke, "health", *admin)
        assert (code, out) == (0, "healthy (node n1)\n")
        # no token given: a change is refused (exit 1), the node stays as it is
        code, _ = await asyncio.to_thread(invoke, "node", "drain", *admin)
        assert code == 1
        assert not balancer.draining
        # the config's [admin] token and address
        code, out = await asyncio.to_thread(invoke, "node", "drain", "-c", config, *admin)
        assert (code, out) == (0, "unhealthy (node n1): the node is drained\n")
        code, out = await asyncio.to_thread(invoke, "health", *admin)
        assert (code, out) == (1, "unhealthy (node n1): the node is drained\n")
        code, _ = await asyncio.to_thread(invoke, "health", "-q", *admin)
        assert code == 1
        code, out = await asyncio.to_thread(invoke, "node", "resume", "-c", config, *admin)
        assert (code, out) == (0, "healthy (node n1)\n")
        code, _ = await asyncio.to_thread(invoke, "health", *admin)
        assert code == 0


def test_health_of_a_balancer_that_is_not_there(tmp_path: Path) -> None:
    from e2e.harness import free_port

    code, out = invoke("health", "--admin", f"http://127.0.0.1:{free_port()}")
    assert code == 2
    assert out.startswith("unreachable: cannot reach the admin API")
    assert out.count("\n") == 1


def test_health_with_a_broken_config_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[[listen]]\n")
    code, _ = invoke("health", "-c", str(path))
    assert code == 2
