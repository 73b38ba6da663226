"""The pure rules of destinations by DNS name (``siplb.dispatch.names``): RFC 3263 lookup order,
RFC 2782 priorities and weights as destinations, the cache's TTLs and its last good answer."""

from __future__ import annotations

import random

import pytest

from siplb.dispatch import Dispatcher, HealthSettings
from siplb.dispatch.names import (
    Answer,
    NameStatus,
    NameTable,
    Naptr,
    Srv,
    Target,
    address_targets,
    destination_specs,
    expand,
    keep_weights,
    naptr_candidates,
    queries,
    srv_candidates,
    srv_targets,
    srv_transport,
    uses_naptr,
)
from siplb.dispatch.spec import Algorithm, DestinationSpec, NameSpec, Query, SetSpec

# ---- RFC 3263 4.1: which lookups, in which order ----------------------------------------------

NAPTR_CASES = [
    pytest.param(
        # RFC 3263 4.1's example: order then preference; the client takes what it supports
        [
            Naptr(50, 50, "s", "SIPS+D2T", "_sips._tcp.example.com"),
            Naptr(90, 50, "s", "SIP+D2T", "_sip._tcp.example.com"),
            Naptr(100, 50, "s", "SIP+D2U", "_sip._udp.example.com"),
        ],
        False,
        [
            ("tls", "_sips._tcp.example.com"),
            ("tcp", "_sip._tcp.example.com"),
            ("udp", "_sip._udp.example.com"),
        ],
        id="rfc3263-example",
    ),
    pytest.param(
        [
            Naptr(10, 20, "S", "SIP+D2U", "b.example.com"),
            Naptr(10, 10, "S", "SIP+D2T", "a.example.com"),
        ],
        False,
        [("tcp", "a.example.com"), ("udp", "b.example.com")],
        id="preference-inside-order",
    ),
    pytest.param(
        [
            Naptr(10, 10, "s", "SIP+D2U", "_sip._udp.example.com"),
            Naptr(20, 10, "s", "SIPS+D2T", "_sips._tcp.example.com"),
        ],
        True,
        [("tls", "_sips._tcp.example.com")],
        id="sips-takes-tls-only",
    ),
    pytest.param(
        [
            Naptr(10, 10, "u", "SIP+D2U", "x.example.com"),  # not an SRV step
            Naptr(10, 10, "s", "SIP+D2S", "y.example.com"),  # SCTP: not supported
            Naptr(10, 10, "s", "E2U+sip", "z.example.com"),  # ENUM, not RFC 3263
        ],
        False,
        [],
        id="unusable-records",
    ),
]


@pytest.mark.parametrize(("records", "secure", "expected"), NAPTR_CASES)
def test_naptr_candidates(
    records: list[Naptr], secure: bool, expected: list[tuple[str, str]]
) -> None:
    assert naptr_candidates(records, secure) == expected


SRV_CANDIDATE_CASES = [
    (Query("example.com"), [("udp", "_sip._udp.example.com"), ("tcp", "_sip._tcp.example.com")]),
    (Query("example.com", secure=True), [("tls", "_sips._tcp.example.com")]),
    (Query("example.com", transport="tcp"), [("tcp", "_sip._tcp.example.com")]),
    (Query("example.com", transport="tls", secure=True), [("tls", "_sips._tcp.example.com")]),
]


@pytest.mark.parametrize(("query", "expected"), SRV_CANDIDATE_CASES)
def test_srv_candidates_without_naptr(query: Query, expected: list[tuple[str, str]]) -> None:
    assert srv_candidates(query) == expected


USES_NAPTR_CASES = [
    (Query("example.com"), True),  # no port, no transport: NAPTR first
    (Query("example.com", secure=True), True),
    (Query("example.com", transport="tcp"), False),  # a transport: straight to its SRV
    (Query("example.com", port=5060), False),  # a port: A/AAAA only
    (Query("_sip._udp.example.com", srv=True, transport="udp"), False),
]


@pytest.mark.parametrize(("query", "expected"), USES_NAPTR_CASES)
def test_naptr_only_without_port_and_transport(query: Query, expected: bool) -> None:
    assert uses_naptr(query) is expected


@pytest.mark.parametrize(
    ("name", "transport"),
    [
        ("_sip._udp.example.com", "udp"),
        ("_SIP._TCP.example.com", "tcp"),
        ("_sips._tcp.example.com", "tls"),
        ("_sip._sctp.example.com", None),
        ("_sip._udp.", None),
        ("example.com", None),
    ],
)
def test_srv_transport(name: str, transport: str | None) -> None:
    assert srv_transport(name) == transport


# ---- RFC 2782: the records' order, and what they make of a set ------------------------------------

ADDRESSES = {"a.example.com": ["10.0.0.1"], "b.example.com": ["10.0.0.3", "10.0.0.2"]}


def test_srv_targets_in_priority_then_weight_order() -> None:
    records = [
        Srv(20, 1, 5060, "a.example.com"),
        Srv(10, 1, 5070, "a.example.com"),
        Srv(10, 5, 5080, "b.example.com"),
        Srv(10, 9, 5090, "gone.example.com"),  # no address: left out
    ]
    targets = srv_targets(records, ADDRESSES, "udp")
    assert [(t.host, t.port, t.priority, t.weight) for t in targets] == [
        ("10.0.0.2", 5080, 10, 5),
        ("10.0.0.3", 5080, 10, 5),
        ("10.0.0.1", 5070, 10, 1),
        ("10.0.0.1", 5060, 20, 1),
    ]


def test_the_same_address_twice_is_one_target() -> None:
    records = [Srv(10, 1, 5060, "a.example.com"), Srv(20, 1, 5060, "a.example.com")]
    targets = srv_targets(records, ADDRESSES, "udp")
    assert [(t.uri, t.priority) for t in targets] == [("sip:10.0.0.1:5060", 10)]


@pytest.mark.parametrize(
    ("target", "uri"),
    [
        (Target("10.0.0.1", 5060, "udp"), "sip:10.0.0.1:5060"),
        (Target("10.0.0.1", 5080, "tcp"), "sip:10.0.0.1:5080;transport=tcp"),
        (Target("2001:db8::1", 5061, "tls"), "sip:[2001:db8::1]:5061;transport=tls"),
    ],
)
def test_a_target_is_a_destination_uri(target: Target, uri: str) -> None:
    assert target.uri == uri


def test_srv_set_takes_the_records_priorities_and_weights() -> None:
    spec = NameSpec("_sip._udp.pbx.example.com", Query("_sip._udp.pbx.example.com", srv=True))
    targets = srv_targets(
        [
            Srv(10, 3, 5060, "a.example.com"),
            Srv(10, 0, 5070, "a.example.com"),
            Srv(20, 1, 5080, "a.example.com"),
        ],
        ADDRESSES,
        "udp",
    )
    dests = destination_specs(spec, targets)
    assert [(d.uri, d.priority, d.weight, d.name) for d in dests] == [
        ("sip:10.0.0.1:5060", 10, 3, spec.text),
        ("sip:10.0.0.1:5070", 10, 1, spec.text),  # RFC 2782 weight 0: the smallest share
        ("sip:10.0.0.1:5080", 20, 1, spec.text),
    ]


def test_named_uri_by_srv_ranks_levels_after_its_own_priority() -> None:
    spec = NameSpec("sip:pbx.example.com", Query("pbx.example.com"), weight=7, priority=2)
    targets = srv_targets(
        [Srv(10, 4, 5060, "a.example.com"), Srv(30, 1, 5060, "b.example.com")], ADDRESSES, "udp"
    )
    dests = destination_specs(spec, targets)
    assert [(d.host, d.priority, d.weight) for d in dests] == [
        ("10.0.0.1", 2, 4),
        ("10.0.0.2", 3, 1),
        ("10.0.0.3", 3, 1),
    ]


def test_named_uri_by_address_takes_the_configured_weight() -> None:
    spec = NameSpec("sip:pbx1.internal:5070", Query("pbx1.internal", port=5070), 5, 1, 40)
    dests = destination_specs(spec, address_targets(["10.0.0.9", "10.0.0.8"], 5070, "udp"))
    assert [(d.uri, d.weight, d.priority, d.max_calls) for d in dests] == [
        ("sip:10.0.0.8:5070", 5, 1, 40),
        ("sip:10.0.0.9:5070", 5, 1, 40),
    ]


STATIC = DestinationSpec("sip:10.0.0.1:5060", "10.0.0.1", 5060)
SRV_QUERY = Query("_sip._udp.pbx.example.com", srv=True, transport="udp")
URI_QUERY = Query("pbx.example.com")
SET = SetSpec(
    "pbx",
    (STATIC,),
    Algorithm.PRIORITY,
    names=(
        NameSpec("_sip._udp.pbx.example.com", SRV_QUERY),
        NameSpec("sip:pbx.example.com", URI_QUERY),
    ),
)


def test_expand_adds_each_answered_name_once_after_the_configured_destinations() -> None:
    answers = {
        SRV_QUERY: Answer(
            (
                Target("10.0.0.1", 5060, "udp", 10, 1, True),
                Target("10.0.0.2", 5060, "udp", 10, 1, True),
            ),
            60,
        ),
        URI_QUERY: Answer((Target("10.0.0.2", 5060, "udp"), Target("10.0.0.3", 5060, "udp")), 60),
    }
    (expanded,) = expand([SET], answers)
    assert [(d.uri, d.name) for d in expanded.destinations] == [
        ("sip:10.0.0.1:5060", None),  # configured: wins over the SRV answer's same address
        ("sip:10.0.0.2:5060", "_sip._udp.pbx.example.com"),  # first name wins
        ("sip:10.0.0.3:5060", "sip:pbx.example.com"),
    ]
    assert queries([SET]) == (SRV_QUERY, URI_QUERY)


def test_a_name_without_answer_adds_nothing() -> None:
    (expanded,) = expand([SET], {})
    assert expanded.destinations == (STATIC,)


def test_expanded_sets_run_in_a_dispatcher_by_srv_priority() -> None:
    answers = {
        SRV_QUERY: Answer(
            (
                Target("10.0.0.7", 5060, "udp", 0, 1, True),
                Target("10.0.0.8", 5060, "udp", 5, 1, True),
            ),
            60,
        ),
    }
    spec = SetSpec("pbx", (), Algorithm.PRIORITY, names=(NameSpec("srv", SRV_QUERY),))
    dispatcher = Dispatcher(expand([spec], answers), HealthSettings(), random.Random(1), 0.0)
    chosen = dispatcher.choose("pbx")
    assert getattr(chosen, "uri", None) == "sip:10.0.0.7:5060"


def test_keep_weights_keeps_an_operators_weight_where_dns_did_not_change_it() -> None:
    def one(weight_a: int, weight_b: int) -> tuple[SetSpec, ...]:
        a = DestinationSpec("sip:10.0.0.1:5060", "10.0.0.1", 5060, weight=weight_a)
        b = DestinationSpec("sip:10.0.0.2:5060", "10.0.0.2", 5060, weight=weight_b)
        return (SetSpec("pbx", (a, b)),)

    before, running, after = one(1, 1), one(9, 9), one(1, 4)
    (kept,) = keep_weights(running, before, after)
    assert [d.weight for d in kept.destinations] == [9, 4]  # a: the operator's; b: the record's


# ---- the cache: TTLs clamped, last good answer on failure, status changes once ------------------

Q = Query("pbx.example.com", port=5060)
ONE = Answer((Target("10.0.0.1", 5060, "udp"),), 60)
TWO = Answer((Target("10.0.0.2", 5060, "udp"),), 60)

TTL_CASES = [(0, 5.0), (1, 5.0), (60, 60.0), (3600, 300.0)]


@pytest.mark.parametrize(("ttl", "kept"), TTL_CASES)
def test_ttl_is_clamped_between_floor_and_ceiling(ttl: float, kept: float) -> None:
    table = NameTable(5.0, 300.0)
    table.track([Q], 100.0)
    assert table.due(100.0) == [Q]
    table.answered(Q, Answer(ONE.targets, ttl), 100.0)
    assert table.next_due() == 100.0 + kept
    assert table.due(100.0 + kept - 0.01) == []
    assert table.due(100.0 + kept) == [Q]


def test_failure_keeps_the_last_good_answer_and_says_so_once() -> None:
    table = NameTable(5.0, 300.0)
    table.track([Q], 0.0)
    changed, status = table.answered(Q, ONE, 0.0)
    assert changed
    assert status is not None
    assert (status.old, status.new) == (NameStatus.PENDING, NameStatus.OK)
    first = table.failed(Q, "timed out", 60.0)
    assert first is not None
    assert (first.old, first.new) == (NameStatus.OK, NameStatus.STALE)
    assert table.failed(Q, "timed out", 65.0) is None  # the same state: nothing new to say
    assert table.answers() == {Q: ONE}
    assert table.next_due() == 70.0  # retried after the floor
    changed, status = table.answered(Q, ONE, 70.0)
    assert not changed  # the same targets: nothing to install
    assert status is not None
    assert status.new is NameStatus.OK


def test_an_empty_answer_counts_as_a_failure() -> None:
    table = NameTable(5.0, 300.0)
    table.track([Q], 0.0)
    table.answered(Q, ONE, 0.0)
    changed, status = table.answered(Q, Answer((), 60), 60.0)
    assert not changed
    assert status is not None
    assert status.new is NameStatus.STALE
    assert table.answers() == {Q: ONE}


def test_a_name_never_answered_is_unresolved_then_answers() -> None:
    table = NameTable(5.0, 300.0)
    table.track([Q], 0.0)
    status = table.failed(Q, "no server answered (REFUSED)", 0.0)
    assert status is not None
    assert status.new is NameStatus.UNRESOLVED
    assert table.answers() == {}
    changed, status = table.answered(Q, TWO, 5.0)
    assert changed
    assert status is not None
    assert status.new is NameStatus.OK
    (reading,) = table.readings()
    assert (reading.status, reading.targets, reading.error) == (NameStatus.OK, TWO.targets, "")


def test_a_changed_answer_is_reported_as_changed() -> None:
    table = NameTable(5.0, 300.0)
    table.track([Q], 0.0)
    table.answered(Q, ONE, 0.0)
    changed, status = table.answered(Q, TWO, 60.0)
    assert changed
    assert status is None


def test_track_keeps_known_answers_and_forgets_names_gone() -> None:
    other = Query("other.example.com")
    table = NameTable(5.0, 300.0)
    table.track([Q], 0.0)
    table.answered(Q, ONE, 0.0)
    table.track([Q, other], 10.0)  # a reload adds a name
    assert table.due(10.0) == [other]
    assert table.answers() == {Q: ONE}
    table.track([other], 20.0)  # and removes the first
    assert table.answers() == {}


def test_floor_must_not_exceed_ceiling() -> None:
    with pytest.raises(ValueError, match="ttl_floor"):
        NameTable(10.0, 5.0)


@pytest.mark.parametrize(
    ("query", "label"),
    [
        (Query("pbx.example.com"), "sip:pbx.example.com"),
        (
            Query("pbx.example.com", port=5070, transport="tcp"),
            "sip:pbx.example.com:5070;transport=tcp",
        ),
        (Query("pbx.example.com", secure=True, transport="tls"), "sips:pbx.example.com"),
        (
            Query("_sip._udp.pbx.example.com", srv=True, transport="udp"),
            "_sip._udp.pbx.example.com",
        ),
    ],
)
def test_a_query_is_labelled_like_the_uri_it_came_from(query: Query, label: str) -> None:
    assert query.label == label


def test_addresses_of_an_ip_version_without_listener_are_left_out() -> None:
    answers = {
        URI_QUERY: Answer((Target("10.0.0.5", 5060, "udp"), Target("2001:db8::5", 5060, "udp")), 60)
    }
    spec = SetSpec("pbx", (), names=(NameSpec("sip:pbx.example.com", URI_QUERY),))
    (v4,) = expand([spec], answers, frozenset({4}))
    assert [d.uri for d in v4.destinations] == ["sip:10.0.0.5:5060"]
    (both,) = expand([spec], answers)
    assert [d.uri for d in both.destinations] == ["sip:10.0.0.5:5060", "sip:[2001:db8::5]:5060"]
