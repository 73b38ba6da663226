"""Who may use the admin API. Every request, the page and its files included, passes three checks
in this order; the first that fails answers it:

1. **Host.** The Host header's name (no port, any case, IPv6 in brackets) must be one of
   ``[admin] hosts``, by default the listen address's host, ``localhost``, ``127.0.0.1`` and
   ``::1``; else 421 Misdirected Request. A page on another site whose name is rebound in DNS to
   127.0.0.1 reaches our port with its own name in Host: this is what stops it from reading the
   API from a browser on this machine (DNS rebinding), token or no token.
2. **No token in the URL.** ``?token=`` gets 401 on every path, even beside a good header: a URL
   lands in browser history, proxy logs and Referer headers. Log lines name the path only.
3. **The token**, as ``Authorization: Bearer TOKEN``. Every change needs it, and when one is
   configured every read does too. Without a configured token reads are open and changes are
   refused (403), so a fresh install cannot be drained by anyone who reaches the port. The page,
   its static files and the OpenAPI document carry no data and need no token; nor does
   ``GET /api/health`` (healthy or not, and why): keepalived and ExaBGP run its checkers on the
   node, often as users who cannot read the token, and it changes nothing.

A request aiohttp cannot parse (a scanner, a client speaking TLS or SIP to the port) is refused
with 400 by aiohttp itself; ``HttpErrorLog`` turns its traceback into one line. Every refusal is
counted by reason (``Guard.refused``), and its log line is rate-limited: one per (reason, source
address) every ``LOG_EVERY`` seconds, the next one telling how many were left out (``RefusalLog``),
so a flood of bad requests cannot flood the log.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from aiohttp import hdrs, web
from aiohttp.http_exceptions import HttpProcessingError

from siplb.logs import RefusalLog
from siplb.settings import AdminSettings

if TYPE_CHECKING:
    from .journal import Recorder

log = logging.getLogger("siplb.admin")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
OPEN_PATHS = frozenset({"/", "/favicon.ico", "/api/openapi.json", "/api/health"})
OPEN_PREFIXES = ("/static/",)
TOKEN_PARAMETER = "token"
LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARDS = frozenset({"0.0.0.0", "::", ""})
SHOWN = 200  # characters of a refused path or Host header in its log line


class Refusal(StrEnum):
    WRONG_HOST = "wrong host"
    TOKEN_IN_URL = "token in the URL"
    MISSING_TOKEN = "missing token"
    WRONG_TOKEN = "wrong token"
    CHANGES_DISABLED = "changes disabled"
    MALFORMED = "malformed request"


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    message: str


ANSWERS = {
    Refusal.WRONG_HOST: Answer(
        421, "this admin API does not answer for that Host name (see [admin] hosts)"
    ),
    Refusal.TOKEN_IN_URL: Answer(
        401, "send the token as an Authorization: Bearer header, never in the URL"
    ),
    Refusal.MISSING_TOKEN: Answer(401, "missing token"),
    Refusal.WRONG_TOKEN: Answer(401, "wrong token"),
    Refusal.CHANGES_DISABLED: Answer(
        403,
        "changes are disabled: no admin token is configured (set [admin] token or token_file)",
    ),
}
TOKEN_REFUSALS = frozenset(r for r, a in ANSWERS.items() if a.status in (401, 403))


def load_token(settings: AdminSettings) -> str | None:
    """The configured token: ``token``, or the first line of ``token_file`` (OSError if it
    cannot be read, ValueError if it is empty)."""
    if settings.token is not None:
        return settings.token
    if settings.token_file is None:
        return None
    lines = settings.token_file.read_text(encoding="utf-8").strip().splitlines()
    if not lines or not lines[0].strip():
        raise ValueError(f"{settings.token_file}: the admin token file is empty")
    return lines[0].strip()


# ---- Host ------------------------------------------------------------------------------------
def host_name(value: str) -> str | None:
    """The name in a Host header (RFC 9110 7.2: ``uri-host [ ":" port ]``), lower case, without
    port, brackets or a final dot; None when it is malformed (an IPv6 address without brackets
    is)."""
    value = value.strip().lower()
    if value.startswith("["):
        name, bracket, rest = value[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return None
        port = rest[1:]
    else:
        name, _, port = value.partition(":")
    if port and not (port.isascii() and port.isdigit()):
        return None
    return name.removesuffix(".") or None


def allowed_hosts(settings: AdminSettings, listen_host: str) -> frozenset[str]:
    """The Host names the API answers for: ``hosts``, else the listen host and the local names."""
    names: Iterable[str] = settings.hosts or (listen_host, *LOCAL_NAMES)
    return frozenset(name.strip().strip("[]").lower().removesuffix(".") for name in names)


# ---- the guard -------------------------------------------------------------------------------
class Guard:
    """Checks each request's Host and token; ``token`` and ``hosts`` may change on reload."""

    def __init__(
        self,
        token: str | None,
        hosts: frozenset[str],
        recorder: Recorder,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.token = token
        self.hosts = hosts
        self.recorder = recorder
        self.clock = clock
        self.refused: Counter[str] = Counter()  # reason -> requests refused
        self.refusal_log = RefusalLog()

    def check(self, request: web.Request) -> Refusal | None:
        """Why ``request`` is refused, or None when it may go on."""
        if host_name(request.headers.get(hdrs.HOST, "")) not in self.hosts:
            return Refusal.WRONG_HOST
        if TOKEN_PARAMETER in request.query:
            return Refusal.TOKEN_IN_URL
        path = request.path
        if path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
            return None
        if self.token is None:
            return None if request.method in READ_METHODS else Refusal.CHANGES_DISABLED
        given = presented(request)
        if given is None:
            return Refusal.MISSING_TOKEN
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            return Refusal.WRONG_TOKEN
        return None

    def refusal(self, request: web.Request) -> web.Response | None:
        """The error response for a request that may not go on, else None."""
        reason = self.check(request)
        if reason is None:
            return None
        detail = ""
        if reason is Refusal.WRONG_HOST:
            detail = f" {request.headers.get(hdrs.HOST, '')[:SHOWN]!r}"
        # the path as sent, without the query string: that is where a token in the URL is
        what = f"{request.method} {request.rel_url.raw_path[:SHOWN]}"
        self.note(reason, request.remote or "?", what, detail)
        answer = ANSWERS[reason]
        headers = {"WWW-Authenticate": 'Bearer realm="siplb"'} if answer.status == 401 else None
        return web.json_response({"error": answer.message}, status=answer.status, headers=headers)

    def note(self, reason: Refusal, source: str, what: str, detail: str = "") -> None:
        """Count one refusal and log it, unless one like it was logged less than
        ``LOG_EVERY`` seconds ago."""
        self.refused[reason] += 1
        if reason in TOKEN_REFUSALS:
            self.recorder.auth_refusals += 1
        left_out = self.refusal_log.admit(reason, source, self.clock())
        if left_out is None:
            return
        more = f" (and {left_out} more since the last such line)" if left_out else ""
        log.warning("admin: refused %s from %s: %s%s%s", what, source, reason, detail, more)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        refusal = self.refusal(request)
        if refusal is not None:
            return refusal
        return await handler(request)


def presented(request: web.Request) -> str | None:
    """The token of an ``Authorization: Bearer`` header, if there is one."""
    scheme, _, value = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


class HttpErrorLog(logging.LoggerAdapter[logging.Logger]):
    """aiohttp's own log for the admin server (``AppRunner(logger=...)``): a request it cannot
    parse becomes a ``Refusal.MALFORMED``, one rate-limited line without a traceback. Anything
    else (a handler's bug) is logged as aiohttp logs it, traceback included."""

    def __init__(self, guard: Guard) -> None:
        super().__init__(logging.getLogger("siplb.admin.http"), {})
        self.guard = guard

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info")
        if isinstance(exc, HttpProcessingError):
            source = str(args[0]) if args and args[0] else "?"
            self.guard.note(Refusal.MALFORMED, source, "a request", f" ({type(exc).__name__})")
            return
        super().log(level, msg, *args, **kwargs)
