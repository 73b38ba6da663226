"""Bans pushed into kernel nftables sets, so a banned source costs the balancer nothing.

The admission stage decides bans (``SourceBanned``, ``BanLifted``); this shell mirrors them into
two sets of an inet table, one per address family, with ``flags timeout`` so the kernel forgets a
ban by itself when it runs out, even if siplb has died. The drop rule sits on the prerouting hook
at priority ``raw`` (-300): before connection tracking (-200), routing and the input hook, the
earliest point an inet table can reach. A banned packet makes no conntrack entry and never reaches
a socket.

Strategy:
- ``ban`` and ``unban`` only record the change (latest change per address wins) and wake the
  pusher; the pusher writes everything pending as one ``nft -f -`` transaction, then rests
  ``interval`` seconds, so a flood of bans costs one process every ~100 ms, not one per ban.
- Pending changes are bounded (``max_pending``); beyond it the oldest change is dropped and
  counted. The admission stage still drops what the kernel misses, only at a higher cost.
- Timeouts are refreshed with the add/delete/add idiom inside one transaction: ``add element``
  on an element that exists keeps its old timeout (kernels before 6.10), ``delete element`` of a
  missing element fails the whole transaction, and add-then-delete is valid either way. An unban
  is the same without the final add.
- Only IP literals reach nft, re-serialized by ``ipaddress``; table and set names are checked
  against a strict pattern. Nothing is passed through a shell.
- Failures are inputs, not exceptions: nft missing or no CAP_NET_ADMIN is logged once and turns
  the pusher off; a failing transaction is counted and logged once per run of failures. The
  balancer keeps running either way.

One pusher per host and table: ``close`` with ``create`` deletes the table, and with it every
ban, so that no drop rule outlives the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import math
import re
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from siplb.settings import NftablesSettings

log = logging.getLogger("siplb.nft")

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

INTERVAL = 0.1  # seconds between two transactions at most
MAX_PENDING = 10_000
MAX_TIMEOUT = 30 * 86400  # longer bans are pushed as 30 days; the admission stage keeps the rest
NFT_TIMEOUT = 10.0  # seconds one nft process may take
ELEMENTS_PER_STATEMENT = 1000
CHAIN = "prerouting"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,31}")  # nft: an identifier starts with no digit
_NOT_PERMITTED = "Operation not permitted"


@dataclass(frozen=True, slots=True)
class NftResult:
    ok: bool
    output: str
    error: str  # nft's stderr, or why it could not run
    fatal: bool  # no nft, or no permission: retrying cannot help


def parse_host(host: str) -> Address | None:
    """The address ``host`` names, an IPv4-mapped IPv6 address as IPv4; None when it is not an
    IP literal (a name, a zone-qualified address, garbage)."""
    try:
        address = ipaddress.ip_address(host.removeprefix("[").removesuffix("]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id is not None:
            return None
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
    return address


def timeout_seconds(seconds: float) -> int | None:
    """Whole seconds, rounded up and capped at MAX_TIMEOUT; None for a ban that is already over
    (or NaN)."""
    if not seconds > 0:
        return None
    return MAX_TIMEOUT if seconds >= MAX_TIMEOUT else math.ceil(seconds)


def setup_script(table: str, set4: str, set6: str, ports: Sequence[int]) -> str:
    """An idempotent transaction creating the table, both sets and the drop rules."""
    match = f" meta l4proto {{ tcp, udp }} th dport {{ {', '.join(map(str, ports))} }}"
    only = match if ports else ""
    return (
        f"add table inet {table}\n"
        f"add set inet {table} {set4} {{ type ipv4_addr; flags timeout; }}\n"
        f"add set inet {table} {set6} {{ type ipv6_addr; flags timeout; }}\n"
        f"add chain inet {table} {CHAIN} "
        "{ type filter hook prerouting priority raw; policy accept; }\n"
        f"flush chain inet {table} {CHAIN}\n"
        f"add rule inet {table} {CHAIN} ip saddr @{set4}{only} drop\n"
        f"add rule inet {table} {CHAIN} ip6 saddr @{set6}{only} drop\n"
    )


def changes_script(table: str, name: str, changes: Sequence[tuple[Address, int | None]]) -> str:
    """One set's changes (address, timeout in seconds, or None to unban) as add/delete/add."""
    lines: list[str] = []
    for start in range(0, len(changes), ELEMENTS_PER_STATEMENT):
        chunk = changes[start : start + ELEMENTS_PER_STATEMENT]
        every = ", ".join(str(address) for address, _ in chunk)
        lines.append(f"add element inet {table} {name} {{ {every} }}")
        lines.append(f"delete element inet {table} {name} {{ {every} }}")
        bans = [f"{address} timeout {seconds}s" for address, seconds in chunk if seconds]
        if bans:
            lines.append(f"add element inet {table} {name} {{ {', '.join(bans)} }}")
    return "".join(line + "\n" for line in lines)


class NftBans:
    """Mirrors bans into the kernel sets named by ``[protection.nftables]``.

        bans = NftBans(settings.protection.nftables, ports=(5060, 5061))
        await bans.start()                 # logs and stays off on any problem
        bans.ban("192.0.2.7", 60.0)        # on SourceBanned; queued, never blocks
        bans.unban("192.0.2.7")            # on BanLifted
        await bans.close()                 # with create: the table is deleted

    ``ports`` limits the drop rule to TCP and UDP packets to these ports (when the table is
    created here); empty drops everything from a banned source. ``nft`` is the binary, found on
    PATH (or /usr/sbin) when None.
    """

    def __init__(
        self,
        settings: NftablesSettings,
        *,
        ports: Iterable[int] = (),
        nft: str | None = None,
        interval: float = INTERVAL,
        max_pending: int = MAX_PENDING,
    ) -> None:
        self._settings = settings
        self._ports = tuple(sorted(set(ports)))
        self._nft = nft or shutil.which("nft") or "/usr/sbin/nft"
        self._interval = interval
        self._max_pending = max_pending
        self._pending: dict[Address, int | None] = {}
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._enabled = False
        self._closing = False
        self._failing = False
        self.pushed = 0  # changes the kernel accepted
        self.failed = 0  # changes in transactions nft refused
        self.dropped_from_queue = 0  # changes dropped because too many were pending

    @property
    def enabled(self) -> bool:
        """True from a successful ``start`` until ``close`` or a fatal error."""
        return self._enabled

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def start(self) -> None:
        settings = self._settings
        if not settings.enabled or self._enabled or self._closing:
            return
        names = (settings.table, settings.set4, settings.set6)
        bad = [name for name in names if not _NAME.fullmatch(name)]
        if bad:
            self._disable(f"invalid table or set name {bad[0]!r}")
            return
        if settings.create:
            script = setup_script(settings.table, settings.set4, settings.set6, self._ports)
            result = await self._run("-f", "-", script=script)
            problem = (
                None if result.ok else f"cannot create table inet {settings.table}: {result.error}"
            )
        else:
            problem = await self._check_sets()
        if problem is not None:
            self._disable(problem)
            return
        self._enabled = True
        self._task = asyncio.create_task(self._pusher(), name="siplb-nft")
        log.info(
            "bans are pushed into nftables sets inet %s %s, %s",
            settings.table,
            settings.set4,
            settings.set6,
        )

    def ban(self, host: str, seconds: float) -> None:
        """Queue a ban of ``host`` for ``seconds`` (rounded up); a new ban resets the timeout."""
        timeout = timeout_seconds(seconds)
        if timeout is not None:
            self._queue(host, timeout)

    def unban(self, host: str) -> None:
        self._queue(host, None)

    async def close(self) -> None:
        """Stop the pusher. With ``create`` delete the table (pending changes go with it);
        without, push what is pending first."""
        if self._closing:
            return
        self._closing = True
        if self._settings.create:
            self._pending.clear()
        if self._task is not None:
            self._wakeup.set()
            await self._task
            self._task = None
        if self._enabled:
            await self._flush()
            if self._settings.create:
                result = await self._run("delete", "table", "inet", self._settings.table)
                if not result.ok:
                    log.warning(
                        "nftables: cannot delete table inet %s: %s",
                        self._settings.table,
                        result.error,
                    )
        self._enabled = False

    # --- queue and pusher ---------------------------------------------------------------------

    def _queue(self, host: str, timeout: int | None) -> None:
        if not self._enabled or self._closing:
            return
        address = parse_host(host)
        if address is None:
            return
        self._pending.pop(address, None)  # re-inserted at the end: it is the newest change
        self._pending[address] = timeout
        if len(self._pending) > self._max_pending:
            del self._pending[next(iter(self._pending))]
            self.dropped_from_queue += 1
        self._wakeup.set()

    async def _pusher(self) -> None:
        while self._enabled and not self._closing:
            await self._wakeup.wait()
            self._wakeup.clear()
            await self._flush()
            if not self._closing:
                await asyncio.sleep(self._interval)

    async def _flush(self) -> None:
        if not self._pending or not self._enabled:
            return
        changes, self._pending = list(self._pending.items()), {}
        v4 = [(a, t) for a, t in changes if isinstance(a, ipaddress.IPv4Address)]
        v6 = [(a, t) for a, t in changes if isinstance(a, ipaddress.IPv6Address)]
        settings = self._settings
        script = changes_script(settings.table, settings.set4, v4) + changes_script(
            settings.table, settings.set6, v6
        )
        result = await self._run("-f", "-", script=script)
        if result.ok:
            self.pushed += len(changes)
            if self._failing:
                log.info("nftables: bans are pushed again")
            self._failing = False
            return
        self.failed += len(changes)
        if result.fatal:
            self._disable(f"cannot update the sets: {result.error}")
        elif not self._failing:
            log.warning("nftables: cannot update the sets (logged once): %s", result.error)
        self._failing = True

    def _disable(self, problem: str) -> None:
        self._enabled = False
        self._pending.clear()
        log.error("nftables: %s; bans stay in siplb only", problem)

    # --- nft ----------------------------------------------------------------------------------

    async def _check_sets(self) -> str | None:
        """Without ``create``: what is missing or wrong about the two sets, or None."""
        settings = self._settings
        for name, kind in ((settings.set4, "ipv4_addr"), (settings.set6, "ipv6_addr")):
            where = f"set inet {settings.table} {name}"
            result = await self._run("-j", "-t", "list", "set", "inet", settings.table, name)
            if not result.ok:
                reason = "missing" if "No such file" in result.error else result.error
                return f"{where}: {reason} (create it or set create = true)"
            found = _set_description(result.output)
            flags = found.get("flags")
            if found.get("type") != kind or not isinstance(flags, list) or "timeout" not in flags:
                return f"{where} must be `type {kind}; flags timeout;`"
        return None

    async def _run(self, *args: str, script: str | None = None) -> NftResult:
        try:
            process = await asyncio.create_subprocess_exec(
                self._nft,
                *args,
                stdin=asyncio.subprocess.PIPE if script is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            return NftResult(False, "", f"cannot run {self._nft}: {exc}", fatal=True)
        data = script.encode() if script is not None else None
        try:
            out, err = await asyncio.wait_for(process.communicate(data), NFT_TIMEOUT)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            return NftResult(False, "", f"{self._nft} took over {NFT_TIMEOUT:g} s", fatal=False)
        error = " ".join(err.decode(errors="replace").split())
        ok = process.returncode == 0
        fatal = not ok and _NOT_PERMITTED in error
        if fatal:
            error = f"no CAP_NET_ADMIN? {error}"
        return NftResult(ok, out.decode(errors="replace"), error, fatal)


def _set_description(output: str) -> dict[str, object]:
    """The ``set`` object of ``nft -j list set`` output, or an empty dict."""
    try:
        items = json.loads(output)["nftables"]
    except (ValueError, KeyError, TypeError):
        return {}
    for item in items:
        if isinstance(item, dict) and isinstance(item.get("set"), dict):
            found: dict[str, object] = item["set"]
            return found
    return {}
