"""Log lines for people (``human``) and for log shippers (``json``, one object a line), written
to stderr, to syslog or to the systemd journal; lines that repeat are kept to one in a while.

A line names what it is about twice: in its text, and as fields (``destination``, ``set``,
``old``, ``new``, ``cause``, ``call_id``, ``source``, ``listener`` ...) that the JSON format
writes as keys and the journal as fields of its own, so a shipper filters on them without
parsing sentences::

    log_fields(log, logging.WARNING, "destination %s: %s -> %s (%s)", uri, old, new, cause,
              always=True, destination=uri, set=set_name, old=old, new=new, cause=cause)

``RefusalLog`` (and ``RepeatFilter``, built on it, on every handler) keeps what a peer can repeat
(refusals, faults, a destination refusing every probe) to one line per ``LOG_EVERY`` seconds;
the next line after a quiet spell tells how many were left out.

With ``--log-level debug`` each SIP message gets one line (``trace_message``): its first line,
Call-ID, and what became of it, taken from what the core queued while handling it.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import logging.handlers
import os
import re
import socket
import struct
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from siplb.proxy.actions import HandOver, MessageDropped, RequestRejected, Send

LOG_EVERY = 10.0  # seconds between two log lines of one (reason, source)
LOG_SOURCES = 1024  # (reason, source) pairs remembered; past that, new sources share one line
OTHER_SOURCES = "other sources"

SYSLOG_ADDRESS = "/dev/log"
JOURNAL_SOCKET = "/run/systemd/journal/socket"
IDENTIFIER = "siplb"
FIXED_KEYS = frozenset({"ts", "level", "logger", "msg", "exc", "worker"})
TRACE = logging.getLogger("siplb.sip")  # the per-message debug lines

_worker: int | None = None  # this process's worker number (``workers = N``), None otherwise


def set_worker(worker: int | None) -> None:
    """Every line of this process says it comes from ``worker`` (a forked worker calls it)."""
    global _worker
    _worker = worker


def log_fields(
    logger: logging.Logger, level: int, msg: str, *args: object, **fields: object
) -> None:
    """``logger.log(level, msg, *args)`` carrying ``fields`` (None values left out) for the
    formatters. ``always=True`` (not a field): never left out as a repeat (state changes,
    operator actions)."""
    if logger.isEnabledFor(level):
        always = bool(fields.pop("always", False))
        kept = {key: value for key, value in fields.items() if value is not None}
        extra = {"fields": kept, "always": always}
        logger.log(level, msg, *args, extra=extra, stacklevel=2)


# event attribute -> JSON key, where the key an operator looks for differs from the attribute
EVENT_KEYS = {"uri": "destination", "set_name": "set", "host": "source", "flow": "source"}
EVENT_SKIP = frozenset({"at", "until", "data"})  # the core's clock, payloads: nothing to read


def event_fields(event: object, **more: object) -> dict[str, object]:
    """A core event's fields for a log line: ``event`` (its class name) and its attributes
    (``uri`` as ``destination``, ``set_name`` as ``set``, ``host`` as ``source``)."""
    fields: dict[str, object] = {"event": type(event).__name__}
    if dataclasses.is_dataclass(event):
        for field in dataclasses.fields(event):
            if field.name not in EVENT_SKIP:
                value = getattr(event, field.name)
                fields[EVENT_KEYS.get(field.name, field.name)] = _plain(value)
    fields.update(more)
    return fields


def fields_of(record: logging.LogRecord) -> Mapping[str, object]:
    fields = getattr(record, "fields", None)
    return fields if isinstance(fields, Mapping) else {}


def _iso(created: float, msecs: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(msecs):03d}Z"


def _plain(value: object) -> object:
    """A field value as JSON has it: numbers, booleans and strings as they are, others as text."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple | frozenset | set):
        return [_plain(item) for item in value]
    return str(value)


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ``ts level logger msg``, ``worker`` under ``workers = N``, then
    the line's fields as keys of their own."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": _iso(record.created, record.msecs),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if _worker is not None:
            entry["worker"] = _worker
        for key, value in fields_of(record).items():
            if key not in FIXED_KEYS:
                entry[key] = _plain(value)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def as_text(value: object) -> str:
    """A field value as text: a list as its items joined by commas."""
    if isinstance(value, list | tuple | frozenset | set):
        return ",".join(str(item) for item in value)
    return str(value)


def _shown(text: str) -> str:
    if not text or any(char in text for char in ' "='):
        return json.dumps(text, ensure_ascii=False)
    return text


SHOWN_MIN = 4  # characters from which a value found inside the text counts as shown
HUMAN_SKIP = frozenset({"event"})  # for filters; people read what happened in the text


def body(record: logging.LogRecord) -> str:
    """The message, then ``key=value`` for each field its text does not already show (but
    ``event``, the kind of line, which the text says in words, and empty lists)."""
    message = record.getMessage()
    texts = ((key, as_text(value)) for key, value in fields_of(record).items())
    extra = [
        f"{key}={_shown(text)}"
        for key, text in texts
        if key not in HUMAN_SKIP and text and not _says(message, text)
    ]
    return " ".join([message, *extra]) if extra else message


def _says(message: str, text: str) -> bool:
    """Whether ``message`` shows ``text``: inside it when long enough to mean something, else
    as a word of its own ("0" is no listener number in "SIP/2.0")."""
    if len(text) >= SHOWN_MIN:
        return text in message
    return text in (word.strip("(),;:") for word in message.split())


class HumanFormatter(logging.Formatter):
    """``2026-12-03T16:20:00.123Z WARNING siplb [w1]: message key=value`` (UTC, milliseconds);
    without the time for syslog, which stamps lines itself, with ``siplb[pid]:`` first."""

    def __init__(self, *, stamp: bool = True, syslog: bool = False) -> None:
        super().__init__()
        self.stamp = stamp
        self.syslog = syslog

    def format(self, record: logging.LogRecord) -> str:
        tag = f" [w{_worker}]" if _worker is not None else ""
        line = f"{record.levelname:<7} {record.name}{tag}: {body(record)}"
        if self.stamp:
            line = f"{_iso(record.created, record.msecs)} {line}"
        if self.syslog:
            line = f"{IDENTIFIER}[{record.process}]: {line}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class SyslogJsonFormatter(JsonFormatter):
    """JSON after the ``siplb[pid]:`` tag syslog daemons read the program name from."""

    def format(self, record: logging.LogRecord) -> str:
        return f"{IDENTIFIER}[{record.process}]: {super().format(record)}"


class ListenerError(OSError):
    """A listener that cannot be bound (a port in use, an address not here), named by its
    ``name`` or number (from 0, as in every log line), transport and address; ``fields`` for
    the line ``siplb run`` writes before it exits 1 (never a traceback)."""

    reason: str

    def __init__(
        self,
        index: int,
        name: str | None,
        transport: str,
        address: tuple[str, int],
        exc: OSError,
    ) -> None:
        host, port = address
        shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        label = f"listener {name!r}" if name else f"listener {index}"
        if isinstance(exc, ListenerError):
            reason = exc.reason
        else:  # asyncio's own words repeat the address: the system's are enough
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
        super().__init__(exc.errno, f"cannot listen on {label} ({transport} {shown}): {reason}")
        self.index = index
        self.reason = reason
        self.fields: dict[str, object] = {
            "listener": name or index,
            "transport": transport,
            "address": shown,
        }

    def __str__(self) -> str:
        return str(self.strerror)


# ---- the systemd journal's native protocol ---------------------------------------------------
PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3}
_NOT_NAME = re.compile(r"[^A-Z0-9_]")
MAX_MESSAGE = 8192  # bytes of MESSAGE kept when a whole entry does not fit in one datagram


def journal_name(key: str) -> str | None:
    """A field name as the journal accepts it (``[A-Z0-9_]``, not starting with ``_`` or a
    digit, 64 characters at most); None when nothing is left."""
    name = _NOT_NAME.sub("_", key.upper()).lstrip("_0123456789")[:64]
    return name or None


def journal_field(name: str, value: str) -> bytes:
    """``NAME=value\\n``; a value with a newline in the binary form (name, length, value)."""
    raw = value.encode("utf-8", "replace")
    if b"\n" not in raw:
        return name.encode() + b"=" + raw + b"\n"
    return name.encode() + b"\n" + struct.pack("<Q", len(raw)) + raw + b"\n"


def journal_entry(record: logging.LogRecord, message: str | None = None) -> bytes:
    """One journal entry: MESSAGE, PRIORITY, SYSLOG_IDENTIFIER, LOGGER, the code location,
    WORKER under ``workers = N``, and every field upper-cased."""
    if message is None:
        message = body(record)
        if record.exc_info:
            message += "\n" + logging.Formatter().formatException(record.exc_info)
    level = max((lv for lv in PRIORITY if lv <= record.levelno), default=logging.DEBUG)
    fixed = {
        "MESSAGE": message,
        "PRIORITY": str(PRIORITY[level] if record.levelno < logging.CRITICAL else 2),
        "SYSLOG_IDENTIFIER": IDENTIFIER,
        "LOGGER": record.name,
        "CODE_FILE": record.pathname,
        "CODE_LINE": str(record.lineno),
        "CODE_FUNC": record.funcName,
    }
    if _worker is not None:
        fixed["WORKER"] = str(_worker)
    parts = [journal_field(name, value) for name, value in fixed.items()]
    for key, value in fields_of(record).items():
        name = journal_name(key)
        text = as_text(value)
        if name is not None and name not in fixed and text:
            parts.append(journal_field(name, text))
    return b"".join(parts)


class JournalHandler(logging.Handler):
    """Sends each line to journald's native socket as one datagram (``KEY=value`` lines). A
    journal that cannot take a line costs the line (counted in ``lost``), never the caller."""

    def __init__(self, path: str = JOURNAL_SOCKET) -> None:
        super().__init__()
        self.path = path
        self.lost = 0
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            self.sock.connect(path)  # fails now, at the start, when there is no journal
        except OSError as exc:
            self.sock.close()
            raise OSError(exc.errno, f"no journal at {path}: {exc.strerror or exc}") from exc

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._send(journal_entry(record))
        except OSError as exc:
            if exc.errno != errno.EMSGSIZE:
                self.lost += 1
                return
            short = body(record).encode("utf-8", "replace")[:MAX_MESSAGE].decode("utf-8", "ignore")
            try:
                self._send(journal_entry(record, short + " [truncated]"))
            except OSError:
                self.lost += 1

    def _send(self, entry: bytes) -> None:
        try:
            self.sock.send(entry)
        except OSError as exc:
            if exc.errno not in (errno.ECONNREFUSED, errno.ENOTCONN):
                raise
            self.sock.sendto(entry, self.path)  # journald restarted: its new socket

    def close(self) -> None:
        self.sock.close()
        super().close()


class SyslogHandler(logging.handlers.SysLogHandler):
    """The standard handler, but a syslog that cannot take a line costs the line (counted in
    ``lost``), not a traceback on stderr per line."""

    lost = 0

    def handleError(self, record: logging.LogRecord) -> None:
        self.lost += 1


def syslog_address(text: str) -> str | tuple[str, int]:
    """``/dev/log`` (a path: a unix socket), ``host:port`` or ``[v6]:port`` (UDP)."""
    if text.startswith("/"):
        return text
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"syslog address {text!r}: a socket path or host:port")
    return host.strip("[]"), int(port)


def _check_unix(path: str) -> None:
    """OSError unless a datagram or stream socket connects to ``path`` (as the handler will)."""
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_UNIX, kind) as probe:
            try:
                probe.connect(path)
            except OSError as exc:
                if kind == socket.SOCK_STREAM or exc.errno != errno.EPROTOTYPE:
                    raise
            else:
                return


def _handler(target: str, fmt: str, address: str | None) -> logging.Handler:
    if target == "journald":
        return JournalHandler(address or JOURNAL_SOCKET)
    if target == "syslog":
        where = syslog_address(address or SYSLOG_ADDRESS)
        try:
            if isinstance(where, str):
                _check_unix(where)  # the handler would only complain at each line
            handler: logging.Handler = SyslogHandler(where, SyslogHandler.LOG_DAEMON)
        except OSError as exc:
            raise OSError(exc.errno, f"no syslog at {where}: {exc.strerror or exc}") from exc
        syslog_json = SyslogJsonFormatter()
        handler.setFormatter(
            syslog_json if fmt == "json" else HumanFormatter(stamp=False, syslog=True)
        )
        return handler
    if target != "stderr":
        raise ValueError(f"log target {target!r}: stderr, syslog or journald")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else HumanFormatter())
    return handler


def setup_logging(
    level: str = "info",
    fmt: str = "human",
    target: str = "stderr",
    address: str | None = None,
    every: float = LOG_EVERY,
) -> None:
    """Every line to ``target`` (``address``: the syslog socket or host:port, the journal's
    socket), repeats kept to one per ``every`` seconds. OSError when the target is not there."""
    handler = _handler(target, fmt, address)
    handler.addFilter(RepeatFilter(every))
    root = logging.getLogger()
    for old in root.handlers:
        old.close()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


# ---- rate-limited log lines: what a peer can repeat costs a counter, not a line --------------
@dataclass(slots=True)
class _Window:
    until: float
    left_out: int = 0


class RefusalLog:
    """Decides which refusals get a log line: at most one per (reason, source) every ``every``
    seconds; the first after a quiet spell carries the count of those left out before it.

        left_out = refusal_log.admit("wrong token", "192.0.2.7", now)
        if left_out is not None: log it, adding "and {left_out} more" when left_out > 0
    """

    def __init__(self, every: float = LOG_EVERY, capacity: int = LOG_SOURCES) -> None:
        self.every = every
        self.capacity = capacity
        self._windows: dict[tuple[str, str], _Window] = {}

    def admit(self, reason: str, source: str, now: float) -> int | None:
        """None: leave this line out. Else write it: ``left_out`` lines were left out before."""
        key = (reason, source)
        if key not in self._windows and len(self._windows) >= self.capacity:
            self._forget(now)
            if len(self._windows) >= self.capacity:
                key = (reason, OTHER_SOURCES)
        window = self._windows.get(key)
        if window is not None and now < window.until:
            window.left_out += 1
            return None
        self._windows[key] = _Window(now + self.every)
        return window.left_out if window is not None else 0

    def _forget(self, now: float) -> None:
        """Drop the windows that are over and owe no count."""
        self._windows = {
            key: window
            for key, window in self._windows.items()
            if now < window.until or window.left_out
        }


class RepeatFilter(logging.Filter):
    """Keeps a line that repeats word for word (same logger, level, template and values) to one
    per ``every`` seconds; the next one written says how many were left out meanwhile (in its
    text and as ``left_out``). Debug lines and ``always`` lines pass untouched."""

    def __init__(
        self, every: float = LOG_EVERY, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.limiter = RefusalLog(every)
        self.clock = clock

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.INFO or getattr(record, "always", False):
            return True
        if getattr(record, "left_out", None) is not None:
            return True  # already admitted (a second handler)
        template = f"{record.name}\0{record.levelno}\0{record.msg}"
        left_out = self.limiter.admit(template, record.getMessage(), self.clock())
        if left_out is None:
            return False
        record.left_out = left_out
        if left_out:
            record.msg = f"{record.getMessage()} ({left_out} more like this left out)"
            record.args = None
            record.fields = {**fields_of(record), "left_out": left_out}
        return True


# ---- --log-level debug: one line per SIP message ------------------------------------------------
_CALL_ID = re.compile(rb"^(?:call-id|i)[ \t]*:[ \t]*([^\r\n]*)", re.IGNORECASE | re.MULTILINE)


def first_line(data: bytes) -> str:
    line = data.split(b"\r\n", 1)[0].split(b"\n", 1)[0][:200]
    return line.decode("utf-8", "replace")


def call_id_of(data: bytes) -> str | None:
    head = data.split(b"\r\n\r\n", 1)[0]
    found = _CALL_ID.search(head)
    return found.group(1).strip().decode("utf-8", "replace") if found else None


ABSORBED = "absorbed (an answer to a probe, a retransmission, or an ACK that ends here)"
DECISIONS = ("forwarded", "handed_over", "answered", "dropped")  # the one named, when several


def decision(
    source: str, sends: Sequence[Send], events: Sequence[object], handovers: Sequence[HandOver]
) -> tuple[str, dict[str, object]]:
    """What became of a message, from what the core queued while it handled it: the text, and
    the fields (``decision``: forwarded, handed_over, answered, dropped or absorbed; an INVITE
    answered 100 and forwarded was forwarded)."""
    parts: list[str] = []
    kinds: set[str] = set()
    fields: dict[str, object] = {}
    for send in sends:
        target = str(send.target)
        if send.data.startswith(b"SIP/2.0 ") and target == source:
            status = send.data[8:11].decode("ascii", "replace")
            parts.append(f"answered {status}")
            kinds.add("answered")
            fields.setdefault("status", int(status) if status.isdigit() else status)
        else:
            parts.append(f"forwarded to {target}")
            kinds.add("forwarded")
            fields.setdefault("to", target)
    for handover in handovers:
        parts.append(f"handed over to {handover.member.tag}")
        kinds.add("handed_over")
        fields["member"] = handover.member.tag
    for event in events:
        if isinstance(event, MessageDropped):
            parts.append(f"dropped: {event.reason}")
            kinds.add("dropped")
            fields["reason"] = event.reason
        elif isinstance(event, RequestRejected):
            fields["reason"] = event.reason
    fields["decision"] = next((kind for kind in DECISIONS if kind in kinds), "absorbed")
    text = "; ".join(parts) or ABSORBED
    return text, fields


def trace_message(
    data: bytes,
    source: str,
    listener: int,
    sends: Sequence[Send],
    events: Sequence[object],
    handovers: Sequence[HandOver] = (),
) -> None:
    """The debug line of one received message: first line, Call-ID, what became of it. The
    caller asks ``TRACE.isEnabledFor(logging.DEBUG)`` once per message, before anything else."""
    what, fields = decision(source, sends, events, handovers)
    call_id = call_id_of(data)
    line = first_line(data)
    fields = {
        "source": source,
        "listener": listener,
        "first_line": line,
        "call_id": call_id,
        **fields,
    }
    TRACE.debug(
        "%s from %s (Call-ID %s): %s", line, source, call_id, what, extra={"fields": fields}
    )
