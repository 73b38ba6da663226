"""TLS contexts from the config: listeners (certificate, key, optional client verification) and
destinations (CA, verification, optional client certificate). The connections themselves are the
stream connections of ``tcp.py``: TLS only wraps them (RFC 3261 26.2, RFC 5630)."""

from __future__ import annotations

import ssl
from pathlib import Path

from siplb.settings import TlsClientSettings, TlsFiles

MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2


def server_context(files: TlsFiles, *, verify_client: bool) -> ssl.SSLContext:
    """A listener's context: its certificate chain; with ``verify_client`` a client certificate
    signed by ``files.ca`` is required, else one is checked only when offered and a CA is set."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = MINIMUM_VERSION
    context.load_cert_chain(files.cert, files.key)
    if files.ca is not None:
        _load_ca(context, files.ca)
        context.verify_mode = ssl.CERT_REQUIRED if verify_client else ssl.CERT_OPTIONAL
    return context


def client_context(settings: TlsClientSettings) -> ssl.SSLContext:
    """How we connect to TLS destinations: their certificate checked against ``ca`` (or the
    system's CAs) and their address, unless ``verify`` is off."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = MINIMUM_VERSION
    if settings.ca is not None:
        _load_ca(context, settings.ca)
    if not settings.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if settings.cert is not None and settings.key is not None:
        context.load_cert_chain(settings.cert, settings.key)
    return context


def _load_ca(context: ssl.SSLContext, ca: Path) -> None:
    if ca.is_dir():
        context.load_verify_locations(capath=str(ca))
    else:
        context.load_verify_locations(cafile=str(ca))
