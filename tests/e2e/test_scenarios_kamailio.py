"""The SIPp scenarios and the harness, proven against Kamailio as the proxy.

UAC (SIPp) -> Kamailio (bench/kamailio/dispatcher.cfg) -> UAS (SIPp) on loopback.
If these pass, a failure of the same scenarios against siplb is siplb's.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from .conftest import SippLauncher
from .harness import free_port, send_udp, sip_ping
from .kamailio import KamailioProcess
from .sipp import SippResult

pytestmark = pytest.mark.e2e

StartKamailio = Callable[..., KamailioProcess]

# (caller transport, callee transport): the mixed pair makes Kamailio switch transport
# and record-route twice, which checks the order of the Route headers the UAC builds.
TRANSPORT_PAIRS = [("udp", "udp"), ("tcp", "tcp"), ("udp", "tcp")]
TRANSPORTS = ["udp", "tcp"]


def _report(*results: SippResult, proxy: KamailioProcess | None = None) -> str:
    text = "\n".join(r.describe() for r in results)
    if proxy is not None:
        text += "\n--- kamailio log (tail) ---\n" + proxy.log(4000)
    return text


@pytest.mark.parametrize(("uac_transport", "uas_transport"), TRANSPORT_PAIRS)
def test_calls_spread_over_two_uas(
    sipp: SippLauncher, kamailio: StartKamailio, uac_transport: str, uas_transport: str
) -> None:
    calls = 200
    uases = sipp.uases(2, "uas.xml", transport=uas_transport)
    proxy = kamailio([u.sip_uri for u in uases])

    uac = sipp.run_uac(
        proxy.address, "uac.xml", calls=calls, rate=50, transport=uac_transport, timeout_s=25
    )
    callees = sipp.stop_uases()
    report = _report(uac, *callees, proxy=proxy)

    assert uac.returncode == 0, report
    assert not uac.timed_out, report
    assert uac.stats.successful_calls == calls, report
    assert uac.stats.failed_calls == 0, report
    assert uac.stats.retransmissions <= calls // 20, report
    assert sum(c.stats.calls_received for c in callees) == calls, report
    for callee in callees:
        # Round robin: each gets about half; 25 % leaves room for probing hiccups.
        assert callee.stats.calls_received >= calls // 4, report
        assert callee.stats.failed_calls == 0, report
        assert callee.stats.current_calls == 0, report
        # The 2xx ACK and the BYE reached the callee through the proxy (Route).
        assert callee.stats.received("ACK") == callee.stats.calls_received, report
        assert callee.stats.received("BYE") == callee.stats.calls_received, report
        # Kamailio probed the callee and the scenario answered.
        assert callee.stats.received("OPTIONS") >= 1, report
        assert callee.stats.unexpected("OPTIONS") == 0, report


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_cancel_while_ringing(sipp: SippLauncher, kamailio: StartKamailio, transport: str) -> None:
    calls = 20
    uases = sipp.uases(2, "uas_ring.xml", transport=transport)
    proxy = kamailio([u.sip_uri for u in uases])

    uac = sipp.run_uac(
        proxy.address,
        "uac_cancel.xml",
        calls=calls,
        rate=10,
        transport=transport,
        duration_ms=200,
        timeout_s=20,
    )
    callees = sipp.stop_uases()
    report = _report(uac, *callees, proxy=proxy)

    assert uac.returncode == 0, report
    assert uac.stats.successful_calls == calls, report
    assert uac.stats.failed_calls == 0, report
    assert uac.stats.received(487) == calls, report
    assert sum(c.stats.received("CANCEL") for c in callees) == calls, report
    for callee in callees:
        assert callee.stats.calls_received >= 1, report
        assert callee.stats.failed_calls == 0, report
        assert callee.stats.received("CANCEL") == callee.stats.calls_received, report
        assert callee.stats.sent(487) == callee.stats.calls_received, report
        # Kamailio ACKs the 487 hop-by-hop.
        assert callee.stats.received("ACK") == callee.stats.calls_received, report


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_503_fails_over_to_healthy_uas(
    sipp: SippLauncher, kamailio: StartKamailio, transport: str
) -> None:
    calls = 20
    refusing = sipp.uas("uas_503.xml", transport=transport)
    healthy = sipp.uas("uas.xml", transport=transport)
    proxy = kamailio([refusing.sip_uri, healthy.sip_uri])

    uac = sipp.run_uac(
        proxy.address, "uac.xml", calls=calls, rate=10, transport=transport, timeout_s=20
    )
    refused, served = sipp.stop_uases()
    report = _report(uac, refused, served, proxy=proxy)

    assert uac.returncode == 0, report
    assert uac.stats.successful_calls == calls, report
    assert uac.stats.failed_calls == 0, report
    assert uac.stats.received(503) == 0, report
    assert refused.stats.calls_received >= 1, report
    assert refused.stats.sent(503) == refused.stats.calls_received, report
    assert refused.stats.received("ACK") == refused.stats.calls_received, report
    assert served.stats.calls_received == calls, report
    assert served.stats.failed_calls == 0, report


def test_silent_destination_fails_over_on_timeout(
    sipp: SippLauncher, kamailio: StartKamailio
) -> None:
    calls = 10
    healthy = sipp.uas("uas.xml")
    silent = f"sip:127.0.0.1:{free_port()}"  # nothing listens there
    proxy = kamailio([silent, healthy.sip_uri], fr_timer_ms=1000, ping_interval=5)

    uac = sipp.run_uac(proxy.address, "uac.xml", calls=calls, rate=5, timeout_s=20)
    (served,) = sipp.stop_uases()
    report = _report(uac, served, proxy=proxy)

    assert uac.stats.successful_calls == calls, report
    assert uac.stats.failed_calls == 0, report
    assert served.stats.calls_received == calls, report
    assert "failed (408)" in proxy.log(), report


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_busy_callee_counts_failed_calls(
    sipp: SippLauncher, kamailio: StartKamailio, transport: str
) -> None:
    calls = 10
    busy = sipp.uas("uas_486.xml", transport=transport)
    proxy = kamailio([busy.sip_uri])

    uac = sipp.run_uac(
        proxy.address,
        "uac.xml",
        calls=calls,
        rate=10,
        transport=transport,
        timeout_s=15,
        trace_msg=True,
    )
    (callee,) = sipp.stop_uases()
    report = _report(uac, callee, proxy=proxy)

    assert uac.returncode == 1, report
    assert not uac.timed_out, report
    assert uac.stats.successful_calls == 0, report
    assert uac.stats.failed_calls == calls, report
    # The 486 is no scenario step: SIPp fails the call as an unexpected message.
    assert uac.stats.cumulative("FailedUnexpectedMessage") == calls, report
    assert "SIP/2.0 486 Busy Here" in uac.errors, report
    # SIPp's own hop-by-hop ACK for each 486 (not a scenario step).
    acks = [line for line in uac.sent_start_lines() if line.startswith("ACK ")]
    assert len(acks) == calls, report
    assert not [line for line in uac.sent_start_lines() if line.startswith(("CANCEL", "BYE"))]
    assert callee.stats.calls_received == calls, report
    assert callee.stats.received("ACK") == calls, report


def test_raw_udp_reaches_proxy_and_garbage_is_survived(
    sipp: SippLauncher, kamailio: StartKamailio
) -> None:
    uas = sipp.uas("uas.xml")
    proxy = kamailio([uas.sip_uri])

    garbage = [b"\x00\xff" * 40, b"INVITE\r\n\r\n", b"SIP/2.0 200\r\n", b"\r\n\r\n"]
    replies = send_udp(garbage, proxy.address, wait=0.3)
    assert all(not r.startswith(b"SIP/2.0 2") for r in replies), replies

    answer = sip_ping(proxy.address, timeout=2.0)
    assert answer is not None, proxy.log(4000)
    assert answer.startswith(b"SIP/2.0 200 "), answer
    assert proxy.running(), proxy.log(4000)


def test_unanswered_calls_count_as_failed(sipp: SippLauncher) -> None:
    calls = 3
    nowhere = ("127.0.0.1", free_port())  # no proxy listens there

    uac = sipp.run_uac(
        nowhere,
        "uac.xml",
        calls=calls,
        rate=10,
        timeout_s=15,
        extra_args=["-max_invite_retrans", "1"],
    )

    assert uac.returncode == 1, uac.describe()
    assert uac.stats.successful_calls == 0, uac.describe()
    assert uac.stats.failed_calls == calls, uac.describe()
    assert uac.stats.cumulative("FailedMaxUDPRetrans") == calls, uac.describe()
    assert uac.stats.retransmitted("INVITE") == calls, uac.describe()
