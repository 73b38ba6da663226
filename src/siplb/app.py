"""Composition root (docs/design.md section 2): builds the proxy core from a config, wires it to its
sockets through ``siplb.io.driver``, reloads it, performs the operators' actions, shuts it down.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import signal
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from ipaddress import ip_network
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from siplb.admin.journal import Recorder
from siplb.admin.reloads import ReloadOutcome, diff_sets, restart_warnings
from siplb.admin.view import (
    ChannelCounts,
    ClusterDestination,
    ClusterReading,
    MemberReading,
    RedisReading,
    destinations,
)
from siplb.admin.view import DestinationView as DestinationView  # siplb.demo reads it here
from siplb.admin.views import display_state
from siplb.cluster import Ownership
from siplb.cluster.setups import CallNote, Setup, SetupEnded
from siplb.config import Config, ConfigError, load_config
from siplb.dispatch import AdminState, DestinationSpec, SetSpec, State, StateChanged
from siplb.dispatch.accounting import DialogChanges
from siplb.dispatch.names import NameReading, expand, ip_version, keep_weights, queries
from siplb.io.capture import Capture
from siplb.io.cluster import ClusterLink
from siplb.io.driver import Driver
from siplb.io.media import MediaControl
from siplb.io.nft import NftBans
from siplb.io.resolver import NameResolver
from siplb.io.tls import client_context, server_context
from siplb.io.udp import bind_udp, interface_addresses, local_address_for
from siplb.logs import ListenerError, event_fields, log_fields
from siplb.media.engines import MediaView
from siplb.proxy.actions import (
    CallsExpired,
    FailedOver,
    HandOver,
    MessageDropped,
    OverloadChanged,
    PassiveObserved,
    PhoneReachable,
    PhoneUnreachable,
    RegistrarLacksPath,
    RequestRejected,
    Target,
)
from siplb.proxy.admission import BanLifted, SourceBanned
from siplb.proxy.core import Proxy
from siplb.proxy.keepalive import BindingChanges, Shared
from siplb.proxy.listeners import (
    HostAddress,
    Listener,
    expand_wildcard,
    is_wildcard,
    same_interface,
    serves,
    wildcard_addresses,
)
from siplb.proxy.multihome import SourceRouting
from siplb.settings import CaptureSettings, ListenerSettings, ProtectionSettings
from siplb.sip import Limits
from siplb.view import ProxyView
from siplb.words import plural

if TYPE_CHECKING:
    from siplb.admin.server import AdminServer

log = logging.getLogger("siplb")

MAX_LISTENERS = 250  # a wildcard serves at most this many addresses (the worker channel's limit)
RECHECK = 10.0  # seconds before an address found not local is asked about again
START_WAIT = 3  # at start, the first DNS answers are waited for this many [dns] timeouts


class Peers(Protocol):
    """The other processes of this host that must hear what happens here (``workers = N``)."""

    def event(self, event: object) -> None:
        """Every event the core reported (bans, passive observations for another member)."""

    def weight_changed(self, set_name: str, uri: str, weight: int, cause: str) -> None: ...

    def reloaded(self, trigger: str, outcome: ReloadOutcome) -> None: ...

    def unbanned(self, host: str) -> None: ...

    def counters(self) -> list[dict[str, Any]]:
        """Every process's traffic counters (``BalancerView.worker_counters``)."""


class Balancer:
    """One proxy core built from a config and run on its sockets by a ``Driver``; with
    ``admin=True`` also the admin server (JSON API, dashboard, metrics) on ``[admin] listen``,
    which reads it as a ``siplb.admin.view.BalancerView``.

    ``config_path`` is the file a reload (SIGHUP, ``POST /api/reload``) reads again. One process
    of several (``workers = N``, ``siplb.workers``) is given its UDP sockets (``udp_sockets``:
    listener index -> bound socket), whether it serves the stream listeners, probes and pushes
    bans into the kernel, its share of each per-source rate budget (``rate_share``: 1/N), where
    datagrams owned by another member go (``on_handover``), what looks at the core after each
    flush (``after_flush``) and who else must hear what happens here (``peers``).
    """

    def __init__(
        self,
        config: Config,
        *,
        worker: int = 0,
        admin: bool = False,
        config_path: Path | None = None,
        udp_sockets: Mapping[int, socket.socket] | None = None,
        streams: bool = True,
        probing: bool = True,
        pushes_bans: bool = True,
        rate_share: int = 1,
        on_handover: Callable[[HandOver], None] | None = None,
        after_flush: Callable[[], None] | None = None,
        peers: Peers | None = None,
    ) -> None:
        self.config = config
        self.started_config = config  # what listeners and sockets were built from
        self.worker = worker
        self.config_path = config_path
        self.loop = asyncio.get_running_loop()
        self.wall_offset = time.time() - Driver.now()  # the core's clock -> epoch seconds
        self.recorder = Recorder()
        self.with_admin = admin
        self.admin: AdminServer | None = None
        # destinations removed by a reload that still carry calls: uri -> (old set, old spec)
        self.retired_from: dict[str, tuple[str, DestinationSpec]] = {}
        self.proxy: Proxy | None = None
        self._view: ProxyView | None = None
        self.listeners: list[Listener] = []
        self.limits = Limits(
            config.limits.max_message_size, config.limits.max_headers, config.limits.max_line_length
        )
        self.driver = Driver(
            self.loop,
            self.limits,
            tcp=config.tcp,
            client_ssl=client_context(config.tls),
            on_event=self._on_event,
            on_handover=on_handover,
            after_flush=after_flush,
        )
        self.started_at = self.now()
        self.udp_sockets = udp_sockets
        self.streams = streams  # TCP and TLS listeners (one process of several serves them)
        self.probing = probing  # OPTIONS probes (one worker of several probes for all)
        self.pushes_bans = pushes_bans  # into the kernel's nftables sets (one of several)
        self.rate_share = rate_share
        self.peers = peers
        self.nft: NftBans | None = None
        self.link: ClusterLink | None = None  # [cluster]: this member's link to the others
        self.draining = False  # the node is drained: unhealthy, its calls finish, no new ones
        self.names: NameResolver | None = None  # destinations by DNS name (see their section)
        self.dns_sets: tuple[SetSpec, ...] = ()  # the sets the last answers made of the config
        self.name_admin: dict[tuple[str, str], AdminState] = {}  # (set, name) drained/disabled
        self.media: MediaControl | None = None  # [media]: the rtpengines (siplb.io.media)

    # ---- start and stop --------------------------------------------------------------------
    async def start(self) -> None:
        config = self.config
        for index, spec in enumerate(config.listeners):
            try:
                port = await self._open_listener(index, spec)
            except OSError as exc:
                self._close()
                raise ListenerError(index, spec.name, spec.transport, spec.address, exc) from exc
            advertise = spec.advertise
            listener = Listener(
                index,
                spec.transport,
                spec.host,
                port,
                advertise.host if advertise else None,
                advertise.port if advertise else None,
                spec.anycast,
            )
            self.listeners.append(listener)
            log_fields(
                log,
                logging.INFO,
                "listening on %s %s:%d",
                spec.transport,
                spec.host,
                port,
                listener=spec.name or index,
                transport=spec.transport,
                address=f"{spec.host}:{port}",
            )
        self._expand_wildcards()
        sets = await self._start_names(config)
        self.proxy = Proxy(
            listeners=self.listeners,
            sets=sets,
            routes=config.routes,
            default_set=config.default_set,
            settings=config.proxy,
            health=config.health,
            now=self.now(),
            limits=self.limits,
            worker=self.worker,
            probing=self.probing,
            registrar=config.registrar,
            protection=self._protection(config),
            caps=config.limits,
            listener_names=self._listener_names(),
            media=config.media,
        )
        # multi-homed hosts: a request leaves from the address the kernel routes it from
        self._route_lookup = functools.lru_cache(4096)(local_address_for)
        self.proxy.routing = self._source_routing()
        self._view = ProxyView(self.proxy, self.driver.pool)
        self._set_capture(config.capture)
        if config.media is not None:  # the core's media asks run on these engines
            self.media = MediaControl(config.media)
            await self.media.start()
            self.driver.media = self.media
        self.driver.run(self.proxy)
        if config.cluster is not None:
            self.link = link = ClusterLink(
                config.cluster,
                self,
                worker=self.worker,
                config_hash=config.config_hash,
                shared_hosts=sorted({lst.host for lst in self.listeners if lst.anycast}),
            )
            if self.anycast:  # any node may receive any datagram: hand it to its owner
                self.proxy.share_setups()
                self.driver.on_handover = self._hand_over
                self.driver.on_setups = link.tell_setups
            link.draining = self.draining
            await link.start()
        if self.with_admin and self.config.admin.enabled:
            await self._start_admin()
        if self.pushes_bans and config.protection.nftables.enabled:
            self.nft = NftBans(
                config.protection.nftables, ports=sorted({lst.port for lst in self.listeners})
            )
            await self.nft.start()

    async def _open_listener(self, index: int, spec: ListenerSettings) -> int:
        """Bind listener ``index``; returns its port (the system's choice when 0 was asked)."""
        pool = self.driver.pool
        if spec.transport == "udp":
            given = self.udp_sockets
            sock = (
                given[index]
                if given is not None
                else bind_udp(spec.host, spec.port, spec.recv_buffer, freebind=spec.anycast)
            )
            if is_wildcard(spec.host):  # its addresses: ``_expand_wildcards``
                return self.driver.open_wildcard(index, sock)
            return await self.driver.open_udp(index, sock)
        if not self.streams:
            return spec.port  # another process serves it; this one only names it
        if spec.transport == "tcp":
            return await pool.listen(spec.host, spec.port, index, "tcp")
        assert spec.tls is not None  # the config requires cert and key for tls
        context = server_context(spec.tls, verify_client=spec.verify_client)
        return await pool.listen(spec.host, spec.port, index, "tls", context)

    # ---- wildcard listeners (``siplb.proxy.listeners``) -----------------------------------------
    def _expand_wildcards(self) -> None:
        """Each wildcard UDP listener becomes one listener per address of the host (its own
        index names the first); an address added later gets one on its first datagram."""
        self.wildcard_of: dict[int, int] = {}  # listener index -> the wildcard listener serving it
        self._unserved: dict[str, float] = {}  # addresses found not local, and when
        wildcards = [
            lst for lst in self.listeners if lst.transport == "udp" and is_wildcard(lst.host)
        ]
        self.host_addresses: list[HostAddress] = []
        if not wildcards:
            return
        self.host_addresses = [(index, str(ip)) for index, ip in interface_addresses()]
        for wildcard in wildcards:
            addresses = wildcard_addresses(wildcard.host, self.host_addresses)
            if not addresses:
                raise OSError(f"listen {wildcard.host}: no address of its family on this host")
            expanded = expand_wildcard(wildcard, addresses, len(self.listeners))
            self.listeners[wildcard.index] = expanded[0]
            self.listeners.extend(expanded[1:])
            for listener in expanded:
                self.wildcard_of[listener.index] = wildcard.index
                self.driver.add_address(wildcard.index, listener.index, listener.host)
            log.info("udp %s:%d serves %s", wildcard.host, wildcard.port, ", ".join(addresses))
        self.driver.on_new_address = self._new_address

    def _listener_names(self) -> list[str | None]:
        """Each listener's ``[[listen]] name`` (a wildcard's addresses share its name)."""
        specs = self.started_config.listeners
        of = self.wildcard_of
        return [specs[of.get(lst.index, lst.index)].name for lst in self.listeners]

    def _source_routing(self) -> SourceRouting:
        """Multi-homed hosts: a request leaves from the address the kernel routes it from,
        except from an address of a wildcard on a one-interface host, where the address the
        request arrived on (or its Route named) is kept (``same_interface``)."""
        found = self.host_addresses
        keep = same_interface(found, 4) | same_interface(found, 6) if found else frozenset()
        served = {lst.host for lst in self.listeners if lst.index in self.wildcard_of}
        keep = keep & served
        lookup = self._route_lookup

        def routed_from(host: str) -> str | None:
            local = lookup(host)
            return None if local in keep else local

        return SourceRouting(self.listeners, routed_from if keep else lookup)

    def _new_address(self, wildcard: int, address: str) -> int | None:
        """A datagram to ``address`` on wildcard listener ``wildcard``, which has no listener
        for it: an address added to the host since start gets one (the kernel is asked, at
        most every ``RECHECK`` seconds an address; a broadcast address never gets one)."""
        proxy = self.proxy
        spec = self.started_config.listeners[wildcard]
        now = self.now()
        if proxy is None or len(self.listeners) >= MAX_LISTENERS or not serves(spec.host, address):
            return None
        # a broadcast address has no route to connect to (EACCES), a local address has one
        recent = now - self._unserved.get(address, -RECHECK) < RECHECK
        if recent or local_address_for(address) is None:
            if len(self._unserved) < MAX_LISTENERS:
                self._unserved[address] = now
            return None
        self._unserved.pop(address, None)
        listener = replace(self.listeners[wildcard], index=len(self.listeners), host=address)
        self.listeners.append(listener)
        self.wildcard_of[listener.index] = wildcard
        proxy.add_listener(listener, spec.name)
        self.driver.add_address(wildcard, listener.index, address)
        self.host_addresses = [(index, str(ip)) for index, ip in interface_addresses()]
        proxy.routing = self._source_routing()
        log.info("udp %s:%d serves %s too (a new address)", spec.host, listener.port, address)
        return listener.index

    async def _start_admin(self) -> None:
        from siplb.admin.server import AdminServer

        server = AdminServer(self)
        try:
            await server.start()
        except OSError as exc:
            self._close()
            host, port = self.config.admin.address
            raise OSError(exc.errno, f"admin listen {host}:{port}: {exc.strerror or exc}") from exc
        self.admin = server

    async def stop(self, grace: float | None = None) -> None:
        """Stop taking new calls, let transactions finish within the grace period, close."""
        proxy = self.proxy
        if proxy is not None:
            proxy.stop_accepting()
            deadline = self.now() + (self.config.proxy.grace_period if grace is None else grace)
            # the pure core has no future to await; its count is polled, bounded by the grace
            while proxy.busy and self.now() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            if proxy.busy:
                log.warning("stopping with %s still open", plural(proxy.busy, "transaction"))
        if self.link is not None:
            await self.link.stop(leave=True)  # the others take its share now, not in dead_after
            self.link = None
        await self._stop_names()
        if self.media is not None:
            self.driver.media = None
            await self.media.close()
            self.media = None
        self._close()
        if self.admin is not None:
            await self.admin.stop()
            self.admin = None
        if self.nft is not None:
            await self.nft.close()
            self.nft = None

    def _close(self) -> None:
        self._set_capture(None)
        self.driver.close()

    def _set_capture(self, settings: CaptureSettings | None) -> None:
        """``[capture]`` at start and on reload: started, moved to another collector or
        stopped (``siplb.io.capture``); its counters are the core's and go on."""
        capture = self.driver.capture
        if settings is not None and capture is not None:
            capture.reconfigure(settings)
            return
        if capture is not None:
            capture.close()
        if settings is not None:
            assert self.proxy is not None
            capture = Capture(self.loop, settings, self.proxy.stats)
        self.driver.set_capture(None if settings is None else capture)

    def _reload_media(self, config: Config) -> tuple[str, ...]:
        """``[media]`` on reload: engines and timeouts at once, the anchoring policy for new
        calls; adding or removing the table waits for a restart (the warning says so)."""
        anchor = self.proxy.media if self.proxy is not None else None
        if self.media is None or config.media is None or anchor is None:
            if (self.media is None) == (config.media is None):
                return ()
            return ("[media] added or removed: it takes effect when siplb restarts",)
        self.media.reconfigure(config.media)
        anchor.policy = config.media
        return ()

    def media_view(self) -> MediaView | None:
        """The engines and their calls (``/api/status``, ``/metrics``); None without
        ``[media]``."""
        return None if self.media is None else self.media.view()

    # ---- reload (SIGHUP and the admin API share this path) -----------------------------------
    def reload_file(self, trigger: str = "SIGHUP") -> ReloadOutcome:
        """Read the config file again and install it, or refuse it and keep the running one."""
        source = str(self.config_path) if self.config_path is not None else self.config.source
        if self.config_path is None:
            outcome = ReloadOutcome(False, source, problems=(("", "no config file to reload"),))
            self.recorder.reloaded(False, f"{outcome.summary()} ({trigger})")
            return outcome
        try:
            config = load_config(self.config_path)
        except ConfigError as exc:
            problems = tuple((problem.path, problem.message) for problem in exc.problems)
            outcome = ReloadOutcome(False, source, problems=problems)
            log_fields(
                log,
                logging.ERROR,
                "reload refused (%s), the running config stays:\n%s",
                trigger,
                exc,
                always=True,
                event="reload",
                ok=False,
                trigger=trigger,
            )
            self.recorder.reloaded(False, f"{outcome.summary()} ({trigger}): {outcome.listed()}")
            return outcome
        outcome = self.reload(config, trigger=trigger)
        if self.peers is not None:
            self.peers.reloaded(trigger, outcome)
        return outcome

    def reload(self, config: Config, *, trigger: str = "reload") -> ReloadOutcome:
        """Install a new config's sets and route rules at once; calls and transactions in
        progress keep their destinations, a removed destination drains. Listeners and the other
        sections stay as they are until a restart (the outcome warns about them)."""
        proxy = self.proxy
        assert proxy is not None
        old_sets = proxy.dispatcher.sets()
        sets = self._reload_names(config)
        added, removed, reweighted = diff_sets(old_sets, sets)
        warnings = restart_warnings(self.started_config, config)
        proxy.reconfigure(
            sets=sets,
            routes=config.routes,
            default_set=config.default_set,
            now=self.now(),
        )
        self._note_retiring(old_sets)
        proxy.reconfigure_protection(self._protection(config), self.now())
        self._set_capture(config.capture)
        warnings += self._reload_media(config)
        self.config = config
        outcome = ReloadOutcome(
            True,
            config.source,
            config.digest,
            added=added,
            removed=removed,
            reweighted=reweighted,
            warnings=warnings,
        )
        self.driver.flush()
        log_fields(
            log,
            logging.INFO,
            "%s (%s)",
            outcome.summary(),
            trigger,
            always=True,
            event="reload",
            ok=True,
            trigger=trigger,
            added=list(added),
            removed=list(removed),
            reweighted=list(reweighted),
        )
        for warning in warnings:
            log_fields(log, logging.WARNING, "reload: %s", warning, always=True, event="reload")
        self.recorder.reloaded(True, f"{outcome.summary()} ({trigger})")
        if self.admin is not None:
            self.admin.config_changed()
        return outcome

    def _trust_draining(self, protection: ProtectionSettings) -> ProtectionSettings:
        """Destinations removed (by a reload or a DNS answer) that still carry calls stay
        trusted hosts until the next change after their last call: their dialogs' other
        side may still send to them (BYE), and is no destination itself."""
        hosts = sorted({spec.host for _, spec in self.retired_from.values()})
        if not hosts:
            return protection
        extra = tuple(ip_network(host) for host in hosts)
        return replace(protection, trusted=(*protection.trusted, *extra))

    def _note_retiring(self, old_sets: tuple[SetSpec, ...]) -> None:
        retiring = self.proxy.dispatcher.retiring() if self.proxy is not None else frozenset()
        for spec in old_sets:
            for dest in spec.destinations:
                if dest.uri in retiring:
                    self.retired_from.setdefault(dest.uri, (spec.name, dest))
        for uri in [u for u in self.retired_from if u not in retiring]:
            del self.retired_from[uri]

    # ---- destinations by DNS name (RFC 3263): siplb.dispatch.names, siplb.io.resolver ----------
    # A name's addresses join its set as destinations of their own (the rules are in
    # siplb.dispatch.names). At start the first answers are waited for, at most a few
    # ``[dns] timeout``; a name still without one starts with no destination and gets them when
    # DNS answers. A later change of an answer is installed like a reload (Proxy.reconfigure):
    # new addresses join, gone ones drain their calls. A reload expands its sets with the
    # answers in hand and looks up its new names at once. ``[dns]`` itself needs a restart.
    async def _start_names(self, config: Config) -> tuple[SetSpec, ...]:
        wanted = queries(config.sets)
        if wanted:
            names = self._name_resolver()
            names.track(wanted)
            await names.refresh(within=START_WAIT * config.dns.timeout)
            names.start()
        self.dns_sets = self._expand(config)
        return self.dns_sets

    def _reload_names(self, config: Config) -> tuple[SetSpec, ...]:
        wanted = queries(config.sets)
        if wanted or self.names is not None:
            names = self._name_resolver()
            names.track(wanted)  # answers kept for the names that stay, new ones looked up now
            if not names.running:
                names.start()
        self.dns_sets = self._expand(config)
        return self.dns_sets

    def _name_resolver(self) -> NameResolver:
        if self.names is None:
            self.names = NameResolver(self.started_config.dns, self.loop.time, self.dns_changed)
        return self.names

    def _expand(self, config: Config) -> tuple[SetSpec, ...]:
        answers = {} if self.names is None else self.names.table.answers()
        # the IP versions there is a listener to send from ("::" is dual-stack)
        hosts = [spec.host for spec in self.started_config.listeners]
        versions = frozenset(v for h in hosts for v in ((4, 6) if h == "::" else (ip_version(h),)))
        return expand(config.sets, answers, versions)

    def dns_changed(self) -> None:
        """Some name's answer changed: its new addresses join its set, the ones gone drain (as
        in a reload); an operator's weight stays where the answer leaves the weight alone."""
        proxy = self.proxy
        if proxy is None:
            return
        before, self.dns_sets = self.dns_sets, self._expand(self.config)
        old_sets = proxy.dispatcher.sets()
        sets = keep_weights(old_sets, before, self.dns_sets)
        if sets == old_sets:
            return
        added, removed, reweighted = diff_sets(old_sets, sets)
        now = self.now()
        proxy.reconfigure(sets=sets, routes=proxy.routes, default_set=proxy.default_set, now=now)
        self._note_retiring(old_sets)
        proxy.reconfigure_protection(self._protection(self.config), now)
        self._name_admin_to_new(old_sets, sets)
        self.driver.flush()
        parts = [
            f"{label} {', '.join(items)}"
            for label, items in (
                ("added", added),
                ("removed", removed),
                ("re-weighted", reweighted),
            )
            if items
        ] or ["priorities"]
        message = f"DNS answer changed: {'; '.join(parts)}"
        log_fields(
            log,
            logging.INFO,
            "%s",
            message,
            always=True,
            event="dns",
            added=list(added),
            removed=list(removed),
            reweighted=list(reweighted),
        )
        self.recorder.journal.add("dns", message, time.time())
        if self.admin is not None:
            self.admin.config_changed()

    def addresses_of(self, set_name: str, name: str) -> list[DestinationSpec] | None:
        """The destinations DNS name ``name`` (a URI or SRV name of the set's config) has now;
        None when the set has no such name."""
        proxy = self.proxy
        names = {n.text for spec in self.config.sets if spec.name == set_name for n in spec.names}
        if proxy is None or name not in names:
            return None
        return [d.spec for d in proxy.dispatcher.destinations(set_name) if d.spec.name == name]

    def _name_admin(self, set_name: str, name: str, admin: AdminState, cause: str) -> bool:
        """Drain, disable or enable a DNS name of a set: each address it has now, and each one
        a later answer adds (until it is enabled again). False when ``name`` is no name."""
        addresses = self.addresses_of(set_name, name)
        if addresses is None:
            return False
        if admin is AdminState.ENABLED:
            self.name_admin.pop((set_name, name), None)
        else:
            self.name_admin[(set_name, name)] = admin
        log_fields(
            log,
            logging.INFO,
            "admin: %s %s in %s: %d addresses (%s)",
            admin,
            name,
            set_name,
            len(addresses),
            cause,
            always=True,
            event="admin",
            action=str(admin),
            name=name,
            set=set_name,
            cause=cause,
        )
        for spec in addresses:
            self.set_admin_state(set_name, spec.uri, admin, f"{cause}, for {name}")
        return True

    def _name_admin_to_new(self, old: Sequence[SetSpec], new: Sequence[SetSpec]) -> None:
        """A drained or disabled name's new addresses join drained or disabled."""
        assert self.proxy is not None
        known = {(spec.name, dest.uri) for spec in old for dest in spec.destinations}
        for spec in new:
            for dest in spec.destinations:
                admin = self.name_admin.get((spec.name, dest.name or ""))
                if admin is not None and (spec.name, dest.uri) not in known:
                    cause = f"a new address of {dest.name}, which is {admin}"
                    self.proxy.set_admin(dest.uri, admin, self.now(), cause)

    def dns_names(self) -> list[NameReading]:
        """Each name's lookup: status, addresses, last error (``/api/status``, ``/metrics``)."""
        return [] if self.names is None else self.names.table.readings()

    async def _stop_names(self) -> None:
        if self.names is not None:
            await self.names.stop()

    # ---- operator actions (admin API) ----------------------------------------------------------
    def find_destination(self, set_name: str, uri: str) -> DestinationSpec:
        """The destination ``uri`` of set ``set_name``; KeyError names what is unknown."""
        assert self.proxy is not None
        try:
            destinations = self.proxy.dispatcher.destinations(set_name)
        except KeyError:
            raise KeyError(f"no set {set_name!r}") from None
        for dest in destinations:
            if dest.uri == uri:
                return dest.spec
        raise KeyError(f"no destination {uri!r} in set {set_name!r}")

    def set_admin_state(self, set_name: str, uri: str, admin: AdminState, cause: str) -> None:
        """Drain, disable or enable a destination (in every set that lists its URI)."""
        proxy = self.proxy
        assert proxy is not None
        if self._name_admin(set_name, uri, admin, cause):  # a DNS name: each of its addresses
            return
        self.find_destination(set_name, uri)
        proxy.set_admin(uri, admin, self.now(), cause)
        log_admin(admin, uri, set_name, cause)
        self.driver.flush()
        if self.link is not None:  # and on every other member
            self.link.admin(set_name, uri, ADMIN_VERB[AdminState(admin)])

    def ban(self, host: str, seconds: float, reason: str) -> bool:
        """Drop ``host``'s requests for ``seconds`` (in every worker, and in the kernel's set when
        nftables is on); False when it is trusted or banned already at least as long."""
        proxy = self.proxy
        assert proxy is not None
        made = proxy.ban(host, seconds, reason, self.now())
        if made:
            log_fields(
                log,
                logging.INFO,
                "admin: ban %s for %.0f s (%s)",
                host,
                seconds,
                reason,
                always=True,
                event="admin",
                action="ban",
                source=host,
                seconds=seconds,
                cause=reason,
            )
        self.driver.flush()
        return made

    def unban(self, host: str) -> bool:
        """Lift a ban; False when ``host`` was not banned."""
        proxy = self.proxy
        assert proxy is not None
        lifted = proxy.unban(host)
        if lifted:
            log_fields(
                log,
                logging.INFO,
                "admin: ban on %s lifted",
                host,
                always=True,
                event="admin",
                action="unban",
                source=host,
            )
        self.driver.flush()
        if self.peers is not None:
            self.peers.unbanned(host)
        return lifted

    def set_weight(self, set_name: str, uri: str, weight: int, cause: str) -> None:
        """Change a destination's weight in one set until the next reload (on every member)."""
        self._set_weight(set_name, uri, weight, cause)
        if self.link is not None:
            self.link.admin(set_name, uri, "weight", weight)
        if self.peers is not None:
            self.peers.weight_changed(set_name, uri, weight, cause)

    def apply_weight(self, set_name: str, uri: str, weight: int, cause: str) -> None:
        """A weight change made in another process of this host: here only."""
        self._set_weight(set_name, uri, weight, cause)

    def _set_weight(self, set_name: str, uri: str, weight: int, cause: str) -> None:
        proxy = self.proxy
        assert proxy is not None
        old = self.find_destination(set_name, uri).weight
        if weight < 0:  # 0: no new calls in this set, calls in progress go on (dispatch.dset)
            raise ValueError("weight must be at least 0")
        sets = tuple(
            replace(
                spec,
                destinations=tuple(
                    replace(d, weight=weight) if d.uri == uri else d for d in spec.destinations
                ),
            )
            if spec.name == set_name
            else spec
            for spec in proxy.dispatcher.sets()
        )
        proxy.reconfigure(
            sets=sets, routes=proxy.routes, default_set=proxy.default_set, now=self.now()
        )
        log_fields(
            log,
            logging.INFO,
            "admin: weight of %s in %s %d -> %d (%s)",
            uri,
            set_name,
            old,
            weight,
            cause,
            always=True,
            event="admin",
            action="weight",
            destination=uri,
            set=set_name,
            old=old,
            new=weight,
            cause=cause,
        )
        self.recorder.weight_changed(set_name, uri, old, weight, cause)
        self.driver.flush()
        if self.admin is not None:
            self.admin.config_changed()

    @property
    def joining(self) -> bool:
        """In a cluster and not yet in step with it (``ClusterLink.warming``)."""
        link = self.link
        return link is not None and link.warming

    # ---- the node drained (an operator, or SIGTERM before the calls drain) ---------------------
    def drain_node(self, on: bool, cause: str) -> None:
        """Drain (``on``) or resume the whole node: health reads unhealthy, so routes are
        withdrawn and VRRP moves; in a cluster the other nodes take its new calls while the
        calls it has finish here."""
        if on == self.draining:
            return
        self.draining = on
        verb = "drained" if on else "resumed"
        log_fields(
            log,
            logging.INFO,
            "node %s (%s)",
            verb,
            cause,
            always=True,
            event="node",
            new=verb,
            cause=cause,
        )
        if self.link is not None:
            self.link.set_draining(on)

    # ---- the cluster link's host (``siplb.io.cluster.ClusterHost``) ---------------------------
    def cluster_calls(self) -> dict[str, int]:
        assert self.proxy is not None
        return self.proxy.dispatcher.local_calls()

    def cluster_caps(self) -> dict[str, int]:
        assert self.proxy is not None
        caps: dict[str, int] = {}
        for spec in self.proxy.dispatcher.sets():
            for dest in spec.destinations:
                if dest.max_calls is not None:
                    caps[dest.uri] = min(dest.max_calls, caps.get(dest.uri, dest.max_calls))
        return caps

    def cluster_health(self) -> dict[str, tuple[str, str]]:
        assert self.proxy is not None
        health = self.proxy.dispatcher.health
        out = {}
        for uri in health:
            snap = health.snapshot(uri)
            out[uri] = (str(snap.probe_state), snap.cause)
        return out

    @property
    def anycast(self) -> bool:
        """Some listener's address is every node's (``anycast = true``)."""
        return any(listener.anycast for listener in self.listeners)

    def cluster_members(self, ownership: Ownership) -> None:
        assert self.proxy is not None
        proxy = self.proxy
        if self.anycast:
            # an anycast listener's datagrams may be any node's; the others' are this node's
            shared = frozenset(lst.index for lst in self.listeners if lst.anycast)
            proxy.members_changed(ownership, shared=shared)
            adopted = proxy.adopt_orphans(self.now())
            if adopted and self.link is not None:
                self.link.stats["setups_adopted"] += adopted
                log.info("cluster: continuing %s in setup of nodes gone", plural(adopted, "call"))
        else:  # the listeners are this node's own addresses: their datagrams are this node's
            proxy.members_changed(ownership, datagrams=False)
        self.driver.flush()

    def _hand_over(self, handover: HandOver) -> None:
        if self.link is not None:
            source = (handover.source.host, handover.source.port)
            self.link.hand_over(handover.member, handover.listener, source, handover.data)

    def cluster_own_setups(self) -> list[Setup]:
        proxy = self.proxy
        setups = proxy.setups if proxy is not None else None
        if proxy is None or setups is None:
            return []
        return setups.owned_by(proxy.branches.member)

    def cluster_setup(self, note: CallNote) -> None:
        proxy = self.proxy
        if proxy is None:
            return
        if isinstance(note, Setup):
            proxy.setup_heard(note, self.now())
        elif isinstance(note, SetupEnded):
            proxy.setup_ended(note.call_id, note.owner)
        elif not proxy.call_ended(note.call_id) and self.link is not None:
            self.link.close_orphan(note.call_id.decode("latin-1"))  # a dead node's dialog

    def cluster_told(self, remote: dict[str, int], limits: dict[str, int]) -> None:
        assert self.proxy is not None
        dispatcher = self.proxy.dispatcher
        dispatcher.told_calls(remote)
        dispatcher.told_limits(limits)

    def cluster_follow(self, uri: str, state: str, cause: str) -> None:
        assert self.proxy is not None
        try:
            self.proxy.follow_probe(uri, State(state), self.now(), cause)
        except ValueError:
            return  # a state this version does not know
        self.driver.flush()

    def cluster_admin(self, set_name: str, uri: str, verb: str, value: float | None) -> None:
        assert self.proxy is not None
        cause = "operator, on another node"
        try:
            self.find_destination(set_name, uri)
        except KeyError:
            return  # a set or destination this node's config does not have
        if verb == "weight":
            if value is not None and value >= 1:
                self._set_weight(set_name, uri, int(value), cause)
            return
        admin = VERB_ADMIN.get(verb)
        if admin is not None:
            self.proxy.set_admin(uri, admin, self.now(), cause)
            log_admin(admin, uri, set_name, cause)
            self.driver.flush()

    def cluster_datagram(self, listener: int, source: tuple[str, int], data: bytes) -> None:
        if self.proxy is not None and 0 <= listener < len(self.listeners):
            self.driver.datagram(listener, data, source, handed=True)

    def cluster_passive(self, uri: str, ok: bool, cause: str) -> None:
        if self.proxy is not None:
            self.proxy.passive(uri, ok, cause, self.now())
            self.driver.flush()

    def cluster_dialogs(self, limit: int) -> DialogChanges:
        assert self.proxy is not None
        accounting = self.proxy.dispatcher.accounting
        return accounting.dialog_changes(limit, self.proxy.settings.max_call_age)

    def cluster_learned(self, limit: int) -> BindingChanges:
        assert self.proxy is not None
        front = self.proxy.front
        if front is None or front.keepalive is None:
            return BindingChanges()
        return front.keepalive.changes(limit)

    def cluster_bindings(self, adopt: Sequence[Shared], release: Sequence[Target]) -> None:
        assert self.proxy is not None
        front = self.proxy.front
        if front is None or front.keepalive is None:
            return
        keepalive, now = front.keepalive, self.now()
        for flow in release:
            keepalive.release(flow)
        for shared in adopt:
            keepalive.adopt(shared, now)
        self.driver.flush()  # an adopted binding may start the keepalive wheel: re-arm

    def cluster(self) -> ClusterReading | None:
        """What ``/api/cluster`` shows; None without ``[cluster]``."""
        link, proxy = self.link, self.proxy
        if link is None or proxy is None:
            return None
        now = self.now()
        redis = link.redis
        calls = self.cluster_calls()
        remote = link.view.remote_calls()
        limits = link.limits()
        health = proxy.dispatcher
        return ClusterReading(
            me=link.me.tag,
            node=link.me.node,
            config_hash=link.config_hash,
            redis=RedisReading(
                redis.up,
                redis.where,
                redis.errors,
                redis.reconnects,
                redis.last_error,
                None if link.last_ok is None else now - link.last_ok,
            ),
            members=tuple(
                MemberReading(
                    v.member.tag,
                    v.member.node,
                    v.member.worker,
                    v.alive,
                    v.last_seen,
                    v.peer,
                    calls=sum(calls.values()) if v.member == link.me else v.calls,
                    config_hash=v.config_hash,
                    started=v.started,
                )
                for v in link.members(now)
            ),
            destinations=tuple(
                ClusterDestination(
                    uri,
                    link.view.health_owner(uri).tag,
                    display_state(health.snapshot(uri)),
                    calls.get(uri, 0),
                    remote.get(uri, 0),
                    limits.get(uri),
                )
                for uri in health.health
            ),
            channel=ChannelCounts.of(link.stats),
        )

    def worker_counters(self) -> list[dict[str, Any]]:
        """Each worker process's counters (``workers = N``); empty for a single process."""
        return [] if self.peers is None else self.peers.counters()

    # ---- what the admin side reads (``siplb.admin.view.BalancerView``) ------------------------
    @property
    def core(self) -> ProxyView:
        assert self._view is not None, "the balancer is not started"
        return self._view

    def now(self) -> float:
        """The one clock of this balancer's core, its shell and its readings (``Driver.now``)."""
        return Driver.now()

    def wall(self, loop_time: float) -> float:
        """A time of the loop's clock as seconds since the epoch."""
        return loop_time + self.wall_offset

    def destinations(self) -> list[DestinationView]:
        """The destination table ``siplb demo`` draws."""
        return destinations(self.core)

    # ---- what the core reports -----------------------------------------------------------------
    def _on_event(self, event: object) -> None:
        log_event(event, self._sets_of(event.uri) if isinstance(event, StateChanged) else ())
        self.recorder.observe(event, self.wall_offset)
        if isinstance(event, SourceBanned | BanLifted):
            self._ban_changed(event)
        elif isinstance(event, PassiveObserved) and self.link is not None:
            self.link.passive(event.uri, event.ok, event.cause)
        if self.peers is not None:
            self.peers.event(event)

    def _sets_of(self, uri: str) -> list[str]:
        """The sets destination ``uri`` is in, for its log lines."""
        sets = self.dns_sets or self.config.sets
        return [spec.name for spec in sets if any(d.uri == uri for d in spec.destinations)]

    def _protection(self, config: Config) -> ProtectionSettings:
        """The admission stage's settings for this process: with ``rate_share`` N, each holds
        1/N of every per-source budget (each of N workers counts about 1/N of a source's
        requests, Call-IDs hashing evenly over them)."""
        protection = self._trust_draining(config.protection)
        n = self.rate_share
        if n == 1:
            return protection
        rate = protection.rate
        share = replace(
            rate,
            invite=max(1, -(-rate.invite // n)),
            register=max(1, -(-rate.register // n)),
            other=max(1, -(-rate.other // n)),
        )
        return replace(protection, rate=share)

    def _ban_changed(self, event: SourceBanned | BanLifted) -> None:
        """A ban made or lifted here: into the kernel's set, when it is asked for."""
        nft = self.nft
        if nft is None:
            return
        if isinstance(event, SourceBanned):
            nft.ban(event.host, event.until - self.now())
        else:
            nft.unban(event.host)


ADMIN_VERB = {
    AdminState.DRAINING: "drain",
    AdminState.DISABLED: "disable",
    AdminState.ENABLED: "enable",
}
VERB_ADMIN = {verb: admin for admin, verb in ADMIN_VERB.items()}

# How the core's events are logged: (level, message, the event's fields it formats)
EVENT_LOG: dict[type, tuple[int, str, tuple[str, ...]]] = {
    FailedOver: (logging.INFO, "call %s failed over from %s (%s)", ("call_id", "uri", "cause")),
    RequestRejected: (
        logging.DEBUG,
        "answered %s %d from %s: %s",
        ("method", "status", "source", "reason"),
    ),
    MessageDropped: (logging.DEBUG, "dropped from %s: %s", ("source", "reason")),
    SourceBanned: (logging.WARNING, "banned %s (%s, offence %d)", ("host", "reason", "offences")),
    BanLifted: (logging.INFO, "ban on %s lifted", ("host",)),
    PhoneUnreachable: (
        logging.WARNING,
        "phone %s at %s unreachable (%s)",
        ("aor", "flow", "cause"),
    ),
    PhoneReachable: (logging.INFO, "phone %s at %s reachable again", ("aor", "flow")),
    RegistrarLacksPath: (
        logging.ERROR,
        "registrar %s does not support Path (RFC 3327): %s; phones registered through it "
        "cannot be reached",
        ("registrar", "cause"),
    ),
    CallsExpired: (logging.INFO, "%d calls expired from the call table", ("count",)),
}


def log_admin(admin: AdminState, uri: str, set_name: str, cause: str) -> None:
    """An operator's drain, disable or enable of a destination (here or on another member)."""
    log_fields(
        log,
        logging.INFO,
        "admin: %s %s in %s (%s)",
        admin,
        uri,
        set_name,
        cause,
        always=True,
        event="admin",
        action=str(admin),
        destination=uri,
        set=set_name,
        cause=cause,
    )


def log_event(event: object, sets: Sequence[str] = ()) -> None:
    """One line per event worth one, its attributes as fields (``siplb.logs.event_fields``);
    ``sets``: those of a destination whose state changed."""
    rule = EVENT_LOG.get(type(event))
    if rule is not None:
        level, message, fields = rule
        if log.isEnabledFor(level):
            args = (getattr(event, name) for name in fields)
            log_fields(log, level, message, *args, **event_fields(event))
    elif isinstance(event, StateChanged):
        level = logging.WARNING if event.new is State.DOWN else logging.INFO
        shown = (event.uri, event.old, event.new, event.cause)
        more = event_fields(event, set=",".join(sets) or None)
        log_fields(log, level, "destination %s: %s -> %s (%s)", *shown, always=True, **more)
    elif isinstance(event, OverloadChanged):
        if event.active:
            log_fields(
                log,
                logging.WARNING,
                "overloaded (receive buffer %.0f%% full): new calls get 503",
                100 * event.backlog,
                always=True,
                **event_fields(event),
            )
        else:
            log_fields(
                log, logging.INFO, "no longer overloaded: new calls admitted again", always=True
            )


# Full collections of the cycle collector: every 100th collection of the middle generation
# (CPython's default is every 10th), on top of CPython's own rule (only once a quarter more
# objects survived since the last one). A full collection walks every live transaction: at
# 500 calls/s, with the default, one of 100-200 ms every 15 s; with this, the longest pause
# measured in a minute was 32 ms (docs/performance.md). The core leaves no reference cycles
# behind a call, so the young generations free what little cyclic garbage there is.
GC_THRESHOLDS = (700, 10, 100)


def tune_gc() -> None:
    """After start-up: freeze what start-up made (modules, config, the admin app) so that no
    collection walks it again, and make full collections rarer (``GC_THRESHOLDS``)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


async def serve(config_path: Path) -> int:
    """``siplb run``: run until SIGTERM/SIGINT; SIGHUP reloads the config file.

    SIGTERM (or SIGINT) first drains the node: it reads unhealthy, so ``siplb announce``
    withdraws its route (or keepalived moves the address), while it goes on serving every
    request for ``[health] withdraw_delay``, the time the routers need to stop sending here.
    Then it stops as before: no new calls, the grace period for transactions. A second signal
    cuts the delay short."""
    from siplb.io.systemd import Notifier  # Type=notify: READY, RELOADING, STOPPING, WATCHDOG

    config = load_config(config_path)
    balancer = Balancer(config, admin=True, config_path=config_path)
    await balancer.start()
    tune_gc()
    service = Notifier.from_environment()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, service.reload, balancer.reload_file, "SIGHUP")
    service.ready(f"serving on {plural(len(balancer.listeners), 'listener')}")
    service.start_watchdog(loop)
    await stop.wait()
    service.stopping("draining, then stopping")
    await withdraw_then_stop(balancer, stop)
    service.close()
    return 0


async def withdraw_then_stop(balancer: Balancer, stop: asyncio.Event) -> None:
    """After a stop signal (``stop`` set): drained at once, so health reads unhealthy and the
    routes go (``[health] withdraw_delay``, cut short by a second signal), then stopped: no new
    calls, the grace period for transactions. ``siplb run`` and each worker process."""
    from contextlib import suppress

    stop.clear()
    delay = balancer.config.readiness.withdraw_delay
    balancer.drain_node(True, "stop signal")
    if delay > 0:
        log.info("stopping: unhealthy now, serving %.1f s more while routes are withdrawn", delay)
        with suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
    grace = balancer.config.proxy.grace_period
    log.info("stopping: no new calls, %.1f s for transactions to finish", grace)
    await balancer.stop()
