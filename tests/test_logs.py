"""siplb.logs: the formatters, the repeat filter, the journal's wire format, the debug line."""

from __future__ import annotations

import json
import logging
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from siplb import logs
from siplb.cluster.member import Member
from siplb.dispatch import State, StateChanged
from siplb.proxy.actions import HandOver, MessageDropped, RequestRejected, Send, Target

CALLER = Target("udp", "127.0.0.1", 5070)
PBX = Target("udp", "127.0.0.1", 5080)
INVITE = (
    b"INVITE sip:bob@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\n"
    b"Call-ID: abc@127.0.0.1\r\n"
    b"CSeq: 1 INVITE\r\n\r\n"
)


def record(
    msg: str = "destination %s: %s -> %s",
    *args: object,
    level: int = logging.WARNING,
    name: str = "siplb",
    **fields: object,
) -> logging.LogRecord:
    made = logging.LogRecord(name, level, __file__, 42, msg, args or None, None, "here")
    made.fields = fields
    return made


@pytest.fixture(autouse=True)
def no_worker() -> Iterator[None]:
    yield
    logs.set_worker(None)


# ---- formats ---------------------------------------------------------------------------------
def test_json_line_carries_fields_as_keys() -> None:
    line = logs.JsonFormatter().format(
        record("x %s", "a", destination="sip:a", old="up", new="down", listener=2)
    )
    entry = json.loads(line)
    assert entry["msg"] == "x a"
    assert entry["destination"] == "sip:a"
    assert (entry["old"], entry["new"], entry["listener"]) == ("up", "down", 2)
    assert entry["level"] == "warning"
    assert entry["ts"].endswith("Z")
    assert "worker" not in entry


def test_json_fields_never_replace_the_fixed_keys() -> None:
    made = record("real")
    made.fields = {"msg": "fake", "ts": "t", "level": "x"}
    entry = json.loads(logs.JsonFormatter().format(made))
    assert (entry["msg"], entry["level"]) == ("real", "warning")
    assert entry["ts"] != "t"


def test_json_writes_odd_values_as_text() -> None:
    entry = json.loads(logs.JsonFormatter().format(record("m", state=State.DOWN, to=PBX)))
    assert entry["state"] == str(State.DOWN)
    assert entry["to"] == "udp:127.0.0.1:5080"


def test_worker_is_a_key_and_a_tag() -> None:
    logs.set_worker(1)
    assert json.loads(logs.JsonFormatter().format(record("m")))["worker"] == 1
    assert " siplb [w1]: m" in logs.HumanFormatter().format(record("m"))


def test_human_line_has_date_and_milliseconds() -> None:
    line = logs.HumanFormatter().format(record("m"))
    stamp = line.split(" ")[0]
    assert len(stamp) == len("2026-12-03T16:20:00.123Z")
    assert (stamp[4], stamp[10], stamp[19]) == ("-", "T", ".")
    assert line.split(" ")[1] == "WARNING"


def test_human_line_appends_only_the_fields_the_text_does_not_show() -> None:
    line = logs.HumanFormatter().format(
        record("destination %s: down", "sip:a", destination="sip:a", set="pbx", cause="a b")
    )
    assert line.endswith('destination sip:a: down set=pbx cause="a b"')


def test_syslog_line_has_the_tag_and_no_time() -> None:
    line = logs.HumanFormatter(stamp=False, syslog=True).format(record("m"))
    assert line.startswith("siplb[")
    assert "]: WARNING siplb: m" in line
    json_line = logs.SyslogJsonFormatter().format(record("m", set="pbx"))
    assert json.loads(json_line.partition("]: ")[2])["set"] == "pbx"


def test_log_fields_leaves_out_none_and_marks_always(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("siplb.test")
    with caplog.at_level(logging.INFO):
        logs.log_fields(log, logging.INFO, "hello %s", "x", always=True, a=1, b=None)
    (made,) = caplog.records
    assert made.fields == {"a": 1}  # type: ignore[attr-defined]
    assert made.always is True  # type: ignore[attr-defined]
    assert made.funcName == "test_log_fields_leaves_out_none_and_marks_always"


def test_event_fields_name_what_operators_look_for() -> None:
    event = StateChanged("sip:a", State.UP, State.DOWN, "probe timeout", 12.0)
    fields = logs.event_fields(event, set="pbx")
    assert fields == {
        "event": "StateChanged",
        "destination": "sip:a",
        "old": str(State.UP),
        "new": str(State.DOWN),
        "cause": "probe timeout",
        "set": "pbx",
    }
    assert logs.event_fields(MessageDropped("bad", CALLER))["source"] == str(CALLER)


# ---- repeats ---------------------------------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_repeat_filter_keeps_one_line_then_counts_the_rest() -> None:
    clock = Clock()
    limit = logs.RepeatFilter(10.0, clock)
    same = "cannot connect to %s: %s"
    assert limit.filter(record(same, "tcp:a", "refused", level=logging.INFO))
    for _ in range(5):
        clock.now += 1.0
        assert not limit.filter(record(same, "tcp:a", "refused", level=logging.INFO))
    assert limit.filter(record(same, "tcp:b", "refused", level=logging.INFO))  # other values
    clock.now += 10.0
    after = record(same, "tcp:a", "refused", level=logging.INFO)
    assert limit.filter(after)
    assert after.getMessage() == "cannot connect to tcp:a: refused (5 more like this left out)"
    assert after.fields["left_out"] == 5  # type: ignore[attr-defined]
    clock.now += 11.0
    quiet = record(same, "tcp:a", "refused", level=logging.INFO)
    assert limit.filter(quiet)
    assert quiet.getMessage() == "cannot connect to tcp:a: refused"


def test_repeat_filter_lets_debug_and_always_lines_through() -> None:
    limit = logs.RepeatFilter(10.0, Clock())
    for _ in range(3):
        assert limit.filter(record("m", level=logging.DEBUG))
        always = record("destination %s: up -> down", "sip:a")
        always.always = True
        assert limit.filter(always)


def test_repeat_filter_on_a_handler() -> None:
    stream: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            stream.append(self.format(record))

    handler = Collect()
    handler.addFilter(logs.RepeatFilter(60.0))
    log = logging.getLogger("siplb.test.repeat")
    log.addHandler(handler)
    log.propagate = False
    try:
        for _ in range(50):
            log.warning("no UDP listener to reach %s", "udp:192.0.2.1:5060")
        logs.log_fields(log, logging.WARNING, "state %s", "x", always=True)
        logs.log_fields(log, logging.WARNING, "state %s", "x", always=True)
    finally:
        log.removeHandler(handler)
    assert stream == ["no UDP listener to reach udp:192.0.2.1:5060", "state x", "state x"]


def test_refusal_log_shares_a_line_past_its_capacity() -> None:
    limiter = logs.RefusalLog(every=10.0, capacity=2)
    assert limiter.admit("r", "a", 0.0) == 0
    assert limiter.admit("r", "b", 0.0) == 0
    assert limiter.admit("r", "c", 0.0) == 0  # the line of "other sources"
    assert limiter.admit("r", "d", 0.0) is None


# ---- journal ---------------------------------------------------------------------------------
def parse_journal(entry: bytes) -> dict[str, str]:
    """The journal's native format: NAME=value lines, or NAME, a 64-bit length, the value."""
    fields: dict[str, str] = {}
    at = 0
    while at < len(entry):
        end = entry.index(b"\n", at)
        line = entry[at:end]
        if b"=" in line:
            name, _, value = line.partition(b"=")
            at = end + 1
        else:
            name = line
            (size,) = struct.unpack_from("<Q", entry, end + 1)
            value = entry[end + 9 : end + 9 + size]
            assert entry[end + 9 + size : end + 10 + size] == b"\n"
            at = end + 10 + size
        fields[name.decode()] = value.decode()
    return fields


def test_journal_entry_has_message_priority_identifier_and_fields() -> None:
    logs.set_worker(0)
    entry = logs.journal_entry(
        record("destination %s: down", "sip:a", destination="sip:a", call_id="c1", set="pbx")
    )
    fields = parse_journal(entry)
    assert fields["MESSAGE"] == "destination sip:a: down call_id=c1 set=pbx"
    assert fields["PRIORITY"] == "4"
    assert fields["SYSLOG_IDENTIFIER"] == "siplb"
    assert fields["DESTINATION"] == "sip:a"
    assert fields["CALL_ID"] == "c1"
    assert fields["SET"] == "pbx"
    assert fields["WORKER"] == "0"
    assert fields["LOGGER"] == "siplb"


def test_journal_multiline_values_use_the_binary_form() -> None:
    fields = parse_journal(logs.journal_entry(record("reload refused:\n%s", "line 1\nline 2")))
    assert fields["MESSAGE"] == "reload refused:\nline 1\nline 2"


@pytest.mark.parametrize(
    ("key", "name"),
    [("call_id", "CALL_ID"), ("set", "SET"), ("_x-y", "X_Y"), ("9a", "A"), ("__", None)],
)
def test_journal_names(key: str, name: str | None) -> None:
    assert logs.journal_name(key) == name


def test_journal_handler_sends_one_datagram_per_line(tmp_path: Path) -> None:
    path = str(tmp_path / "journal.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    server.settimeout(2.0)
    handler = logs.JournalHandler(path)
    try:
        handler.handle(record("m %s", "x", level=logging.ERROR, source="udp:1.2.3.4:5060"))
        fields = parse_journal(server.recv(65536))
    finally:
        handler.close()
        server.close()
    assert fields["MESSAGE"] == "m x source=udp:1.2.3.4:5060"
    assert fields["PRIORITY"] == "3"
    assert fields["SOURCE"] == "udp:1.2.3.4:5060"


def test_no_journal_is_an_error_at_the_start(tmp_path: Path) -> None:
    with pytest.raises(OSError, match="no journal at"):
        logs.JournalHandler(str(tmp_path / "absent.sock"))


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("/dev/log", "/dev/log"),
        ("127.0.0.1:514", ("127.0.0.1", 514)),
        ("[::1]:514", ("::1", 514)),
    ],
)
def test_syslog_address(text: str, address: object) -> None:
    assert logs.syslog_address(text) == address


def test_syslog_address_needs_a_port() -> None:
    with pytest.raises(ValueError, match="host:port"):
        logs.syslog_address("localhost")


# ---- --log-level debug ---------------------------------------------------------------------------
def test_first_line_and_call_id() -> None:
    assert logs.first_line(INVITE) == "INVITE sip:bob@example.com SIP/2.0"
    assert logs.call_id_of(INVITE) == "abc@127.0.0.1"
    assert logs.call_id_of(b"BYE sip:a SIP/2.0\r\ni: short\r\n\r\n") == "short"
    assert logs.call_id_of(b"garbage") is None


DECISIONS: list[tuple[list[Send], list[object], str]] = [
    ([Send(b"INVITE sip:b SIP/2.0\r\n", PBX, 0)], [], "forwarded to udp:127.0.0.1:5080"),
    (
        [Send(b"SIP/2.0 100 Trying\r\n", CALLER, 0), Send(b"INVITE x", PBX, 0)],
        [],
        "answered 100; forwarded to udp:127.0.0.1:5080",
    ),
    (
        [Send(b"SIP/2.0 503 Service Unavailable\r\n", CALLER, 0)],
        [RequestRejected(503, "no destination", "INVITE", CALLER)],
        "answered 503",
    ),
    ([], [MessageDropped("banned source", CALLER)], "dropped: banned source"),
    ([], [], "absorbed (an answer to a probe, a retransmission, or an ACK that ends here)"),
]


@pytest.mark.parametrize(("sends", "events", "text"), DECISIONS)
def test_decision(sends: list[Send], events: list[object], text: str) -> None:
    assert logs.decision(str(CALLER), sends, events, [])[0] == text


@pytest.mark.parametrize(
    ("index", "kind"),
    [(0, "forwarded"), (1, "forwarded"), (2, "answered"), (3, "dropped"), (4, "absorbed")],
)
def test_decision_field(index: int, kind: str) -> None:
    sends, events, _ = DECISIONS[index]
    assert logs.decision(str(CALLER), sends, events, [])[1]["decision"] == kind


def test_decision_of_a_hand_over() -> None:
    handover = HandOver(Member("n1", 1), INVITE, CALLER, 0)
    text, fields = logs.decision(str(CALLER), [], [], [handover])
    assert text == "handed over to n1.1"
    assert fields["decision"] == "handed_over"


def test_trace_line(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="siplb.sip"):
        logs.trace_message(INVITE, str(CALLER), 0, [Send(INVITE, PBX, 0)], [])
    (made,) = caplog.records
    assert made.getMessage() == (
        "INVITE sip:bob@example.com SIP/2.0 from udp:127.0.0.1:5070 (Call-ID abc@127.0.0.1): "
        "forwarded to udp:127.0.0.1:5080"
    )
    fields = made.fields  # type: ignore[attr-defined]
    assert fields["call_id"] == "abc@127.0.0.1"
    assert fields["decision"] == "forwarded"
    assert fields["to"] == "udp:127.0.0.1:5080"


def test_human_line_leaves_the_event_kind_to_the_text() -> None:
    line = logs.HumanFormatter().format(record("node drained", event="node", cause="stop"))
    assert line.endswith("siplb: node drained cause=stop")


# ---- setup and errors ----------------------------------------------------------------------------
@pytest.fixture
def root_handlers() -> Iterator[None]:
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    yield
    for handler in root.handlers:
        if handler not in saved:
            handler.close()
    root.handlers[:] = saved
    root.setLevel(level)


@pytest.mark.usefixtures("root_handlers")
def test_setup_logging_puts_one_handler_with_the_repeat_filter() -> None:
    logs.setup_logging("debug", "json")
    (handler,) = logging.getLogger().handlers
    assert isinstance(handler.formatter, logs.JsonFormatter)
    assert any(isinstance(f, logs.RepeatFilter) for f in handler.filters)
    assert logging.getLogger().level == logging.DEBUG


@pytest.mark.usefixtures("root_handlers")
def test_setup_logging_refuses_an_unknown_target() -> None:
    with pytest.raises(ValueError, match="stderr, syslog or journald"):
        logs.setup_logging("info", "human", "file")


def test_listener_error_names_the_listener() -> None:
    cause = OSError(98, "error while attempting to bind on address: address already in use")
    error = logs.ListenerError(0, "edge", "tcp", ("::1", 5060), cause)
    assert str(error) == "cannot listen on listener 'edge' (tcp [::1]:5060): Address already in use"
    assert error.errno == 98
    assert error.fields == {"listener": "edge", "transport": "tcp", "address": "[::1]:5060"}
    again = logs.ListenerError(1, None, "udp", ("127.0.0.1", 5060), error)
    assert str(again) == "cannot listen on listener 1 (udp 127.0.0.1:5060): Address already in use"


def test_lists_are_comma_separated_and_empty_ones_left_out() -> None:
    made = record("reloaded", added=["pbx sip:a", "pbx sip:b"], removed=[])
    assert logs.body(made) == 'reloaded added="pbx sip:a,pbx sip:b"'
    fields = parse_journal(logs.journal_entry(made))
    assert fields["ADDED"] == "pbx sip:a,pbx sip:b"
    assert "REMOVED" not in fields
    assert json.loads(logs.JsonFormatter().format(made))["removed"] == []


def test_a_syslog_gone_costs_the_line_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = str(tmp_path / "log.sock")
    sink = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sink.bind(path)
    handler = logs.SyslogHandler(path)
    sink.close()
    Path(path).unlink()
    try:
        handler.handle(record("m"))
    finally:
        handler.close()
    assert handler.lost == 1
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    ("message", "fields", "appended"),
    [
        ("OPTIONS sip:a SIP/2.0: answered 200", {"listener": 0, "status": 200}, " listener=0"),
        ("listening on udp 127.0.0.1:5060", {"listener": 2}, " listener=2"),
        ("worker 1 of 2 started", {"worker": 1}, ""),
        ("cannot connect to tcp:10.0.0.1:5060: refused", {"to": "tcp:10.0.0.1:5060"}, ""),
    ],
)
def test_short_values_count_as_shown_only_as_words(
    message: str, fields: dict[str, object], appended: str
) -> None:
    assert logs.body(record(message, **fields)) == message + appended
