"""``siplb run | check | demo | status | dest | reload | bans | ban | unban | health | node |
announce | bond`` (docs/design.md section 5)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from siplb import __version__, build_kind
from siplb.cli_bond import bond
from siplb.cli_help import HelpGroup
from siplb.config import ConfigError, load_config
from siplb.words import plural


@click.group(cls=HelpGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(
    __version__, prog_name="siplb", message="%(prog)s %(version)s (" + build_kind() + ")"
)
def main() -> None:
    """siplb: a SIP load balancer for farms of PBXs, registrars and proxies."""


@main.command()
@click.option(
    "-c",
    "--config",
    "config_path",
    required=True,
    type=click.Path(path_type=Path),
    help="The config file (TOML); SIGHUP and `siplb reload` read it again.",
)
@click.option(
    "--log-format",
    type=click.Choice(["human", "json"]),
    default=None,
    help="Log lines for people or one JSON object a line [default: the config's [log] format].",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default=None,
    help="The least severe level logged [default: the config's [log] level].",
)
@click.option(
    "--log-target",
    type=click.Choice(["stderr", "syslog", "journald"]),
    default="stderr",
    show_default=True,
    help="Where log lines go (under systemd, stderr reaches the journal too).",
)
@click.option(
    "--syslog-address",
    default=None,
    help="syslog: a unix socket path or host:port (UDP) [default: /dev/log].",
)
@click.option(
    "--journal-socket",
    default=None,
    help="journald: its native socket [default: /run/systemd/journal/socket].",
)
def run(
    config_path: Path,
    log_format: str | None,
    log_level: str | None,
    log_target: str,
    syslog_address: str | None,
    journal_socket: str | None,
) -> None:
    """Run the balancer in the foreground (SIGTERM drains and stops, SIGHUP reloads)."""
    from siplb.app import serve
    from siplb.io.driver import run_loop
    from siplb.logs import setup_logging

    try:
        config = load_config(config_path)
    except ConfigError as exc:
        _print_problems(config_path, exc)
        sys.exit(2)
    address = journal_socket if log_target == "journald" else syslog_address
    level, fmt = log_level or config.log.level, log_format or config.log.format
    try:
        setup_logging(level, fmt, log_target, address)
    except (OSError, ValueError) as exc:
        click.echo(f"siplb: cannot log to {log_target}: {exc}", err=True)
        sys.exit(1)
    try:
        if config.proxy.workers > 1:
            from siplb.supervisor import supervise

            sys.exit(supervise(config_path, config))
        sys.exit(run_loop(serve(config_path)))
    except OSError as exc:
        _cannot_start(exc, log_target)


def _cannot_start(exc: OSError, log_target: str) -> NoReturn:
    """A listener that cannot be bound (a port in use ...): one line, exit 1, no traceback."""
    import logging

    from siplb.logs import log_fields

    log = logging.getLogger("siplb")
    fields = getattr(exc, "fields", {})  # a listener's name, transport and address
    log_fields(log, logging.ERROR, "cannot start: %s", exc, always=True, errno=exc.errno, **fields)
    if log_target != "stderr":  # the log went elsewhere: the terminal still hears why
        click.echo(f"siplb: {exc}", err=True)
    sys.exit(1)


@main.command()
@click.option(
    "-c",
    "--config",
    "config_path",
    required=True,
    type=click.Path(path_type=Path),
    help="The config file (TOML) to check.",
)
def check(config_path: Path) -> None:
    """Check a config file; list every problem with its path (exit 2 when there are any)."""
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        _print_problems(config_path, exc)
        sys.exit(2)
    dests = sum(len(spec.destinations) for spec in config.sets)
    names = sum(len(spec.names) for spec in config.sets)
    counts = [
        plural(len(config.listeners), "listener"),
        plural(len(config.sets), "set"),
        plural(dests, "destination"),
        *([plural(names, "DNS name")] if names else []),
        plural(len(config.routes), "route"),
    ]
    click.echo(f"{config_path}: ok ({', '.join(counts)})")
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
@click.option(
    "--admin-port",
    type=click.IntRange(0, 65535),
    default=8080,
    show_default=True,
    help="Admin API and dashboard on 127.0.0.1 (0: any free port); the token is printed.",
)
def demo(duration: float | None, cps: float, port: int, no_table: bool, admin_port: int) -> None:
    """Balancer plus three built-in demo PBXs on loopback, with test calls flowing, and its
    dashboard."""
    from siplb.demo import run_demo
    from siplb.io.driver import run_loop

    coroutine = run_demo(
        duration=duration, cps=cps, port=port, table=not no_table, admin_port=admin_port
    )
    sys.exit(run_loop(coroutine))


def _print_problems(path: Path, exc: ConfigError) -> None:
    click.echo(f"{path}: {plural(len(exc.problems), 'problem')}", err=True)
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


def _client(
    admin_url: str | None,
    token_file: Path | None,
    config_path: Path | None,
    *,
    broken_ok: bool = False,
) -> Any:
    """The admin client, at the address and with the token of ``config_path``'s [admin] (or
    the options'). ``broken_ok``: a file with problems elsewhere than [admin] still gives its
    admin address (``siplb reload`` lets the balancer refuse it, log it and count it)."""
    from siplb.admin.client import DEFAULT_URL, AdminClient, resolve_token

    config_url = config_token = None
    if config_path is not None:
        try:
            config = load_config(config_path)
        except ConfigError as exc:
            partial = exc.partial if broken_ok and _admin_sound(exc) else None
            if partial is None:
                _print_problems(config_path, exc)
                sys.exit(2)
            config = partial
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


def _admin_sound(exc: ConfigError) -> bool:
    """No problem of the file is about its [admin] section, nor about the whole file."""
    return all(p.path and p.path.split(".")[0].split("[")[0] != "admin" for p in exc.problems)


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
@click.argument("set_names", metavar="[SET]...", nargs=-1)
def status(
    admin_url: str | None,
    token_file: Path | None,
    config_path: Path | None,
    as_json: bool,
    set_names: tuple[str, ...],
) -> None:
    """Sets and destinations of a running balancer, as a table (like ipvsadm -L -n); with a
    cluster, its totals, its Redis link and its members too. Name sets to show only those."""
    from siplb.admin.client import format_cluster, format_status

    client = _client(admin_url, token_file, config_path)
    info = _call(client.status)
    sets = _only_sets(_call(client.sets), set_names)
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
    if info.get("media"):  # [media]: the engines (siplb.admin.media)
        from siplb.admin.media import format_media

        click.echo(format_media(info["media"], now))
    if cluster is not None:
        click.echo(format_cluster(cluster, now))


def _only_sets(sets: Any, names: tuple[str, ...]) -> Any:
    """The sets named (all without names); an unknown name ends the command (exit 1)."""
    if not names:
        return sets
    known = [entry["name"] for entry in sets]
    unknown = [name for name in names if name not in known]
    if unknown:
        click.echo(f"siplb: no set {', '.join(unknown)} (sets: {', '.join(known)})", err=True)
        sys.exit(1)
    return [entry for entry in sets if entry["name"] in names]


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
@click.argument("weight", type=click.IntRange(0, 1_000_000))
def dest_weight(
    admin_url: str | None,
    token_file: Path | None,
    config_path: Path | None,
    set_name: str,
    uri: str,
    weight: int,
) -> None:
    """Set URI's weight in SET (until the next reload); 0 takes it out of SET for new calls
    (its calls go on), any weight above 0 puts it back."""
    client = _client(admin_url, token_file, config_path)
    view = _call(lambda: client.set_weight(set_name, uri, weight))
    quiesced = " (no new calls in this set)" if view["weight"] == 0 else ""
    click.echo(f"{view['uri']} in {set_name}: weight {view['weight']}{quiesced}")


@main.command()
@_admin_options
def reload(admin_url: str | None, token_file: Path | None, config_path: Path | None) -> None:
    """Make a running balancer reload its config file (like SIGHUP); exit 2 if refused. The
    balancer judges the file: a refusal is logged, counted and kept in its journal."""
    from siplb.admin.client import AdminError

    client = _client(admin_url, token_file, config_path, broken_ok=True)
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
@click.option(
    "--limit",
    type=click.IntRange(0, 10_000),
    default=100,
    show_default=True,
    help="List at most this many bans.",
)
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
@click.option(
    "-c",
    "--config",
    "config_path",
    required=True,
    type=click.Path(path_type=Path),
    help="The config file with the [announce] table (and the [admin] address and token).",
)
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
