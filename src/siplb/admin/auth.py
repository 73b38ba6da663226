"""The admin token: every change needs it, and when one is configured every read does too.

A request shows the token as ``Authorization: Bearer TOKEN``; a read (GET) may instead carry it
as ``?token=TOKEN``, which is how the dashboard's event stream authenticates (a browser's
EventSource cannot set headers). Without a configured token, reads are open and changes are
refused (403), so a fresh install cannot be drained by anyone who reaches the port. The page and
its static files and the OpenAPI document carry no data and are always open. A missing or wrong
token gets 401 and a log line.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web

from siplb.settings import AdminSettings

if TYPE_CHECKING:
    from .journal import Recorder

log = logging.getLogger("siplb.admin")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
OPEN_PATHS = frozenset({"/", "/favicon.ico", "/api/openapi.json"})
OPEN_PREFIXES = ("/static/",)


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


class Guard:
    """Checks each request's token; ``token`` may change on reload."""

    def __init__(self, token: str | None, recorder: Recorder) -> None:
        self.token = token
        self.recorder = recorder

    def presented(self, request: web.Request) -> str | None:
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        if request.method in READ_METHODS:
            return request.query.get("token")
        return None

    def refusal(self, request: web.Request) -> web.Response | None:
        """The error response for a request the token does not allow, else None."""
        path = request.path
        if path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
            return None
        change = request.method not in READ_METHODS
        if self.token is None:
            if not change:
                return None
            return self._refuse(
                request,
                403,
                "changes are disabled: no admin token is configured "
                "(set [admin] token or token_file)",
            )
        given = self.presented(request)
        if given is not None and hmac.compare_digest(given.encode(), self.token.encode()):
            return None
        why = "missing token" if given is None else "wrong token"
        return self._refuse(request, 401, why)

    def _refuse(self, request: web.Request, status: int, why: str) -> web.Response:
        self.recorder.auth_refusals += 1
        log.warning(
            "admin: refused %s %s from %s: %s", request.method, request.path, request.remote, why
        )
        headers = {"WWW-Authenticate": 'Bearer realm="siplb"'} if status == 401 else None
        return web.json_response({"error": why}, status=status, headers=headers)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        refusal = self.refusal(request)
        if refusal is not None:
            return refusal
        return await handler(request)
