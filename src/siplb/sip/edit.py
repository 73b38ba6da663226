"""Several edits of one message, made in one copy.

A proxy changes a request it forwards in several places (RFC 3261 16.6 steps 2-8: Request-URI,
Max-Forwards, Route, received/rport on the top Via, Record-Route, its own Via). Each ``with_*``
method of a message makes a whole new message; an ``Edit`` collects the changes and makes one:

    edit = Edit(request)
    edit.pop_top_values(b"route", 1)            # loose routing (16.4)
    edit.set(b"Max-Forwards", b"69")            # 16.6 step 3
    edit.add_top_value(b"Via", our_via)         # 16.6 step 8, beside the other Vias
    edit.add_first(b"Record-Route", our_rr)     # 16.6 step 4, on top
    forwarded = edit.apply()

The result is the message the same ``with_*`` calls would give, byte for byte: untouched lines
keep their bytes, a changed line keeps its name as written.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from .errors import LocalProtocolError
from .headers import LIST_HEADERS, canonical, first_comma
from .message import CRLF, Message, Request, _assemble, _checked_key, _uri_checked

M = TypeVar("M", bound=Message)


class Edit(Generic[M]):
    """Changes to ``message``, applied together by ``apply`` (the message is left as it was)."""

    __slots__ = ("_above", "_changes", "_first", "_last", "_message", "_uri")

    def __init__(self, message: M) -> None:
        self._message = message
        # header line position -> its new raw value (after the colon), or None: line removed
        self._changes: dict[int, bytes | None] = {}
        self._first: list[tuple[bytes, bytes, bytes]] = []  # (key, name, value), top first
        self._last: list[tuple[bytes, bytes, bytes]] = []
        # header line position -> lines to put right above it, top first (``add_top_value``)
        self._above: dict[int, list[tuple[bytes, bytes, bytes]]] = {}
        self._uri: bytes | None = None

    def copy(self) -> Edit[M]:
        """Another edit with the changes made so far (this one is left as it is)."""
        other = Edit(self._message)
        other._changes = dict(self._changes)
        other._first = list(self._first)
        other._last = list(self._last)
        other._above = {i: list(lines) for i, lines in self._above.items()}
        other._uri = self._uri
        return other

    @property
    def message(self) -> M:
        """The message being edited (as it was before any change)."""
        return self._message

    def add_first(self, name: bytes, value: bytes) -> None:
        """A header line above all others, those added before included (``with_header_first``)."""
        self._first.insert(0, (_checked_key(name, value), name, value))

    def add_top_value(self, name: bytes, value: bytes) -> None:
        """A new first element of a list header, as a line right above its first line, so its
        lines stay together (a proxy's Via, 16.6 step 8: a Record-Route or Path added on top
        never splits the Via rows); on top of all lines when there is none yet."""
        key = _checked_key(name, value)
        positions = self._positions(key)
        if not positions:
            self._first.insert(0, (key, name, value))
            return
        self._above.setdefault(positions[0], []).insert(0, (key, name, value))

    def set(self, name: bytes, value: bytes) -> None:
        """Replace the value of the first ``name`` line, or add one at the end (``with_header``)."""
        key = _checked_key(name, value)
        for i in self._positions(key):
            self._changes[i] = b" " + value
            return
        self._last.append((key, name, value))

    def remove(self, name: bytes) -> None:
        """Remove every ``name`` line (``without_header``)."""
        for i in self._positions(canonical(name)):
            self._changes[i] = None

    def pop_top_values(self, name: bytes, count: int = 1) -> None:
        """Remove the top ``count`` elements of a list header (``without_top_value`` ``count``
        times, except that empty elements, which ``values`` leaves out, do not count).

        ``LocalProtocolError`` when the header has fewer elements.
        """
        key = canonical(name)
        listed = key in LIST_HEADERS
        for i in self._positions(key):
            if not count:
                return
            value = self._value(i)
            while count and value is not None:
                comma = first_comma(value) if listed else -1
                element = value[:comma] if comma >= 0 else value
                if element.strip(b" \t\r\n"):
                    count -= 1
                value = _rest(value, comma)
            self._changes[i] = value
        if count:
            raise LocalProtocolError(f"fewer {name!r} values than the {count} more to remove")

    def replace_top_value(self, name: bytes, value: bytes) -> None:
        """Replace the first element of the first ``name`` line (the rest of the line stays)."""
        key = _checked_key(name, value)
        for i in self._positions(key):
            old = self._value(i)
            assert old is not None  # _positions skips removed lines
            comma = first_comma(old) if key in LIST_HEADERS else -1
            self._changes[i] = b" " + value + (old[comma:] if comma >= 0 else b"")
            return
        raise LocalProtocolError(f"no {name!r} header to replace a value of")

    def set_uri(self, uri: bytes) -> None:
        """Another Request-URI (RFC 3261 16.6 step 2; requests only)."""
        if not isinstance(self._message, Request):
            raise LocalProtocolError("only a request has a Request-URI")
        self._uri = _uri_checked(uri)

    def apply(self) -> M:
        """The edited message (the original itself when nothing changed)."""
        message = self._message
        changes = self._changes
        first = self._first
        last = self._last
        above = self._above
        if not changes and not first and not last and not above and self._uri is None:
            return message
        keys = message._keys
        names = message._names
        values = message._values
        if changes or above:
            keys, names, values = list(keys), list(names), list(values)
            for i in sorted(changes.keys() | above.keys(), reverse=True):
                value = changes.get(i, values[i])
                if value is None:
                    del keys[i], names[i], values[i]
                else:
                    values[i] = value
                inserted = above.get(i)
                if inserted:
                    keys[i:i] = [k for k, _, _ in inserted]
                    names[i:i] = [n for _, n, _ in inserted]
                    values[i:i] = [b" " + v for _, _, v in inserted]
        if first or last:
            keys = [k for k, _, _ in first] + keys + [k for k, _, _ in last]
            names = [n for _, n, _ in first] + names + [n for _, n, _ in last]
            values = [b" " + v for _, _, v in first] + values + [b" " + v for _, _, v in last]
        out = message._with(keys, names, values, b"")
        if self._uri is not None:
            assert isinstance(out, Request)
            out.uri = self._uri
        raw = message._raw
        if changes or last or above or self._uri is not None:
            out._raw = _assemble(out.start_line(), names, values, message.body)
        else:  # lines on top only: splice them in after the start line
            s = raw.find(CRLF)
            lines = b"".join(b"".join((CRLF, n, b": ", v)) for _, n, v in first)
            out._raw = b"".join((raw[:s], lines, raw[s:]))
        return out

    # ---- helpers -----------------------------------------------------------------------------
    def _positions(self, key: bytes) -> list[int]:
        """Positions of the ``key`` lines not removed by this edit, top first."""
        changes = self._changes
        return [
            i
            for i, k in enumerate(self._message._keys)
            if k == key and (i not in changes or changes[i] is not None)
        ]

    def _value(self, i: int) -> bytes | None:
        changes = self._changes
        return changes[i] if i in changes else self._message._values[i]


def _rest(value: bytes, comma: int) -> bytes | None:
    """What is left of a line's value after its first element (None: nothing)."""
    if comma < 0:
        return None
    rest = value[comma + 1 :].lstrip(b" \t\r\n")
    if not rest:
        return None
    return value[: len(value) - len(value.lstrip(b" \t"))] + rest
