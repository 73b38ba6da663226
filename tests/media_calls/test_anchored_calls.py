"""Calls through siplb anchored on a REAL rtpengine (Debian ``rtpengine-daemon``, userspace).

Scripted UAs on loopback (``ua.py``) place calls through ``siplb run``; each end's SDP must
name the engine, RTP each end sends to the address its SDP names must reach the other end
through the engine's ports, and the end of the call (BYE, CANCEL, a failed setup) must delete
it from the engine (its ``query`` no longer knows the Call-ID).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from e2e.balancer import SiplbProcess, admin_request, launch, write_config
from e2e.harness import LOOPBACK, free_port
from media.engine import Engine, running_engine
from siplb.sip import Request, Response

from .common import wait_up
from .ua import Dialog, Phone, learn_dialog, media_address

pytestmark = pytest.mark.e2e

RTP_PACKETS = 20


def media_section(*engines: Engine, anchor: str = "always", extra: str = "") -> str:
    names = ", ".join(f'"{engine.address}"' for engine in engines)
    return f'\n[media]\nengines = [{names}]\nanchor = "{anchor}"\ntimeout = 0.5\n{extra}'


def start(workdir: Path, callee: Phone, extra: str) -> SiplbProcess:
    port, admin = free_port(), free_port()
    config = workdir / "siplb.toml"
    uri = f"sip:{LOOPBACK}:{callee.port}"
    write_config(config, port, [uri], extra=extra, admin_port=admin)
    siplb = launch(workdir, config, (LOOPBACK, port), admin)
    wait_up(siplb, uri)
    return siplb


@dataclass
class Scene:
    engine: Engine
    siplb: SiplbProcess
    caller: Phone
    callee: Phone

    @property
    def ruri(self) -> str:
        return f"sip:bob@{LOOPBACK}:{self.siplb.address[1]}"


@pytest.fixture
def scene(tmp_path: Path) -> Iterator[Scene]:
    caller, callee = Phone("alice"), Phone("bob")
    try:
        with running_engine(tmp_path / "engine") as engine:
            siplb = start(tmp_path, callee, media_section(engine))
            try:
                yield Scene(engine, siplb, caller, callee)
            finally:
                siplb.stop()
    finally:
        caller.close()
        callee.close()


def names_engine(body: bytes, engine: Engine) -> tuple[str, int]:
    host, port = media_address(body)
    assert host == LOOPBACK, body
    assert engine.port_min <= port <= engine.port_max, (port, engine.port_min, engine.port_max)
    return host, port


def wait_forgotten(engine: Engine, call_id: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while engine.knows(call_id):
        assert time.monotonic() < deadline, f"the engine still has {call_id}\n{engine.log()}"
        time.sleep(0.05)


def setup_call(scene: Scene, *, late: bool = False) -> tuple[Dialog, Request, Response]:
    """INVITE, 180, 200, ACK; returns the caller's dialog, the INVITE as the callee got it and
    the 200 as the caller got it."""
    caller, callee, siplb = scene.caller, scene.callee, scene.siplb
    dialog, data = caller.invite(siplb.address, scene.ruri, sdp=not late)
    caller.send(data, siplb.address)
    invite, at = callee.expect("INVITE")
    assert isinstance(invite, Request)
    callee.answer(invite, 180, at)
    callee.answer(invite, 200, at, body=callee.sdp())
    caller.expect(180)
    ok, _ = caller.expect(200)
    assert isinstance(ok, Response)
    learn_dialog(dialog, ok)
    caller.send(caller.in_dialog("ACK", dialog, body=caller.sdp() if late else b""), siplb.address)
    ack, _ = callee.expect("ACK")
    if late:
        assert isinstance(ack, Request)
        names_engine(ack.body, scene.engine)
    return dialog, invite, ok


def audio_both_ways(scene: Scene, to_callee: bytes, to_caller: bytes) -> None:
    """RTP from each end, sent where its SDP says, reaches the other through the engine."""
    caller, callee = scene.caller, scene.callee
    caller.send_rtp(media_address(to_caller), RTP_PACKETS, ssrc=0x1111)
    callee.send_rtp(media_address(to_callee), RTP_PACKETS, ssrc=0x2222)
    got_callee = callee.received_rtp(0x1111, RTP_PACKETS)
    got_caller = caller.received_rtp(0x2222, RTP_PACKETS)
    assert len(got_callee) >= RTP_PACKETS - 2, (sorted(got_callee), scene.engine.log())
    assert len(got_caller) >= RTP_PACKETS - 2, (sorted(got_caller), scene.engine.log())


def hang_up(scene: Scene, dialog: Dialog) -> None:
    caller, callee, siplb = scene.caller, scene.callee, scene.siplb
    caller.send(caller.in_dialog("BYE", dialog), siplb.address)
    bye, at = callee.expect("BYE")
    assert isinstance(bye, Request)
    callee.answer(bye, 200, at)
    caller.expect(200)
    wait_forgotten(scene.engine, dialog.call_id)


def test_a_call_is_anchored_both_ways_and_bye_deletes_it(scene: Scene) -> None:
    dialog, invite, ok = setup_call(scene)
    names_engine(invite.body, scene.engine)
    names_engine(ok.body, scene.engine)
    assert invite.content_length == len(invite.body)
    assert scene.engine.knows(dialog.call_id)
    audio_both_ways(scene, invite.body, ok.body)
    hang_up(scene, dialog)
    assert scene.siplb.admin_url is not None
    status, metrics = admin_request(
        scene.siplb.admin_url + "/metrics", token=scene.siplb.admin_token
    )
    assert status == 200
    for event in ("calls", "offers", "answers", "deletes"):
        assert f'siplb_media_anchoring_events_total{{event="{event}"}} 1.0' in str(metrics)


def test_late_offer(scene: Scene) -> None:
    dialog, invite, ok = setup_call(scene, late=True)
    assert not invite.body
    names_engine(ok.body, scene.engine)
    hang_up(scene, dialog)


def test_reinvite_keeps_the_call_on_the_engine(scene: Scene) -> None:
    caller, callee, siplb = scene.caller, scene.callee, scene.siplb
    dialog, _invite, _ok = setup_call(scene)
    caller.send(caller.in_dialog("INVITE", dialog, body=caller.sdp(2)), siplb.address)
    again, at = callee.expect("INVITE")
    assert isinstance(again, Request)
    names_engine(again.body, scene.engine)
    callee.answer(again, 200, at, body=callee.sdp(2))
    ok2, _ = caller.expect(200)
    assert isinstance(ok2, Response)
    names_engine(ok2.body, scene.engine)
    caller.send(caller.in_dialog("ACK", dialog), siplb.address)
    callee.expect("ACK")
    audio_both_ways(scene, again.body, ok2.body)
    hang_up(scene, dialog)


def test_cancel_while_ringing_deletes_the_call(scene: Scene) -> None:
    caller, callee, siplb = scene.caller, scene.callee, scene.siplb
    dialog, data = caller.invite(siplb.address, scene.ruri)
    caller.send(data, siplb.address)
    invite, at = callee.expect("INVITE")
    assert isinstance(invite, Request)
    callee.answer(invite, 180, at)
    caller.expect(180)
    assert scene.engine.knows(dialog.call_id)
    branch = data.split(b"branch=", 1)[1].split(b";", 1)[0].decode()
    cancel = caller.request("CANCEL", dialog, scene.ruri, cseq=1, via=caller.via(branch))
    caller.send(cancel, siplb.address)
    cancelled, at = callee.expect("CANCEL")
    assert isinstance(cancelled, Request)
    callee.answer(cancelled, 200, at)
    callee.answer(invite, 487, at)
    caller.expect(200)
    caller.expect(487)
    wait_forgotten(scene.engine, dialog.call_id)


def test_a_failed_setup_deletes_the_call(scene: Scene) -> None:
    caller, callee, siplb = scene.caller, scene.callee, scene.siplb
    dialog, data = caller.invite(siplb.address, scene.ruri)
    caller.send(data, siplb.address)
    invite, at = callee.expect("INVITE")
    assert isinstance(invite, Request)
    callee.answer(invite, 486, at)
    caller.expect(486)
    wait_forgotten(scene.engine, dialog.call_id)


def test_callee_sdp_reaches_the_caller_rewritten_and_nothing_else_changes(scene: Scene) -> None:
    dialog, _invite, ok = setup_call(scene)
    assert ok.body != scene.callee.sdp()
    assert ok.get(b"contact") == f"<{scene.callee.uri}>".encode()
    assert ok.get(b"content-type") == b"application/sdp"
    hang_up(scene, dialog)
