"""The admin API's client side, for ``siplb status``, ``siplb dest ...``, ``siplb reload``,
``siplb health`` and ``siplb node ...``: a few blocking HTTP requests (standard library only)
and the ``ipvsadm -L -n`` style table."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

DEFAULT_URL = "http://127.0.0.1:8080"
ENV_URL = "SIPLB_ADMIN"
ENV_TOKEN = "SIPLB_ADMIN_TOKEN"
ENV_TOKEN_FILE = "SIPLB_ADMIN_TOKEN_FILE"


class AdminError(Exception):
    """The API refused a request or could not be reached; ``status`` 0 means unreachable."""

    def __init__(self, status: int, message: str, body: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.body = body


@dataclass(frozen=True, slots=True)
class AdminClient:
    url: str = DEFAULT_URL
    token: str | None = None
    timeout: float = 10.0

    def request(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url.rstrip("/") + path, data=data, method=method)
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                payload = json.loads(raw)
            except json.JSONDecodeError:
                payload = {"error": raw.decode(errors="replace").strip() or exc.reason}
            message = payload.get("error") if isinstance(payload, dict) else None
            raise AdminError(exc.code, str(message or exc.reason), payload) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise AdminError(0, f"cannot reach the admin API at {self.url}: {reason}") from None

    def status(self) -> Any:
        return self.request("GET", "/api/status")

    def sets(self) -> Any:
        return self.request("GET", "/api/sets")["sets"]

    def destination_action(self, set_name: str, uri: str, action: str) -> Any:
        return self.request("POST", f"{_dest_path(set_name, uri)}/{action}")

    def set_weight(self, set_name: str, uri: str, weight: int) -> Any:
        return self.request("PUT", f"{_dest_path(set_name, uri)}/weight", {"weight": weight})

    def reload(self) -> Any:
        return self.request("POST", "/api/reload")

    def cluster(self) -> Any:
        return self.request("GET", "/api/cluster")

    def health(self) -> Any:
        """``GET /api/health``: its JSON whether the node is healthy (200) or not (503)."""
        return self._health("GET", "/api/health")

    def drain_node(self, on: bool) -> Any:
        """``POST /api/node``: the node's health after the change (200 or 503 alike)."""
        return self._health("POST", "/api/node", {"drain": on})

    def _health(self, method: str, path: str, body: Any = None) -> Any:
        try:
            return self.request(method, path, body)
        except AdminError as exc:
            if exc.status == 503 and isinstance(exc.body, dict) and "healthy" in exc.body:
                return exc.body
            raise


def _dest_path(set_name: str, uri: str) -> str:
    return f"/api/sets/{quote(set_name, safe='')}/destinations/{quote(uri, safe='')}"


def resolve_token(token_file: Path | None, config_token: str | None = None) -> str | None:
    """``--token-file``, else $SIPLB_ADMIN_TOKEN, else $SIPLB_ADMIN_TOKEN_FILE, else the
    config's token. Raises OSError for an unreadable file."""
    if token_file is not None:
        return _first_line(token_file)
    if os.environ.get(ENV_TOKEN):
        return os.environ[ENV_TOKEN].strip()
    if os.environ.get(ENV_TOKEN_FILE):
        return _first_line(Path(os.environ[ENV_TOKEN_FILE]))
    return config_token


def _first_line(path: Path) -> str | None:
    lines = path.read_text(encoding="utf-8").strip().splitlines()
    return lines[0].strip() if lines else None


# ---- the status table -----------------------------------------------------------------------
COLUMNS = (
    ("State", 9, "<"),
    ("Weight", 6, ">"),
    ("Prio", 4, ">"),
    ("ActiveCalls", 11, ">"),
    ("Max", 5, ">"),
    ("CPS", 7, ">"),
    ("Latency(ms)", 15, ">"),
    ("Fails", 5, ">"),
    ("Since", 8, ">"),
)


def format_status(status: Any, sets: Any, now: float, protection: Any = None) -> str:
    """``siplb status``: a header, then each set and its destinations (like ``ipvsadm -L -n``);
    with ``protection`` (``GET /api/protection``) a line about refusals and bans."""
    lines = [
        f"siplb {status['version']} node {status['node_id']}, up {format_duration(status['uptime_s'])}, "
        f"config {status['config']['file']} (sha256 {status['config']['sha256'][:12]})",
        "Listeners: "
        + ", ".join(f"{item['transport']} {item['address']}" for item in status["listeners"]),
    ]
    totals = status["totals"]
    lines.append(
        f"Calls: {totals['active_calls']} active, {totals['cps']:.1f}/s; "
        f"transactions {totals['transactions']['server'] + totals['transactions']['client']}"
        + ("" if status["accepting"] else "; STOPPING (no new calls)")
    )
    if protection is not None:
        lines.append(format_protection(protection))
    width = max([34, *(len(d["uri"]) + 5 for s in sets for d in s["destinations"])])
    attrs = any(d.get("attrs") for s in sets for d in s["destinations"])
    columns = (*COLUMNS, ATTRS) if attrs else COLUMNS
    head = "  -> Destination".ljust(width) + _row(columns, (name for name, _, _ in columns))
    lines += ["Set Algorithm", head]
    for entry in sets:
        suffix = " (removed by reload)" if entry["removed"] else ""
        lines.append(f"{entry['name']} {entry['algorithm'] or '-'}{suffix}")
        for dest in entry["destinations"]:
            cells = _cells(dest, now) + ([format_attrs(dest.get("attrs"))] if attrs else [])
            lines.append(f"  -> {dest['uri']}".ljust(width) + _row(columns, cells))
    lines.append(_totals(sets, width))
    return "\n".join(lines)


ATTRS = ("Attrs", 0, "<")
ATTRS_WIDTH = 40  # longer attrs are cut in the table; ``--json`` has them whole


def format_attrs(attrs: Any) -> str:
    """A destination's attrs as ``key=value`` pairs, cut to ``ATTRS_WIDTH``; "-" for none."""
    if not attrs:
        return "-"
    text = ",".join(f"{key}={value}" for key, value in attrs.items())
    return text if len(text) <= ATTRS_WIDTH else text[: ATTRS_WIDTH - 3] + "..."


def _totals(sets: Any, width: int) -> str:
    """The totals row: each destination counted once (a URI in two sets has one count of
    calls), with how many of them take calls."""
    unique = {d["uri"]: d for entry in sets for d in entry["destinations"]}.values()
    up = sum(1 for d in unique if d["state"] in ("up", "suspect"))
    cells = ["", "", "", str(sum(d["active_calls"] for d in unique)), ""]
    cells += [f"{sum(d['cps'] for d in unique):.2f}", "", str(sum(d["failures"] for d in unique))]
    label = f"  = Total: {len(unique)} destinations, {up} up"
    return label.ljust(width) + _row(COLUMNS[:8], cells)


def _cells(dest: Any, now: float) -> list[str]:
    latency = dest["latency_ms"]
    shown = f"{latency['avg']:.3f}/{latency['p95']:.3f}" if latency else "-"
    max_calls = dest["max_calls"]
    return [
        dest["state"],
        str(dest["weight"]),
        str(dest["priority"]),
        str(dest["active_calls"]),
        "-" if max_calls is None else str(max_calls),
        f"{dest['cps']:.2f}",
        shown,
        str(dest["failures"]),
        format_duration(max(0.0, now - dest["since"])),
    ]


def _row(columns: Any, cells: Any) -> str:
    out = []
    for (_, width, align), cell in zip(columns, cells, strict=True):
        out.append(cell.ljust(width) if align == "<" else cell.rjust(width))
    return " ".join(out).rstrip()


def format_duration(seconds: float) -> str:
    s = int(seconds)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{s:02d}s"
    return f"{s}s"


# ---- protection -------------------------------------------------------------------------------
TOP_REASONS = 4  # reasons named on the status line; the rest are summed


def format_protection(body: Any) -> str:
    """``siplb status``'s protection line: refusals by their top reasons, bans, pending."""
    refused: dict[str, int] = body["refused"]
    total = body["refused_total"]
    top = sorted(refused.items(), key=lambda item: -item[1])
    reasons = [f"{reason} {count}" for reason, count in top[:TOP_REASONS]]
    rest = sum(count for _, count in top[TOP_REASONS:])
    if rest:
        reasons.append(f"other {rest}")
    shown = f" ({', '.join(reasons)})" if reasons else ""
    bans = body["bans_active"]
    pending = body["pending"]["transactions"]
    line = (
        f"Protection: {total} refused{shown}; {bans} ban{'' if bans == 1 else 's'} in force; "
        f"{pending} pending transaction{'' if pending == 1 else 's'}"
    )
    streams = body["streams"]["refused"]
    if streams:
        line += f"; {sum(streams.values())} stream connections refused"
    return line


BAN_COLUMNS = (("Host", 39, "<"), ("Reason", 20, "<"), ("Left", 8, ">"), ("Offences", 8, ">"))


def format_bans(body: Any) -> str:
    """``siplb bans``: one line per ban in force, the one ending first first."""
    bans = body["bans"]
    count = body["bans_active"]
    head = f"{count} ban{'' if count == 1 else 's'} in force"
    if len(bans) < count:
        head += f" ({len(bans)} ending first shown)"
    lines = [head]
    if bans:
        lines.append(_row(BAN_COLUMNS, (name for name, _, _ in BAN_COLUMNS)))
        for ban in bans:
            left = format_duration(ban["seconds_left"])
            lines.append(
                _row(BAN_COLUMNS, (ban["host"], ban["reason"], left, str(ban["offences"])))
            )
    return "\n".join(lines)


# ---- the cluster ------------------------------------------------------------------------------
MEMBER_COLUMNS = (
    ("Member", 14, "<"),
    ("Alive", 5, "<"),
    ("LastSeen", 8, ">"),
    ("Calls", 6, ">"),
    ("Peer", 21, "<"),
    ("Config", 13, "<"),
    ("Up", 8, ">"),
)


def format_cluster(body: Any, now: float) -> str:
    """``siplb status``'s cluster lines (``GET /api/cluster`` with a cluster): the totals, the
    Redis link, then one row per member; a config other than this member's is marked ``*``."""
    totals = body["totals"]
    nodes, members = totals["nodes"], totals["members"]
    line = (
        f"Cluster: {nodes} node{'' if nodes == 1 else 's'} live "
        f"({members} member{'' if members == 1 else 's'}), "
        f"{totals['calls']} call{'' if totals['calls'] == 1 else 's'} in the cluster; "
        f"this is {body['me']}"
    )
    if totals.get("skewed"):
        line += f"; CONFIG SKEW: {totals['skewed']} member(s) run another config"
    lines = [line, format_redis(body["redis"])]
    lines.append("  " + _row(MEMBER_COLUMNS, (name for name, _, _ in MEMBER_COLUMNS)))
    lines.extend("  " + _row(MEMBER_COLUMNS, _member_cells(m, now)) for m in body["members"])
    return "\n".join(lines)


def format_redis(redis: Any) -> str:
    if redis["up"]:
        return f"Redis: up ({redis['where']}); {redis['errors']} failed batches"
    error = f": {redis['last_error']}" if redis["last_error"] else ""
    return (
        f"Redis: DOWN ({redis['where']}{error}); balancing on the last state known, "
        f"{redis['errors']} failed batches"
    )


def _member_cells(member: Any, now: float) -> list[str]:
    seen = member["last_seen"]
    started = member["started"]
    config = member["config_hash"][:12] or "-"
    if member.get("config_matches") is False:
        config += "*"
    return [
        member["member"],
        "yes" if member["alive"] else "no",
        "-" if seen is None else f"{seen:.1f}s",
        str(member["calls"]),
        member["peer"] or "-",
        config,
        "-" if started is None else format_duration(max(0.0, now - started)),
    ]
