"""Transactions through the proxy: retransmissions absorbed and sent, timeouts, clean-up timers.

RFC 3261 17.1.1.2 (Timers A, B, D), 17.1.2.2 (E, F, K), 17.2.1 (G, H, I), 17.2.2 (J), RFC 6026
(L, M). Every test drives the whole core with the fake clock, so each timer fires at its time.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from siplb.proxy.transaction import TxState
from siplb.settings import ProxySettings

from .harness import UAC, Lab, Script, make_lab

# Wait for the RFC timers alone: no early failover, one destination tried.
RFC_ONLY = ProxySettings(failover_timeout=1000.0, max_attempts=1)


def arrival_times(lab: Lab, i: int, method: str) -> list[float]:
    return lab.uas[i].arrivals(method)


def final_statuses(lab: Lab, method: str) -> list[tuple[float, int]]:
    return lab.uac.finals(method)


# ---- retransmissions from the caller -------------------------------------------------------


def test_invite_retransmission_is_absorbed_and_answered_with_the_last_provisional() -> None:
    lab = make_lab([Script(invite=(100, (180, 1.0), (200, 2.0)))])
    call = lab.uac.call()
    call.invite()
    lab.net.run(0.3)
    call.invite()  # before the 180: the proxy repeats its 100
    lab.net.run(1.5)
    call.invite()  # after the 180: the proxy repeats the 180
    lab.net.run(2.5)
    call.invite()  # after the 2xx (Accepted): absorbed without an answer (RFC 6026 7.1)
    lab.net.run(3.0)
    assert call.statuses == [100, 100, 180, 180, 200]
    assert len(lab.uas[0].invites) == 1
    assert lab.proxy.stats["retransmissions"] == 3


def test_non_invite_retransmission_is_absorbed_and_repeats_the_final() -> None:
    lab = make_lab([Script(other=(200))])
    data = lab.uac.request("MESSAGE", b"sip:bob@127.0.0.1:5060")
    lab.uac.send(data)
    lab.net.run(1.0)
    lab.uac.send(data)
    lab.net.run(2.0)
    assert [r.status for r in lab.uac.responses("MESSAGE")] == [200, 200]
    assert len(lab.uas[0].requests("MESSAGE")) == 1


# ---- retransmissions towards a destination (UDP) ---------------------------------------------

# (T1, when the silent destination sees the INVITE: 0, then Timer A at T1, 2T1, 4T1 ... apart)
TIMER_A_CASES = [
    (0.5, [0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]),
    (0.1, [0.0, 0.1, 0.3, 0.7, 1.5, 3.1, 6.3]),
]


@pytest.mark.parametrize(("t1", "expected"), TIMER_A_CASES)
def test_timer_a_doubles_until_timer_b(t1: float, expected: list[float]) -> None:
    settings = ProxySettings(failover_timeout=1000.0, max_attempts=1, t1=t1)
    lab = make_lab([Script(invite=())], settings=settings)
    call = lab.uac.call()
    call.invite()
    lab.net.run(70 * t1)
    assert arrival_times(lab, 0, "INVITE") == pytest.approx(expected)
    branches = {r.vias()[0].branch for r in lab.uas[0].invites}
    assert len(branches) == 1  # one client transaction, retransmitting
    [(at, status)] = final_statuses(lab, "INVITE")
    assert at == pytest.approx(64 * t1)
    assert status == 408  # 16.7 step 6: the timed-out client transaction counts as 408


def test_timer_a_stops_at_the_first_provisional() -> None:
    lab = make_lab([Script(invite=((100, 1.0),))], settings=RFC_ONLY)
    lab.uac.call().invite()
    lab.net.run(5.0)
    assert arrival_times(lab, 0, "INVITE") == [0.0, 0.5]


# (T2, times a silent destination sees a MESSAGE: Timer E doubles, capped at T2, until F)
TIMER_E_CASES = [
    (4.0, [0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]),
    (1.0, [0.0, 0.5, *(1.5 + n for n in range(31))]),
]


@pytest.mark.parametrize(("t2", "expected"), TIMER_E_CASES)
def test_timer_e_is_capped_at_t2(t2: float, expected: list[float]) -> None:
    settings = ProxySettings(failover_timeout=1000.0, max_attempts=1, t2=t2)
    lab = make_lab([Script(other=None)], settings=settings)
    lab.uac.send(lab.uac.request("MESSAGE", b"sip:bob@127.0.0.1:5060"))
    lab.net.run(40.0)
    assert arrival_times(lab, 0, "MESSAGE") == pytest.approx(expected)
    assert final_statuses(lab, "MESSAGE") == [(32.0, 408)]


def test_timer_e_runs_at_t2_after_a_provisional() -> None:
    """17.1.2.2: Timer E keeps its deadline; fired in Proceeding it is reset to T2."""
    lab = make_lab([Script(other=100)], settings=RFC_ONLY)
    lab.uac.send(lab.uac.request("MESSAGE", b"sip:bob@127.0.0.1:5060"))
    lab.net.run(40.0)
    assert arrival_times(lab, 0, "MESSAGE") == [0.0, *(0.5 + 4.0 * n for n in range(8))]
    assert final_statuses(lab, "MESSAGE") == [(32.0, 408)]


# ---- Timer B / F: what goes upstream ---------------------------------------------------------

# (destination script, method, status the caller gets at 64*T1)
TIMEOUT_CASES = [
    (Script(invite=()), "INVITE", 408),  # Timer B, a dispatched request (16.7 step 6)
    (Script(other=None), "MESSAGE", 408),  # Timer F
    (Script(other=100), "MESSAGE", 408),  # Timer F after a provisional: no Timer C for non-INVITE
]


@pytest.mark.parametrize(("script", "method", "status"), TIMEOUT_CASES)
def test_timer_b_and_f_answer_upstream(script: Script, method: str, status: int) -> None:
    lab = make_lab([script], settings=RFC_ONLY)
    if method == "INVITE":
        lab.uac.call().invite()
    else:
        lab.uac.send(lab.uac.request(method, b"sip:bob@127.0.0.1:5060"))
    lab.net.run(31.9)
    assert final_statuses(lab, method) == []
    lab.net.run(32.0)
    assert final_statuses(lab, method) == [(32.0, status)]
    assert lab.uas[0].requests("CANCEL") == []
    lab.net.run(80.0)
    assert lab.proxy.transactions == 0


def test_timer_f_on_an_in_dialog_request_gives_408() -> None:
    """A BYE to a silent callee: one fixed target, so the timeout itself goes back (408)."""
    lab = make_lab([Script(other=None)], settings=RFC_ONLY)
    call = lab.uac.call()
    call.invite()
    lab.net.run(1.0)
    call.ack()
    call.bye()
    lab.net.run(40.0)
    assert [(r.status) for r in call.responses_to("BYE")] == [408]


def test_timer_f_after_a_provisional_fails_over_without_cancel() -> None:
    """A non-INVITE that got 100 and then nothing is a timeout (Timer F), never Timer C."""
    lab = make_lab(
        [Script(other=100), Script(other=200)],
        settings=ProxySettings(failover_timeout=1000.0),
    )
    lab.uac.send(lab.uac.request("MESSAGE", b"sip:bob@127.0.0.1:5060"))
    lab.net.run(40.0)
    assert final_statuses(lab, "MESSAGE") == [(32.0, 200)]
    assert lab.uas[0].requests("CANCEL") == []
    assert len(lab.uas[1].requests("MESSAGE")) == 1


# ---- the proxy's own final responses are retransmitted (Timer G) until ACK or Timer H ---------


def test_timer_g_retransmits_a_non_2xx_final_until_timer_h() -> None:
    lab = make_lab([Script(invite=(486,))], uac=UAC(auto_ack=False))
    lab.uac.call().invite()
    lab.net.run(40.0)
    times = [at for at, status in final_statuses(lab, "INVITE") if status == 486]
    assert times == [0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert lab.proxy.servers == {}


def test_ack_stops_timer_g() -> None:
    lab = make_lab([Script(invite=(486,))])
    lab.uac.call().invite()
    lab.net.run(40.0)
    assert [status for _, status in final_statuses(lab, "INVITE")] == [486]


def test_retransmitted_final_from_the_destination_is_acked_again_not_forwarded() -> None:
    """Completed client transaction (Timer D): a repeated 486 gets the ACK again (17.1.1.2)."""
    lab = make_lab([Script(invite=(486,))])
    call = lab.uac.call()
    call.invite()
    lab.net.run(1.0)
    lab.uas[0].retransmit_final(call.call_id)
    lab.net.run(2.0)
    assert len(lab.uas[0].requests("ACK")) == 2
    assert call.statuses == [100, 486]


# ---- clean-up: every transaction ends, at its RFC time ----------------------------------------

Checkpoint = tuple[float, int, int]  # (time, live server transactions, live client ones)

# (name, destination script, request, caller ACKs non-2xx, checkpoints)
CLEANUP_CASES: list[tuple[str, Script, str, bool, Sequence[Checkpoint]]] = [
    # INVITE 486: server Completed -> ACK -> Confirmed, Timer I (T4 = 5 s); client Timer D (32 s)
    (
        "timer-I-and-D",
        Script(invite=(486,)),
        "INVITE",
        True,
        [(4.9, 1, 1), (5.1, 0, 1), (32.1, 0, 0)],
    ),
    # no ACK from the caller: Timer H (64*T1)
    ("timer-H", Script(invite=(486,)), "INVITE", False, [(31.9, 1, 1), (32.1, 0, 0)]),
    # INVITE 200: both Accepted, Timer L (server) and Timer M (client), 64*T1
    ("timer-L-and-M", Script(invite=(180, 200)), "INVITE", True, [(31.9, 1, 1), (32.1, 0, 0)]),
    # non-INVITE 200: server Timer J (64*T1), client Timer K (T4)
    ("timer-J-and-K", Script(other=200), "MESSAGE", True, [(4.9, 1, 1), (5.1, 1, 0), (32.1, 0, 0)]),
    # a local 408 after Timer B on the only destination: then Timer H/I as above
    (
        "after-timer-B",
        Script(invite=()),
        "INVITE",
        True,
        [(31.9, 1, 1), (32.1, 1, 0), (37.1, 0, 0)],
    ),
]


@pytest.mark.parametrize(
    ("script", "method", "ack", "checkpoints"),
    [case[1:] for case in CLEANUP_CASES],
    ids=[case[0] for case in CLEANUP_CASES],
)
def test_transactions_end_on_time(
    script: Script, method: str, ack: bool, checkpoints: Sequence[Checkpoint]
) -> None:
    lab = make_lab([script], settings=RFC_ONLY, uac=UAC(auto_ack=ack))
    if method == "INVITE":
        lab.uac.call().invite()
    else:
        lab.uac.send(lab.uac.request(method, b"sip:bob@127.0.0.1:5060"))
    for at, servers, clients in checkpoints:
        lab.net.run(at)
        assert (len(lab.proxy.servers), len(lab.proxy.clients)) == (servers, clients), at
    assert lab.proxy.transactions == 0


def test_a_whole_call_leaves_no_transaction() -> None:
    lab = make_lab(2)
    call = lab.uac.call()
    call.invite()
    lab.net.run(1.0)
    call.ack()
    lab.net.run(2.0)
    call.bye()
    lab.net.run(3.0)
    assert lab.proxy.transactions > 0
    assert lab.proxy.busy == 0  # all answered: a graceful stop need not wait for the timers
    states = {txn.state for txn in lab.proxy.clients.values()}
    assert states <= {TxState.ACCEPTED, TxState.COMPLETED}
    lab.net.run(40.0)
    assert lab.proxy.transactions == 0


# (destination script, proxy settings): a 2xx that arrives while Timer A or C is still armed
ACCEPTED_CASES = [
    (Script(invite=(200,)), ProxySettings()),  # 2xx before T1, no provisional: Timer A armed
    (Script(invite=((200, 0.2),)), ProxySettings(failover_timeout=1.0)),  # and the failover timer
    (Script(invite=(180, (200, 1.0))), ProxySettings(setup_timeout=10.0)),  # Timer C < Timer M
]


@pytest.mark.parametrize(("script", "settings"), ACCEPTED_CASES)
def test_accepted_client_transaction_only_waits_for_timer_m(
    script: Script, settings: ProxySettings
) -> None:
    lab = make_lab([script], settings=settings)
    call = lab.uac.call()
    call.invite()
    lab.net.run(1.5)
    assert call.statuses[-1] == 200
    assert len(lab.uas[0].invites) == 1  # no Timer A retransmission after the 2xx
    lab.net.run(31.9)
    assert len(lab.proxy.clients) == 1
    lab.net.run(34.0)
    assert lab.proxy.transactions == 0
    assert call.statuses.count(200) == 1


# ---- RFC 2543 peers: no magic cookie, transactions matched on the dialog and CSeq (17.2.3) ----

OLD_INVITE = (
    b"INVITE sip:bob@127.0.0.1:5060 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5061%s\r\n"
    b"Max-Forwards: 70\r\n"
    b"From: <sip:alice@example.com>;tag=old1\r\n"
    b"To: <sip:bob@example.com>\r\n"
    b"Call-ID: old-1@example.com\r\n"
    b"CSeq: 7 INVITE\r\n"
    b"Contact: <sip:alice@127.0.0.1:5061>\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def old_style(invite: bytes, method: str, to_tag: bytes | None = None) -> bytes:
    data = invite.replace(b"INVITE sip", method.encode() + b" sip", 1)
    data = data.replace(b"CSeq: 7 INVITE", b"CSeq: 7 " + method.encode())
    if to_tag is not None:
        data = data.replace(
            b"To: <sip:bob@example.com>", b"To: <sip:bob@example.com>;tag=" + to_tag
        )
    return data


@pytest.mark.parametrize("via_params", [b";branch=1234", b""], ids=["old-branch", "no-branch"])
def test_rfc2543_invite_retransmission_cancel_and_ack(via_params: bytes) -> None:
    lab = make_lab([Script(invite=(180, (200, 5.0)))])
    invite = OLD_INVITE % via_params
    lab.uac.send(invite)
    lab.net.run(0.5)
    lab.uac.send(invite)  # a retransmission: the 180 again, not a second INVITE
    lab.net.run(1.0)
    lab.uac.send(old_style(invite, "CANCEL"))
    lab.net.run(1.2)  # before Timer G repeats the 487
    statuses = [(r.cseq.method, r.status) for r in lab.uac.responses()]
    assert statuses == [
        ("INVITE", 100),
        ("INVITE", 180),
        ("INVITE", 180),
        ("CANCEL", 200),
        ("INVITE", 487),
    ]
    assert len(lab.uas[0].invites) == 1
    assert len(lab.uas[0].requests("CANCEL")) == 1
    to_tag = lab.uac.responses()[-1].to_tag
    lab.uac.send(old_style(invite, "ACK", to_tag))  # absorbed by the server transaction
    lab.net.run(40.0)
    assert len(lab.uas[0].requests("ACK")) == 1  # ours, for the 487
    assert lab.proxy.transactions == 0
