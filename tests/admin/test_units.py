"""The admin side's plain-data parts: rate history, latency figures, the journal and its
counters, reload diffs, the status table and token lookup."""

from __future__ import annotations

from pathlib import Path

import pytest

from siplb.admin.client import format_status, resolve_token
from siplb.admin.journal import Journal, Recorder, drop_category
from siplb.admin.meter import RateHistory, latency_stats
from siplb.admin.reloads import ReloadOutcome, diff_sets
from siplb.dispatch import DestinationSpec, SetSpec, State, StateChanged
from siplb.proxy.actions import CallsExpired, FailedOver, MessageDropped, RequestRejected, Target

# ---- RateHistory ------------------------------------------------------------------------------
RATES = [
    # (samples of (at, {key: total}), key, expected last rate, expected series)
    ([(0.0, {"a": 5}), (1.0, {"a": 8})], "a", 3.0, [0.0, 3.0]),
    ([(0.0, {"a": 5}), (2.0, {"a": 9})], "a", 2.0, [0.0, 2.0]),
    ([(0.0, {"a": 5}), (1.0, {"a": 2})], "a", 0.0, [0.0, 0.0]),  # a counter that went back
    (
        [(0.0, {"a": 1}), (1.0, {"a": 1, "b": 4}), (2.0, {"a": 1, "b": 6})],
        "b",
        2.0,
        [0.0, 0.0, 2.0],
    ),
    ([(0.0, {"a": 1}), (1.0, {"b": 1})], "a", 0.0, [0.0, 0.0]),  # forgotten key: zeros
]


@pytest.mark.parametrize(("samples", "key", "last", "series"), RATES)
def test_rate_history(
    samples: list[tuple[float, dict[str, int]]], key: str, last: float, series: list[float]
) -> None:
    history = RateHistory(span=10)
    for at, totals in samples:
        history.sample(totals, at)
    assert history.series(key) == series
    assert history.series(key)[-1] == last
    assert len(history.times) == len(series)


def test_rate_history_mean_span_and_sum() -> None:
    history = RateHistory(span=4)
    for second in range(8):
        history.sample({"a": second * 2, "b": second}, float(second))
    assert history.series("a") == [2.0, 2.0, 2.0, 2.0]  # only the last 4 samples are kept
    assert history.rate("a", window=3) == 2.0
    assert history.summed(["a", "b"]) == [3.0, 3.0, 3.0, 3.0]
    assert history.summed(["a", "b"], last=2) == [3.0, 3.0]
    assert history.rate("unknown") == 0.0


LATENCIES = [
    ([], None),
    ([0.001], (1.0, 1.0, 1)),
    ([0.001, 0.003], (2.0, 3.0, 2)),
    ([i / 1000 for i in range(1, 101)], (50.5, 95.0, 100)),
]


@pytest.mark.parametrize(("samples", "expected"), LATENCIES)
def test_latency_stats(samples: list[float], expected: tuple[float, float, int] | None) -> None:
    stats = latency_stats(samples)
    if expected is None:
        assert stats is None
        return
    assert stats is not None
    assert (stats.avg_ms, stats.p95_ms, stats.samples) == pytest.approx(expected)


# ---- Journal and Recorder ---------------------------------------------------------------------
def test_journal_keeps_the_last_entries_and_answers_after() -> None:
    journal = Journal(size=3)
    for i in range(5):
        journal.add("state", f"e{i}", float(i))
    assert journal.last_id == 5
    assert len(journal) == 3
    assert [e.id for e in journal.after(0)] == [3, 4, 5]
    assert [e.id for e in journal.after(3)] == [4, 5]
    assert [e.id for e in journal.after(0, limit=1)] == [5]
    assert journal.after(5) == []


SOURCE = Target("udp", "127.0.0.1", 5)
OBSERVED = [
    (MessageDropped("malformed: bad header", SOURCE), {"drops": {"malformed": 1}}),
    (MessageDropped("response whose top Via is not ours", SOURCE), {"journal": 0}),
    (
        FailedOver("c1", "pbx", "sip:a", "timeout"),
        {"failovers": {("pbx", "sip:a"): 1}, "journal": 1},
    ),
    (
        StateChanged("sip:a", State.UP, State.DOWN, "probe timeout", 10.0),
        {"journal": 1, "at": 110.0},
    ),
    (CallsExpired(3), {"journal": 1}),
    (RequestRejected(503, "all-down", "INVITE", SOURCE), {"journal": 0}),
]


@pytest.mark.parametrize(("event", "expected"), OBSERVED)
def test_recorder_observes_proxy_events(event: object, expected: dict[str, object]) -> None:
    recorder = Recorder(clock=lambda: 1000.0)
    recorder.observe(event, offset=100.0)
    if "drops" in expected:
        assert dict(recorder.drops) == expected["drops"]
    if "failovers" in expected:
        assert dict(recorder.failovers) == expected["failovers"]
    if "journal" in expected:
        assert len(recorder.journal) == expected["journal"]
    if "at" in expected:
        (entry,) = recorder.journal.after(0)
        assert entry.at == expected["at"]
        assert entry.to_json()["new"] == "down"


def test_recorder_counts_reloads() -> None:
    recorder = Recorder(clock=lambda: 5.0)
    recorder.reloaded(True, "reloaded x")
    recorder.reloaded(False, "refused")
    assert dict(recorder.reloads) == {"ok": 1, "refused": 1}
    assert recorder.last_reload_at == 5.0
    assert [e.kind for e in recorder.journal.after(0)] == ["reload", "reload"]


@pytest.mark.parametrize(
    ("reason", "category"),
    [
        ("malformed: x y", "malformed"),
        ("ACK matching no transaction", "ACK matching no transaction"),
        ("", "unknown"),
    ],
)
def test_drop_category(reason: str, category: str) -> None:
    assert drop_category(reason) == category


# ---- reload diffs -----------------------------------------------------------------------------
def spec(uri: str, weight: int = 1) -> DestinationSpec:
    host, port = uri.rsplit(":", 1)
    return DestinationSpec(uri, host[4:], int(port), weight=weight)


def test_diff_sets() -> None:
    old = (SetSpec("pbx", (spec("sip:1.1.1.1:1"), spec("sip:1.1.1.1:2"))),)
    new = (
        SetSpec("pbx", (spec("sip:1.1.1.1:1", 4), spec("sip:1.1.1.1:3"))),
        SetSpec("reg", (spec("sip:1.1.1.1:2"),)),
    )
    added, removed, reweighted = diff_sets(old, new)
    assert added == ("pbx sip:1.1.1.1:3", "reg sip:1.1.1.1:2")
    assert removed == ("pbx sip:1.1.1.1:2",)
    assert reweighted == ("pbx sip:1.1.1.1:1 1->4",)


def test_reload_outcome_summary() -> None:
    ok = ReloadOutcome(True, "f.toml", "ab" * 32, added=("pbx sip:x",))
    assert ok.summary() == "reloaded f.toml (sha256 abababababab): added pbx sip:x"
    refused = ReloadOutcome(False, "f.toml", problems=(("sets[0]", "bad"), ("", "worse")))
    assert refused.summary() == "reload of f.toml refused: 2 problem(s)"
    assert refused.to_json()["problems"] == [
        {"path": "sets[0]", "message": "bad"},
        {"path": "", "message": "worse"},
    ]


# ---- siplb status table and the token ---------------------------------------------------------
STATUS = {
    "version": "0.1.0",
    "node_id": "n1",
    "uptime_s": 3725.0,
    "accepting": True,
    "config": {"file": "/etc/siplb.toml", "sha256": "0123456789abcdef" * 4},
    "listeners": [{"transport": "udp", "address": "127.0.0.1:5060"}],
    "totals": {"active_calls": 7, "cps": 2.5, "transactions": {"server": 3, "client": 4}},
}
DEST = {
    "uri": "sip:10.0.0.5:5060",
    "state": "up",
    "weight": 2,
    "priority": 0,
    "active_calls": 7,
    "max_calls": 100,
    "cps": 2.5,
    "latency_ms": {"avg": 0.41, "p95": 0.9, "samples": 20},
    "failures": 1,
    "since": 1000.0,
}
SETS = [
    {"name": "pbx", "algorithm": "weighted", "removed": False, "destinations": [DEST]},
    {
        "name": "old",
        "algorithm": "",
        "removed": True,
        "destinations": [
            dict(DEST, uri="sip:10.0.0.6:5060", state="draining", latency_ms=None, max_calls=None)
        ],
    },
]


def test_status_table() -> None:
    lines = format_status(STATUS, SETS, now=1065.0).splitlines()
    assert lines[0] == "siplb 0.1.0 node n1, up 1h02m, config /etc/siplb.toml (sha256 0123456789ab)"
    assert lines[1] == "Listeners: udp 127.0.0.1:5060"
    assert lines[2] == "Calls: 7 active, 2.5/s; transactions 7"
    assert lines[3] == "Set Algorithm"
    assert lines[4].split() == [
        "->",
        "Destination",
        "State",
        "Weight",
        "Prio",
        "ActiveCalls",
        "Max",
        "CPS",
        "Latency(ms)",
        "Fails",
        "Since",
    ]
    assert lines[5] == "pbx weighted"
    assert lines[6].split() == [
        "->",
        "sip:10.0.0.5:5060",
        "up",
        "2",
        "0",
        "7",
        "100",
        "2.50",
        "0.410/0.900",
        "1",
        "1m05s",
    ]
    assert lines[7] == "old - (removed by reload)"
    assert lines[8].split()[2:9] == ["draining", "2", "0", "7", "-", "2.50", "-"]
    # each destination once: 7 + 7 calls, 2.50 + 2.50 per second, 1 + 1 failures
    assert lines[9].split() == ["=", "Total:", "2", "destinations,", "1", "up", "14", "5.00", "2"]
    assert len(lines) == 10
    assert len({line.index("State") for line in lines[4:5]}) == 1


def test_token_lookup_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file = tmp_path / "token"
    file.write_text("from-file\n")
    env_file = tmp_path / "env-token"
    env_file.write_text("from-env-file\n")
    monkeypatch.delenv("SIPLB_ADMIN_TOKEN", raising=False)
    monkeypatch.delenv("SIPLB_ADMIN_TOKEN_FILE", raising=False)
    assert resolve_token(None, "from-config") == "from-config"
    monkeypatch.setenv("SIPLB_ADMIN_TOKEN_FILE", str(env_file))
    assert resolve_token(None, "from-config") == "from-env-file"
    monkeypatch.setenv("SIPLB_ADMIN_TOKEN", "from-env")
    assert resolve_token(None, "from-config") == "from-env"
    assert resolve_token(file, "from-config") == "from-file"
