"""``siplb run | check | demo`` (DESIGN.md section 5)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import click

from siplb import __version__
from siplb.config import ConfigError, load_config


def _run_loop(coro: Coroutine[Any, Any, int]) -> int:
    """Run on uvloop when it is installed (DESIGN.md section 4), else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.run(coro)
    return int(uvloop.run(coro))


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
    from siplb.logs import setup_logging

    try:
        config = load_config(config_path)
    except ConfigError as exc:
        _print_problems(config_path, exc)
        sys.exit(2)
    setup_logging(log_level or config.log.level, log_format or config.log.format)
    try:
        sys.exit(_run_loop(serve(config_path)))
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
    click.echo(
        f"{config_path}: ok ({len(config.listeners)} listeners, {len(config.sets)} sets, "
        f"{dests} destinations, {len(config.routes)} routes)"
    )


@main.command()
@click.option("--duration", type=float, default=None, help="Stop after this many seconds.")
@click.option("--cps", type=float, default=4.0, show_default=True, help="Demo calls per second.")
@click.option("--port", type=int, default=5060, show_default=True, help="Balancer UDP port.")
@click.option("--no-table", is_flag=True, help="Print events only, no live table.")
def demo(duration: float | None, cps: float, port: int, no_table: bool) -> None:
    """Balancer plus three built-in demo PBXs on loopback, with test calls flowing."""
    from siplb.demo import run_demo

    sys.exit(_run_loop(run_demo(duration=duration, cps=cps, port=port, table=not no_table)))


def _print_problems(path: Path, exc: ConfigError) -> None:
    click.echo(f"{path}: {len(exc.problems)} problem(s)", err=True)
    for problem in exc.problems:
        where = problem.path or "(file)"
        click.echo(f"  {where}: {problem.message}", err=True)
