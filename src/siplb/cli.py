"""``siplb run | check | demo | status | dest | reload | bans | ban | unban | health | node |
announce | bond`` (DESIGN.md section 5)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from siplb import __version__
from siplb.cli_bond import bond
from siplb.config import ConfigError, load_config


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="siplb")
def main() -> None:
    """siplb: a SIP load balancer for farms of PBXs, registrars and proxies."""


@main.command()
@click.option("-c", "--config", "config_path", required=True, type=click.Path(path_type=Path))
@click.option("--log-format", type=click.Choice(["human", "json"]), default=None)
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default=None)
def run(config_path: Path, log_format: str | None, log_level: str | None) -> None:
    """Run the balancer in the foreground (SIGTERM drains and stops, SIGHUP reloads)."""
    from siplb.app import serve
    from siplb.io.driver import run_loop
    from siplb.logs import setup_logging

    try:
        config = load_config(config_path)
    except ConfigError as exc:
        _print_problems(config_path, exc)
        sys.exit(2)
    setup_logging(log_level or config.log.level, log_format or config.log.format)
    try:
        if config.proxy.workers > 1:
            from siplb.supervisor import supervise

            sys.exit(supervise(config_path, config))
        sys.exit(run_loop(serve(config_path)))
    except OSError as exc:
        click.echo(f"siplb: {exc}", err=True)
        sys.exit(1)


@main.command()
@click.option("-c", "--config", "config_path", required=True, type=click.Path(path_type=Path))
def check(config_path: Path) -> None:
    """Check a config file; list every problem with its path (exit 2 when there are any)."""
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        _print_problems(config_path, exc)
        sys.exit(2)
    dests = sum(len(spec.destinations) for spec in config.sets)
    names = sum(len(spec.names) for spec in config.sets)
    named = f", {names} DNS names" if names else ""
    click.echo(
        f"{config_path}: ok ({len(config.listeners)} listeners, {len(config.sets)} sets, "
        f"{dests} destinations{named}, {len(config.routes)} routes)"
    )
    if names:  # DNS may be down at check time: a warning, not a problem of the file
        import asyncio

        from siplb.io.resolver import unresolved

        for warning in asyncio.run(unresolved(config.dns, config.sets)):
            click.echo(f"warning: {warning}", err=True)


@main.command()
@click.option("--duration", type=float, default=None, help="Stop after this many seconds.")
@click.option("--cps", type=float, default=4.0, show_default=True, help="Demo calls per second.")
@click.option("--port", type=int, default=5060, show_default=True, help="Balancer UDP port.")
@click.option("--no-table", is_flag=True, help="Print events only, no live table.")
def demo(duration: float | None, cps: float, port: int, no_table: bool) -> None:
    """Balancer plus three built-in demo PBXs on loopback, with test calls flowing."""
    from siplb.demo import run_demo
    from siplb.io.driver import run_loop

    sys.exit(run_loop(run_demo(duration=duration, cps=cps, port=port, table=not no_table)))


def _print_problems(path: Path, exc: ConfigError) -> None:
    click.echo(f"{path}: {len(exc.problems)} problem(s)", err=True)
    for problem in exc.problems:
        where = problem.path or "(file)"
        click.echo(f"  {where}: {problem.message}", err=True)


# ---- talking to a running balancer's admin API ------------------------------------------------
F = TypeVar("F", bound=Callable[..., Any])


def _admin_options(command: F) -> F:
    command = click.option(
        "-c",
        "--config",
        "config_path",
        type=click.Path(path_type=Path),
        default=None,
        help="Take the admin address and token from this config's [admin] section.",
    )(command)
    command = click.option(
        "--token-file",
        type=click.Path(path_type=Path),
        default=None,
        help="File holding the admin token (else $SIPLB_ADMIN_TOKEN or $SIPLB_ADMIN_TOKEN_FILE).",
    )(command)
    command = click.option(
        "--admin",
        "admin_url",
        envvar="SIPLB_ADMIN",
        default=None,
        help="Admin API URL (default $SIPLB_ADMIN, the config's, or http://127.0.0.1:8080).",
    )(command)
    return command


def _client(admin_url: str | None, token_file: Path | None, config_path: Path | None) -> Any:
    from siplb.admin.client import DEFAULT_URL, AdminClient, resolve_token

    config_url = config_token = None
    if config_path is not None:
        try:
            config = load_config(config_path)
        except ConfigError as exc:
            _print_problems(config_path, exc)
            sys.exit(2)
        host, port = config.admin.address
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
        config_url = f"http://{f'[{host}]' if ':' in host else host}:{port}"
        config_token = config.admin.token
        if config_token is None and config.admin.token_file is not None:
            token_file = token_file or config.admin.token_file
    try:
        token = resolve_token(token_file, config_token)
    except OSError as exc:
        click.echo(f"siplb: cannot read the token file: {exc}", err=True)
        sys.exit(1)
    return AdminClient(admin_url or config_url or DEFAULT_URL, token)


def _call(action: Callable[[], Any]) -> Any:
    """Run one API call; an error is printed and ends the command (exit 1)."""
    from siplb.admin.client import AdminError

    try:
        return action()
    except AdminError as exc:
        _fail(exc)


def _fail(exc: Any) -> NoReturn:
    click.echo(f"siplb: {exc.message}", err=True)
    if exc.status == 401:
        click.echo(
            "siplb: give the admin token with --token-file, $SIPLB_ADMIN_TOKEN or -c CONFIG",
            err=True,
        )
    sys.exit(1)


@main.command()
@_admin_options
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON instead of a table.")
def status(
    admin_url: str | None, token_file: Path | None, config_path: Path | None, as_json: bool
) -> None:
    """Sets and destinations of a running balancer, as a table (like ipvsadm -L -n); with a
    cluster, its totals, its Redis link and its members too."""
    from siplb.admin.client import format_cluster, format_status

    client = _client(admin_url, token_file, config_path)
    info = _call(client.status)
    sets = _call(client.sets)
    protection = _protection(client, limit=0)
    cluster = _cluster(client)
    if as_json:
        out = {"status": info, "sets": sets}
        if protection is not None:
            out["protection"] = protection
        if cluster is not None:
            out["cluster"] = cluster
        click.echo(json.dumps(out, indent=2))
        return
    now = time.time()
    click.echo(format_status(info, sets, now, protection))
    if cluster is not None:
        click.echo(format_cluster(cluster, now))


def _protection(client: Any, limit: int) -> Any:
    """``GET /api/protection``; None from a balancer without it (older than the API)."""
    from siplb.admin.client import AdminError

    try:
        return client.request("GET", f"/api/protection?limit={limit}")
    except AdminError as exc:
        if exc.status == 404:
            return None
        _fail(exc)


def _cluster(client: Any) -> Any:
    """``GET /api/cluster`` when the balancer is in a cluster; else None (also from a balancer
    older than the API)."""
    from siplb.admin.client import AdminError

    try:
        body = client.cluster()
    except AdminError as exc:
        if exc.status == 404:
            return None
        _fail(exc)
    return body if body.get("enabled") else None


@main.group()
def dest() -> None:
    """Drain, enable, disable or re-weight one destination of a running balancer."""


def _dest_action(action: str, summary: str) -> None:
    @dest.command(action, help=summary)
    @_admin_options
    @click.argument("set_name", metavar="SET")
    @click.argument("uri")
    def command(
        admin_url: str | None,
        token_file: Path | None,
        config_path: Path | None,
        set_name: str,
        uri: str,
    ) -> None:
        client = _client(admin_url, token_file, config_path)
        view = _call(lambda: client.destination_action(set_name, uri, action))
        for one in view.get("destinations", [view]):  # a DNS name: each of its addresses
            click.echo(f"{one['uri']} in {set_name}: {one['state']} ({one['cause']})")


_dest_action("drain", "No new calls to URI; calls in progress go on until they end.")
_dest_action("enable", "Clear a drain or disable: the probes decide URI's state again.")
_dest_action("disable", "No new calls to URI.")


@dest.command("weight")
@_admin_options
@click.argument("set_name", metavar="SET")
@click.argument("uri")
@click.argument("weight", type=click.IntRange(1, 1_000_000))
def dest_weight(
    admin_url: str | None,
    token_file: Path | None,
    config_path: Path | None,
    set_name: str,
    uri: str,
    weight: int,
) -> None:
    """Set URI's weight in SET (until the next reload)."""
    client = _client(admin_url, token_file, config_path)
    view = _call(lambda: client.set_weight(set_name, uri, weight))
    click.echo(f"{view['uri']} in {set_name}: weight {view['weight']}")


@main.command()
@_admin_options
def reload(admin_url: str | None, token_file: Path | None, config_path: Path | None) -> None:
    """Make a running balancer reload its config file (like SIGHUP); exit 2 if refused."""
    from siplb.admin.client import AdminError

    client = _client(admin_url, token_file, config_path)
    try:
        outcome = client.reload()
    except AdminError as exc:
        if exc.status != 422 or not isinstance(exc.body, dict):
            _fail(exc)
        body = exc.body
        click.echo(f"siplb: {body.get('summary', exc.message)}; the running config stays", err=True)
        for problem in body.get("problems", []):
            click.echo(f"  {problem['path'] or '(file)'}: {problem['message']}", err=True)
        sys.exit(2)
    click.echo(outcome["summary"])
    for warning in outcome["warnings"]:
        click.echo(f"warning: {warning}", err=True)


# ---- bans ---------------------------------------------------------------------------------------
@main.command()
@_admin_options
@click.option("--limit", type=click.IntRange(0, 10_000), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON instead of a table.")
def bans(
    admin_url: str | None,
    token_file: Path | None,
    config_path: Path | None,
    limit: int,
    as_json: bool,
) -> None:
    """The sources banned now, the one whose ban ends first first."""
    from siplb.admin.client import format_bans

    client = _client(admin_url, token_file, config_path)
    body = _protection(client, limit)
    if body is None:
        click.echo("siplb: this balancer has no protection API (GET /api/protection)", err=True)
        sys.exit(1)
    if as_json:
        click.echo(json.dumps({"bans_active": body["bans_active"], "bans": body["bans"]}, indent=2))
    else:
        click.echo(format_bans(body))


@main.command()
@_admin_options
@click.argument("host")
@click.option(
    "--seconds",
    type=click.FloatRange(0, 365 * 86400, min_open=True),
    default=3600.0,
    show_default=True,
    help="How long the ban lasts.",
)
@click.option("--reason", default="operator", show_default=True, help="Shown with the ban.")
def ban(
    admin_url: str | None,
    token_file: Path | None,
    config_path: Path | None,
    host: str,
    seconds: float,
    reason: str,
) -> None:
    """Drop every request from HOST (an IP address) for a while, on every worker."""
    from siplb.admin.client import format_duration

    client = _client(admin_url, token_file, config_path)
    body = {"host": host, "seconds": seconds, "reason": reason}
    view = _call(lambda: client.request("POST", "/api/bans", body))
    left = format_duration(view["seconds_left"])
    click.echo(f"{view['host']} banned for {left} ({view['reason']})")


@main.command()
@_admin_options
@click.argument("host")
def unban(
    admin_url: str | None, token_file: Path | None, config_path: Path | None, host: str
) -> None:
    """Lift HOST's ban and forgive its offences."""
    from urllib.parse import quote

    client = _client(admin_url, token_file, config_path)
    view = _call(lambda: client.request("DELETE", f"/api/bans/{quote(host, safe='')}"))
    click.echo(f"ban on {view['host']} lifted")


# ---- the node's health: keepalived's vrrp_script, ExaBGP's routes, an operator's drain -----------
HEALTHY, UNHEALTHY, UNREACHABLE = 0, 1, 2


@main.command()
@_admin_options
@click.option(
    "--timeout",
    type=click.FloatRange(0, 60, min_open=True),
    default=1.0,
    show_default=True,
    help="Seconds to wait for the answer; no answer in time counts as unreachable.",
)
@click.option("-q", "--quiet", is_flag=True, help="Print nothing; the exit code tells.")
def health(
    admin_url: str | None,
    token_file: Path | None,
    config_path: Path | None,
    timeout: float,
    quiet: bool,
) -> None:
    """Exit 0 when the running balancer is healthy, 1 when it is not (drained, stopping, no
    destination up by [health] sets), 2 when it cannot be asked; one line says which."""
    from dataclasses import replace

    from siplb.admin.client import AdminError

    client = replace(_client(admin_url, token_file, config_path), timeout=timeout)
    try:
        body = client.health()
    except AdminError as exc:
        if not quiet:
            click.echo(f"unreachable: {exc.message}")
        sys.exit(UNREACHABLE)
    if not quiet:
        click.echo(_health_line(body))
    sys.exit(HEALTHY if body.get("healthy") is True else UNHEALTHY)


def _health_line(body: Any) -> str:
    node = body.get("node_id", "?")
    if body.get("healthy") is True:
        return f"healthy (node {node})"
    return f"unhealthy (node {node}): {'; '.join(body.get('reasons') or ['no reason given'])}"


@main.group()
def node() -> None:
    """Drain or resume this whole node (its route is withdrawn, VRRP moves away)."""


def _node_action(action: str, drain: bool, summary: str) -> None:
    @node.command(action, help=summary)
    @_admin_options
    def command(admin_url: str | None, token_file: Path | None, config_path: Path | None) -> None:
        client = _client(admin_url, token_file, config_path)
        body = _call(lambda: client.drain_node(drain))
        click.echo(_health_line(body))


_node_action(
    "drain",
    True,
    "Mark the node drained: it reads unhealthy, so its route is withdrawn (or the VRRP address "
    "moves); in a cluster the other nodes take its new calls while its calls finish here.",
)
_node_action("resume", False, "Undo a drain: the node is healthy again when its checks pass.")


@main.command()
@click.option("-c", "--config", "config_path", required=True, type=click.Path(path_type=Path))
@click.option(
    "--admin",
    "admin_url",
    envvar="SIPLB_ADMIN",
    default=None,
    help="Admin API URL (default $SIPLB_ADMIN, else the config's [admin] listen).",
)
def announce(config_path: Path, admin_url: str | None) -> None:
    """Run under ExaBGP (its process API, text encoder): announce the config's [announce]
    prefixes while the node is healthy, withdraw them within a second when it is not, or
    when siplb dies or hangs. Ends when ExaBGP closes its stdin."""
    from siplb.io.driver import run_loop
    from siplb.io.exabgp import run_announcer
    from siplb.logs import setup_logging

    client = _client(admin_url, None, config_path)
    config = load_config(config_path)
    if config.announce is None:
        click.echo(f"{config_path}: no [announce] table: nothing to announce", err=True)
        sys.exit(2)
    setup_logging(config.log.level, config.log.format)
    announcer = run_announcer(
        config.announce, client.url, client.token, sys.stdin.buffer, sys.stdout
    )
    sys.exit(run_loop(announcer))


main.add_command(bond)  # siplb bond client | server | status | check | key
