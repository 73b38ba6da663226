"""The counters the pure cores keep for ``/metrics`` (read at scrape time, never pushed):
requests by method, responses by CSeq method and class, probe answers timed per destination.
Driven with the proxy tests' fake clock and in-memory network."""

from __future__ import annotations

from proxy.harness import Script, make_lab
from siplb.dispatch import HealthSettings


def test_a_call_counts_requests_by_method_and_responses_by_class() -> None:
    lab = make_lab(1)
    call = lab.uac.call()
    call.invite()
    lab.net.run(1.0)
    call.ack()
    call.bye()
    lab.net.run(2.0)
    assert call.statuses[-1] == 200
    proxy = lab.proxy
    assert proxy.requests_by_method == {"INVITE": 1, "ACK": 1, "BYE": 1}
    responses = dict(proxy.responses_by_class)
    assert responses[("INVITE", 2)] == 1  # the callee's 200 (retransmissions absorbed aside)
    assert responses[("BYE", 2)] == 1
    assert ("INVITE", 1) in responses  # its 180
    assert sum(proxy.requests_by_method.values()) == proxy.stats["requests"]
    assert sum(responses.values()) == proxy.stats["responses"]


def test_probe_answers_are_counted_with_their_latency() -> None:
    health = HealthSettings(interval=1.0, timeout=0.5, down_after=2, up_after=2)
    lab = make_lab(
        [Script(options=200), Script(options=None)], health=health, probing=True, latency=0.01
    )
    lab.net.run(3.1)
    prober = lab.proxy.prober
    assert prober is not None
    answered = prober.answered[lab.uri(0)]
    assert answered == 4  # probes at 0, 1, 2, 3 s, each answered
    assert len(prober.latency[lab.uri(0)]) == answered
    assert prober.answered[lab.uri(1)] == 0  # never answers: nothing timed
