"""NAT for real, in network namespaces the test creates (and removes in ``finally``):

    phone 10.10.1.2 --- 10.10.1.1 [router: MASQUERADE] 203.0.113.2 --- 203.0.113.10 [siplb]
    siplb 10.20.0.10 --- 10.20.0.20 [Kamailio registrar + SIPp caller]

The phone (SIPp, ``phone.xml``) registers through siplb's public address; its REGISTER leaves
siplb's private address (multi-homing) with a Path carrying the NAT's address and port. The
router's conntrack UDP timeouts are lowered to ``CT_TIMEOUT`` seconds; after three times that,
the caller calls the phone through Kamailio and the INVITE reaches it through the NAT binding
that siplb's keepalives kept open. The caller's BYE reaches it too, by the Contact alias.
A second test checks that replies leave from the address their request was sent to.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import pytest

from . import kamailio as kam
from . import sipp as sp
from .netns import NetLab, require_root
from .test_registrar_front import CALL_ID, REGISTERED

pytestmark = pytest.mark.e2e

CT_TIMEOUT = 3  # seconds: nf_conntrack_udp_timeout(_stream) in the router
KEEPALIVE = 1.0
PHONE, NAT_OUT, LB_PUB, LB_PRIV, KAM = (
    "10.10.1.2",
    "203.0.113.2",
    "203.0.113.10",
    "10.20.0.10",
    "10.20.0.20",
)
REGISTRAR_CFG = Path(__file__).resolve().parent / "kamailio" / "registrar.cfg"


def build(lab: NetLab) -> None:
    for name in ("phone", "router", "lb", "kam"):
        lab.namespace(name)
    lab.link(("phone", f"{PHONE}/24"), ("router", "10.10.1.1/24"))
    lab.link(("router", f"{NAT_OUT}/24"), ("lb", f"{LB_PUB}/24"))
    lab.link(("lb", f"{LB_PRIV}/24"), ("kam", f"{KAM}/24"))
    lab.route("phone", "default", via="10.10.1.1")
    lab.route("kam", "default", via=LB_PRIV)
    lab.run("router", "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
    out = lab.run("router", "ip", "-o", "addr", "show", "to", NAT_OUT).split()[1]
    lab.run("router", "iptables", "-t", "nat", "-A", "POSTROUTING", "-o", out, "-j", "MASQUERADE")
    # conntrack needs a first rule to exist before its sysctls do
    lab.run(
        "router",
        "sysctl",
        "-q",
        "-w",
        f"net.netfilter.nf_conntrack_udp_timeout={CT_TIMEOUT}",
        f"net.netfilter.nf_conntrack_udp_timeout_stream={CT_TIMEOUT}",
    )


def start_siplb(lab: NetLab, workdir: Path, keepalive: float = KEEPALIVE) -> None:
    config = workdir / "siplb.toml"
    config.write_text(
        f'[[listen]]\ntransport = "udp"\naddress = "{LB_PUB}:5060"\n'
        f'[[listen]]\ntransport = "udp"\naddress = "{LB_PRIV}:5060"\n'
        f'[[sets]]\nname = "registrar"\ndestinations = [{{ uri = "sip:{KAM}:5060" }}]\n'
        f"[registrar]\nkeepalive_interval = {keepalive}\nkeepalive_misses = 100\n"
        '[log]\nformat = "json"\n[admin]\nlisten = "127.0.0.1:0"\n'
    )
    lab.spawn("lb", "siplb", [sys.executable, "-m", "siplb", "run", "-c", str(config)], cwd=workdir)


def start_kamailio(lab: NetLab, workdir: Path) -> Path:
    modules = kam.kamailio_module_dir()
    home = workdir / "kamailio"
    home.mkdir()
    argv = [
        kam.kamailio_binary(), "-DD", "-E", "-f", str(REGISTRAR_CFG), "-L", modules,
        "-A", f'MPATH="{modules}"', "-l", f"udp:{KAM}:5060", "-w", str(home), "-Y", str(home),
        "-P", str(home / "kamailio.pid"), "-m", "32", "-M", "8",
    ]  # fmt: skip
    process = lab.spawn("kam", "kamailio", argv, cwd=home)
    return process.stderr_path


def options(branch: str) -> bytes:
    return (
        f"OPTIONS sip:{LB_PUB} SIP/2.0\r\nVia: SIP/2.0/UDP {KAM}:1;branch=z9hG4bK{branch};rport\r\n"
        f"From: <sip:t@{KAM}>;tag={branch}\r\nTo: <sip:{LB_PUB}>\r\nCall-ID: {branch}\r\n"
        f"CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def wait_answer(lab: NetLab, name: str, target: tuple[str, int], what: str) -> tuple[bytes, str]:
    for attempt in range(50):  # bounded: about 10 s
        found = lab.udp_request(name, options(f"ready{attempt}"), target, wait=0.2)
        if found is not None:
            return found
    raise AssertionError(f"{what} at {target} never answered")


def sipp_argv(workdir: Path, name: str, scenario: str, local: str, target: str) -> list[str]:
    return [
        sp.sipp_binary(), "-sf", str(sp.SCENARIOS / scenario), "-t", "u1",
        "-i", local, "-p", "5060" if name == "phone" else "5070", "-mi", local, "-mp", "6000",
        "-ci", "127.0.0.1", "-cp", "8888", "-nostdin", "-timeout", "60s", "-timeout_error",
        "-trace_stat", "-stf", f"{name}_stats.csv", "-fd", "1", "-trace_counts", "-trace_err",
        "-error_file", f"{name}_errors.log", "-trace_msg", "-message_file",
        f"{name}_messages.log", "-m", "1", "-r", "1", "-d", "200", "-s", "alice",
        "-cid_str", CALL_ID, target,
    ]  # fmt: skip


def sipp_in(lab: NetLab, ns: str, name: str, workdir: Path, argv: list[str]) -> sp.SippProcess:
    """A SippProcess (for its statistics) whose process runs in namespace ``ns``."""
    proc = sp.SippProcess.__new__(sp.SippProcess)
    proc.name, proc.role, proc.scenario = name, "uac", Path(argv[2])
    proc.transport, proc.host, proc.port, proc.workdir = "udp", argv[6], int(argv[8]), workdir
    proc.timeout_s = 60.0
    proc.stat_path = workdir / f"{name}_stats.csv"
    proc.error_path = workdir / f"{name}_errors.log"
    proc.process = lab.spawn(ns, name, argv, cwd=workdir)
    proc.pid = proc.process.pid
    proc._final = None
    return proc


def conntrack(lab: NetLab) -> str:
    return lab.run("router", "cat", "/proc/net/nf_conntrack")


@pytest.mark.parametrize("keepalive", [KEEPALIVE, 0], ids=["keepalives", "control-without"])
def test_a_phone_behind_nat_is_called_through_the_binding_keepalives_keep_open(
    keepalive: float, e2e_workdir: Path
) -> None:
    require_root()
    sp.sipp_binary()
    with NetLab("nat") as lab:
        build(lab)
        start_siplb(lab, e2e_workdir, keepalive)
        kam_log = start_kamailio(lab, e2e_workdir)
        wait_answer(lab, "kam", (LB_PRIV, 5060), "siplb")
        wait_answer(lab, "lb", (KAM, 5060), "Kamailio")
        phone = sipp_in(
            lab,
            "phone",
            "phone",
            e2e_workdir,
            sipp_argv(e2e_workdir, "phone", "phone.xml", PHONE, f"{LB_PUB}:5060"),
        )
        path = ""
        for _ in range(100):  # bounded: about 10 s
            found = REGISTERED.search(kam_log.read_text(errors="replace"))
            if found:
                path = found.group(1)
                break
            time.sleep(0.1)
        assert path, kam_log.read_text(errors="replace")[-3000:]
        # the REGISTER left siplb's private side; the first Path entry names it and carries
        # the NAT's public address and port, the second names the public side
        mapped = re.search(
            rf"<sip:{re.escape(LB_PRIV)}:5060;lr;path;received=sip:{NAT_OUT}:(\d+)>", path
        )
        assert mapped, path
        assert f"<sip:{LB_PUB}:5060;lr;path>" in path, path
        time.sleep(3 * CT_TIMEOUT)  # the binding would have expired three times over
        binding = re.compile(
            rf"src={PHONE} dst={LB_PUB} sport=5060 dport=5060 "
            rf"src={LB_PUB} dst={NAT_OUT} sport=5060 dport={mapped.group(1)} "
        )
        table = conntrack(lab)
        if not keepalive:  # the control: without keepalives the binding is gone, so is the call
            assert not binding.search(table), table
            caller = sipp_in(
                lab,
                "kam",
                "caller",
                e2e_workdir,
                sipp_argv(e2e_workdir, "caller", "uac.xml", KAM, f"{KAM}:5060"),
            )
            assert caller.wait(40).stats.successful_calls == 0
            return
        assert binding.search(table), table  # still there, kept open by the keepalives
        caller = sipp_in(
            lab,
            "kam",
            "caller",
            e2e_workdir,
            sipp_argv(e2e_workdir, "caller", "uac.xml", KAM, f"{KAM}:5060"),
        )
        result = caller.wait(40)
        assert result.stats.successful_calls == 1, result.describe()
        phone_result = phone.wait(20)
        assert phone_result.stats.successful_calls == 1, phone_result.describe()
        # the BYE found the phone by the alias siplb added to its Contact
        messages = phone_result.message_log()
        assert "BYE sip:alice@10.10.1.2:5060;transport=UDP SIP/2.0" in messages or (
            "BYE sip:alice@10.10.1.2:5060" in messages
        ), messages[-3000:]


def test_replies_leave_from_the_address_the_request_was_sent_to(e2e_workdir: Path) -> None:
    require_root()
    with NetLab("mh") as lab:
        build(lab)
        start_siplb(lab, e2e_workdir)
        wait_answer(lab, "kam", (LB_PRIV, 5060), "siplb")
        for address in (LB_PRIV, LB_PUB):  # both reached from Kamailio's side
            reply, source = wait_answer(lab, "kam", (address, 5060), "siplb")
            assert reply.startswith(b"SIP/2.0 200 "), reply
            assert source == address
