"""``siplb bond client | server | status | check | key``: the multi-link relay's commands."""

from __future__ import annotations

import json
import secrets
import sys
from pathlib import Path

import click

from siplb.cli_help import HelpGroup
from siplb.config import ConfigError
from siplb.words import plural

CONFIG = click.option(
    "-c",
    "--config",
    "config_path",
    required=True,
    type=click.Path(path_type=Path),
    help="The bond config file (TOML).",
)
LOG_LEVEL = click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
    help="The least severe level logged.",
)
LOG_FORMAT = click.option(
    "--log-format",
    type=click.Choice(["human", "json"]),
    default="human",
    show_default=True,
    help="Log lines for people or one JSON object a line.",
)


@click.group(cls=HelpGroup)
def bond() -> None:
    """Multi-link bonding: carry UDP flows (SIP, RTP) over several uplinks."""


def _fail(path: Path, exc: ConfigError) -> None:
    click.echo(f"{path}: {plural(len(exc.problems), 'problem')}", err=True)
    for problem in exc.problems:
        click.echo(f"  {problem.path or '(file)'}: {problem.message}", err=True)
    sys.exit(2)


def _run(kind: str, config_path: Path, log_level: str, log_format: str) -> None:
    from siplb.config.bond import BondClientConfig, load_client, load_server
    from siplb.io.bond import ClientRelay, ServerRelay, run
    from siplb.logs import setup_logging

    setup_logging(log_level, log_format)
    try:
        config = load_client(config_path) if kind == "client" else load_server(config_path)
    except ConfigError as exc:
        _fail(config_path, exc)
        return
    try:
        if isinstance(config, BondClientConfig):
            client = config
            run(lambda loop: ClientRelay(loop, client), config.status)
        else:
            server = config
            run(lambda loop: ServerRelay(loop, server), config.status)
    except OSError as exc:
        click.echo(f"siplb bond {kind}: {exc}", err=True)
        sys.exit(1)


@bond.command()
@CONFIG
@LOG_LEVEL
@LOG_FORMAT
def client(config_path: Path, log_level: str, log_format: str) -> None:
    """Run the site's end: local ports in, every link out (SIGTERM stops)."""
    _run("client", config_path, log_level, log_format)


@bond.command()
@CONFIG
@LOG_LEVEL
@LOG_FORMAT
def server(config_path: Path, log_level: str, log_format: str) -> None:
    """Run the far end: clients' links in, each flow to its target (SIGTERM stops)."""
    _run("server", config_path, log_level, log_format)


@bond.command()
@CONFIG
@click.option("--server", "as_server", is_flag=True, help="The file is a server's.")
def check(config_path: Path, as_server: bool) -> None:
    """Check a bond config file; list every problem with its path (exit 2 when there are any)."""
    from siplb.config.bond import load_client, load_server

    try:
        if as_server:
            found = load_server(config_path)
            counts = f"{plural(len(found.keys), 'client')}, {plural(len(found.flows), 'flow')}"
            click.echo(f"{config_path}: ok ({counts})")
        else:
            mine = load_client(config_path)
            counts = f"{plural(len(mine.links), 'link')}, {plural(len(mine.flows), 'flow')}"
            click.echo(f"{config_path}: ok ({counts})")
    except ConfigError as exc:
        _fail(config_path, exc)


@bond.command()
def key() -> None:
    """Print a new random key (64 hex digits) for a client and its server."""
    click.echo(secrets.token_hex(32))


@bond.command()
@click.option(
    "--address",
    default="127.0.0.1:4601",
    show_default=True,
    help="The relay's status address (a server's default is 127.0.0.1:4611).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the JSON instead of a table.")
def status(address: str, as_json: bool) -> None:
    """Per link: state, RTT, loss, bytes and packets; and datagrams recovered by parity."""
    from siplb.io.bond import fetch_status

    host, _, port = address.rpartition(":")
    try:
        body = json.loads(fetch_status(host.strip("[]"), int(port)))
    except (OSError, ValueError) as exc:
        click.echo(f"siplb bond status: {address}: {exc}", err=True)
        sys.exit(1)
    if as_json:
        click.echo(json.dumps(body, indent=2))
        return
    peers = body["clients"] if body["role"] == "server" else [body]
    for peer in peers:
        click.echo(
            f"client {peer['client']}: delivered {peer['delivered']}, recovered "
            f"{peer['recovered']}, duplicates {peer['duplicates']}, dropped {peer['dropped']}"
        )
        click.echo(
            f"  {'link':<10} {'state':<5} {'rtt ms':>7} {'loss':>6} {'sent':>12} {'received':>12}"
        )
        for link in peer["links"]:
            rtt = "-" if link["rtt_ms"] is None else f"{link['rtt_ms']:.1f}"
            click.echo(
                f"  {link['name']:<10} {link['state']:<5} {rtt:>7} {link['loss']:>6.1%} "
                f"{link['bytes_sent']:>12} {link['bytes_received']:>12}"
            )
