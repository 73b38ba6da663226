"""Call accounting: counts derived from the live table, never negative, unknown keys ignored."""

from __future__ import annotations

from collections.abc import Callable, Hashable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from siplb.dispatch.accounting import CallAccounting, CallEntry

A, B = "sip:10.0.0.1:5060", "sip:10.0.0.2:5060"
K1, K2, K3 = ("c1@x", "t1"), ("c2@x", "t2"), ("c3@x", "t3")


def test_call_lifecycle() -> None:
    acct = CallAccounting()
    acct.setup_started(K1, A, 1.0)
    acct.setup_started(K2, A, 2.0)
    assert (acct.active(A), acct.active(B), len(acct)) == (2, 0, 2)
    acct.moved(K2, B, 3.0)
    assert (acct.active(A), acct.active(B)) == (1, 1)
    assert acct.get(K2) == CallEntry(K2, B, started=2.0, seen=3.0)
    acct.confirmed(K2, 4.0)
    acct.confirmed(K2, 4.5)  # retransmitted 2xx
    assert acct.calls_total(B) == 1
    assert acct.calls_total(A) == 0
    assert acct.ended(K2) == CallEntry(K2, B, started=2.0, seen=4.0, confirmed=True)
    assert acct.ended(K2) is None
    assert (acct.active(A), acct.active(B), acct.calls_total(B)) == (1, 0, 1)
    assert acct.uris() == frozenset({A})
    assert K1 in acct
    assert K2 not in acct


UNKNOWN_KEY_CASES = [
    ("ended", lambda a: a.ended(K3)),
    ("confirmed", lambda a: a.confirmed(K3, 5.0)),
    ("moved", lambda a: a.moved(K3, B, 5.0)),
    ("touch", lambda a: a.touch(K3, 5.0)),
]


@pytest.mark.parametrize(("name", "op"), UNKNOWN_KEY_CASES)
def test_unknown_key_ignored(name: str, op: Callable[[CallAccounting], object]) -> None:
    acct = CallAccounting()
    acct.setup_started(K1, A, 1.0)
    op(acct)
    assert (acct.active(A), acct.active(B), len(acct), acct.calls_total(B)) == (1, 0, 1, 0)
    assert K3 not in acct


def test_never_negative() -> None:
    acct = CallAccounting()
    acct.setup_started(K1, A, 1.0)
    for _ in range(3):
        acct.ended(K1)
    assert acct.active(A) == 0
    assert acct.uris() == frozenset()


def test_setup_again_moves_the_call() -> None:
    acct = CallAccounting()
    acct.setup_started(K1, A, 1.0)
    acct.setup_started(K1, B, 2.0)
    assert (acct.active(A), acct.active(B), len(acct)) == (0, 1, 1)


def test_confirmed_call_does_not_move() -> None:
    acct = CallAccounting()
    acct.setup_started(K1, A, 1.0)
    acct.confirmed(K1, 2.0)
    acct.moved(K1, B, 3.0)
    assert (acct.active(A), acct.active(B)) == (1, 0)


EXPIRE_CASES = [
    # confirmed?, touched at, now, expired?   (setup at 0, setup_timeout 32, max_age 3600)
    (False, None, 32.0, False),
    (False, None, 32.5, True),
    (True, None, 3600.0, False),
    (True, None, 3600.5, True),
    (True, 3000.0, 6500.0, False),
    (True, 3000.0, 6600.5, True),
]


@pytest.mark.parametrize(("confirm", "touched", "now", "expired"), EXPIRE_CASES)
def test_expire(confirm: bool, touched: float | None, now: float, expired: bool) -> None:
    acct = CallAccounting()
    acct.setup_started(K1, A, 0.0)
    if confirm:
        acct.confirmed(K1, 0.0)
    if touched is not None:
        acct.touch(K1, touched)
    removed = acct.expire(now, max_age=3600.0, setup_timeout=32.0)
    assert [e.key for e in removed] == ([K1] if expired else [])
    assert acct.active(A) == (0 if expired else 1)


ACK_CASES = [
    # acked?, in-dialog touch?, now, expired?   (2xx at 10, ack_timeout 32)
    (False, False, 42.0, False),
    (False, False, 42.5, True),  # a 2xx never ACKed stops holding the destination
    (True, False, 42.5, False),
    (False, True, 42.5, False),  # an in-dialog request shows the dialog is up
]


@pytest.mark.parametrize(("ack", "touch", "now", "expired"), ACK_CASES)
def test_unacknowledged_2xx_ends_the_call(
    ack: bool, touch: bool, now: float, expired: bool
) -> None:
    acct = CallAccounting()
    acct.setup_started(K1, A, 0.0)
    acct.confirmed(K1, 10.0)
    assert acct.unconfirmed() == 1
    if ack:
        acct.acked(K1, 10.0)
    if touch:
        acct.touch(K1, 10.0)
    removed = acct.expire(now, max_age=3600.0, setup_timeout=32.0, ack_timeout=32.0)
    assert [e.key for e in removed] == ([K1] if expired else [])
    assert acct.unconfirmed() == (0 if expired or ack or touch else 1)


def test_ack_before_2xx_is_ignored() -> None:
    acct = CallAccounting()
    acct.setup_started(K1, A, 0.0)
    acct.acked(K1, 1.0)
    acct.confirmed(K1, 2.0)
    assert acct.expire(40.0, max_age=3600.0, setup_timeout=32.0, ack_timeout=32.0)


def test_expire_measures_setup_from_the_last_attempt() -> None:
    acct = CallAccounting()
    acct.setup_started(K1, A, 0.0)
    acct.moved(K1, B, 30.0)
    assert acct.expire(40.0, max_age=3600.0, setup_timeout=32.0) == ()
    assert [e.uri for e in acct.expire(62.5, max_age=3600.0, setup_timeout=32.0)] == [B]
    assert len(acct) == 0


KEYS = st.sampled_from([K1, K2, K3])
URIS = st.sampled_from([A, B])
OPS = st.one_of(
    st.tuples(st.just("start"), KEYS, URIS),
    st.tuples(st.just("move"), KEYS, URIS),
    st.tuples(st.just("confirm"), KEYS, URIS),
    st.tuples(st.just("end"), KEYS, URIS),
)


@given(st.lists(OPS, max_size=50))
def test_counts_follow_the_table(ops: list[tuple[str, Hashable, str]]) -> None:
    acct = CallAccounting()
    model: dict[Hashable, tuple[str, bool]] = {}  # key -> (uri, confirmed)
    confirmed_total = {A: 0, B: 0}
    for now, (op, key, uri) in enumerate(ops):
        if op == "start":
            acct.setup_started(key, uri, float(now))
            model[key] = (uri, False)
        elif op == "move":
            acct.moved(key, uri, float(now))
            if key in model and not model[key][1]:
                model[key] = (uri, False)
        elif op == "confirm":
            acct.confirmed(key, float(now))
            if key in model and not model[key][1]:
                model[key] = (model[key][0], True)
                confirmed_total[model[key][0]] += 1
        else:
            acct.ended(key)
            model.pop(key, None)
        for u in (A, B):
            assert acct.active(u) == sum(1 for v, _ in model.values() if v == u) >= 0
            assert acct.calls_total(u) == confirmed_total[u]
        assert len(acct) == len(model)
        assert acct.uris() == frozenset(v for v, _ in model.values())
