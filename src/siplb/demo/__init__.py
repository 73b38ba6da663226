"""``siplb demo``: the balancer with three built-in demo PBXs on loopback and calls flowing.

No config is needed. The balancer listens on UDP ``127.0.0.1:PORT`` (``--port``, default 5060)
with one set, ``demo-pbx`` (round-robin), of three demo PBXs on ``PORT+10``, ``PORT+11`` and
``PORT+12`` (``pbx.py``: small UDP user agent servers answering OPTIONS, INVITE, ACK, BYE and
CANCEL). Its admin API and dashboard listen on ``http://127.0.0.1:ADMIN_PORT/``
(``--admin-port``, default 8080, 0 for any free port) with a token made for the run; both are
printed at the start and shown above the table. The config is embedded (``settings.py``). The
demo caller (``caller.py``) places ``--cps`` calls per second through the balancer, holds each
answered call 2 to 8 s and ends it with a BYE along the Record-Route set; one call in ten is
cancelled while it rings. The health settings are those of a PBX farm: OPTIONS every 1 s, 0.5 s
timeout, down after 2 failures, up after 2 successes, failover after 1 s without an answer.

The script: 12 s into every 30 s cycle pbx2 stops answering anything, as if it crashed (its calls
in progress are lost), and 24 s in it answers again, as if restarted (knowing no calls). The
table (redrawn every second on a terminal, printed every 2 s otherwise; ``--no-table`` prints
events only) shows each destination's state and cause as the balancer sees them, its weight,
its live calls by the balancer's count and by the PBX's own count (ringing or answered), the
probe latency, the caller's totals (a call is "in call" until its BYE leaves, "hanging up" until
the BYE is answered, so the balancer's counts add up to "in call" plus "setting up"), what is happening now and the latest events (the balancer's
state changes and failovers, the script's steps).

Modules: ``wire`` (UDP socket, identifiers, SDP), ``pbx``, ``call`` (one call's state and its
sans-IO INVITE transaction), ``caller``, ``screen`` (the table, a pure function of a frame),
``settings`` and ``runner`` (start, script, display, stop, judgement).

Ctrl-C (SIGINT) or SIGTERM stops it: no new calls, a BYE for every answered call, a CANCEL for
every call still ringing (up to 5 s for their answers), then the balancer stops; exit code 0.

Exit code after ``--duration N``: every call is judged when it ends. It is fine when it
completed (answered, then its BYE answered) or was cancelled on purpose (or at exit). Any other
end (an error response or no response to the INVITE, a failed BYE, still unfinished after the
5 s for hanging up) is a failure, and a failure is *explained* when the demo PBX the call
reached (the one whose Contact came back in a 180 or 200) was stopped by the script at some
moment of the call's life: such calls were lost with their PBX, which no balancer can save
once the PBX has answered. The exit code is 0 when no failure is unexplained, else 1 (each
unexplained failure is listed). A call the balancer sends to the stopped PBX before detecting
it must fail over and be answered by another one; if it fails instead, it reached no PBX that
answered, so nothing explains it and the run exits 1. Exit 2: bad arguments; 1: the balancer
or a PBX could not bind its port.
"""

from __future__ import annotations

from .runner import Demo, DemoResult
from .settings import DemoSettings


async def run_demo(
    *,
    duration: float | None = None,
    cps: float = 4.0,
    port: int = 5060,
    table: bool = True,
    down_at: float = 12.0,
    up_at: float = 24.0,
    cycle: float = 30.0,
    hold: tuple[float, float] = (2.0, 8.0),
    admin_port: int | None = 8080,
) -> int:
    """Run the demo until Ctrl-C, SIGTERM or ``duration`` seconds; return the exit code."""
    settings = DemoSettings(
        duration=duration,
        cps=cps,
        port=port,
        table=table,
        down_at=down_at,
        up_at=up_at,
        cycle=cycle,
        hold=hold,
        admin_port=admin_port,
    )
    result = await Demo(settings).run()
    return result.exit_code


__all__ = ["Demo", "DemoResult", "DemoSettings", "run_demo"]
