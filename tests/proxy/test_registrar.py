"""The registrar front end in the pure core: Path with received (RFC 3327, Kamailio's
``add_path_received``), the way back along it over the phone's own flow (RFC 5626), Contact
aliases, 400 for malformed Contact or Path, 420/421 handling."""

from __future__ import annotations

import itertools
import random

import pytest

from siplb.dispatch import DestinationSpec, HealthSettings, SetSpec
from siplb.proxy.actions import PhoneReachable, PhoneUnreachable, RegistrarLacksPath, Send, Target
from siplb.proxy.core import Proxy
from siplb.proxy.keepalive import SLOTS
from siplb.proxy.listeners import Listener
from siplb.proxy.registrar import flow_of, token_flow
from siplb.settings import ProxySettings, RegistrarSettings
from siplb.sip import Request, Response, SipUri, parse, parse_name_addr

from .harness import Script, build_request, build_response, make_lab

PUBLIC = "203.0.113.1"
REGISTRAR = Target("udp", "10.0.0.2", 5060)
PBX = Target("udp", "10.0.0.2", 5070)  # the proxy on the registrar's host that calls phones
STRANGER = Target("udp", "198.51.100.66", 5060)
PHONE_NAT = Target("udp", "198.51.100.7", 40000)  # the NAT's public side
PHONE_LAN = "192.168.1.10"
LISTENERS = [
    Listener(0, "udp", PUBLIC, 5060),
    Listener(1, "tcp", PUBLIC, 5060),
    Listener(2, "tls", PUBLIC, 5061),
]


def make_proxy(**registrar: object) -> Proxy:
    spec = DestinationSpec("sip:10.0.0.2:5060", REGISTRAR.host, REGISTRAR.port)
    return Proxy(
        listeners=LISTENERS,
        sets=[SetSpec("registrar", (spec,))],
        default_set="registrar",
        settings=ProxySettings(),
        health=HealthSettings(),
        now=0.0,
        rng=random.Random(1),
        probing=False,
        registrar=RegistrarSettings(**registrar),  # type: ignore[arg-type]
    )


def register(
    source: Target = PHONE_NAT,
    *,
    via_host: str = PHONE_LAN,
    contact: bytes = b"<sip:alice@192.168.1.10:5060>",
    extra: tuple[tuple[bytes, bytes], ...] = ((b"Supported", b"path"),),
    branch: bytes = b"z9hG4bKreg1",
) -> bytes:
    transport = source.transport.upper().encode()
    return build_request(
        "REGISTER",
        b"sip:example.com",
        [
            (
                b"Via",
                b"SIP/2.0/" + transport + b" " + via_host.encode() + b":5060;branch=" + branch,
            ),
            (b"Max-Forwards", b"70"),
            (b"From", b"<sip:alice@example.com>;tag=a1"),
            (b"To", b"<sip:alice@example.com>"),
            (b"Call-ID", b"reg-1"),
            (b"CSeq", b"1 REGISTER"),
            (b"Contact", contact),
            (b"Expires", b"600"),
            *extra,
        ],
    )


def take(proxy: Proxy) -> list[Send]:
    out = proxy.out[:]
    proxy.out.clear()
    return out


def forwarded(proxy: Proxy, data: bytes, source: Target, listener: int) -> Request:
    proxy.receive(data, source, listener, 0.0)
    sends = [s for s in take(proxy) if s.target == REGISTRAR]
    assert len(sends) == 1, proxy.events
    message = parse(sends[0].data)
    assert isinstance(message, Request)
    return message


def registrar_ok(proxy: Proxy, request: Request, expires: int = 600, now: float = 0.1) -> Response:
    """The registrar's 200: the binding with its expiry and the Path it stored (RFC 3327 5.3)."""
    contact = parse_name_addr(request.values(b"contact")[0])
    data = build_response(
        request,
        200,
        b"OK",
        to_tag=b"r1",
        extra=[
            (b"Contact", b"<" + contact.uri + b">;expires=%d" % expires),
            *((b"Path", value) for value in request.get_all(b"path")),
        ],
    )
    proxy.receive(data, REGISTRAR, 0, now)
    [up] = [s for s in take(proxy) if s.data.startswith(b"SIP/2.0 ")]
    response = parse(up.data)
    assert isinstance(response, Response)
    return response


def our_path(request: Request) -> list[SipUri]:
    out = []
    for value in request.values(b"path"):
        uri = parse_name_addr(value).parsed_uri()
        assert isinstance(uri, SipUri)
        out.append(uri)
    return out


# (case, source, via host, contact, expected received flow in our Path or None)
PATH_CASES = [
    ("udp-nat-source", PHONE_NAT, PHONE_LAN, b"<sip:alice@192.168.1.10:5060>", PHONE_NAT),
    (
        "udp-private-contact",
        Target("udp", "198.51.100.7", 5060),
        "198.51.100.7",
        b"<sip:alice@192.168.1.10:5060>",
        Target("udp", "198.51.100.7", 5060),
    ),
    (
        "udp-public",
        Target("udp", "198.51.100.8", 5060),
        "198.51.100.8",
        b"<sip:bob@198.51.100.8:5060>",
        None,
    ),
    (
        "tcp-always-flow",
        Target("tcp", "198.51.100.8", 51000),
        "198.51.100.8",
        b"<sip:bob@198.51.100.8:5060;transport=tcp>",
        Target("tcp", "198.51.100.8", 51000),
    ),
    (
        "tls-always-flow",
        Target("tls", "198.51.100.9", 52000),
        "198.51.100.9",
        b"<sip:carol@198.51.100.9:5061;transport=tls>",
        Target("tls", "198.51.100.9", 52000),
    ),
]


@pytest.mark.parametrize(
    ("source", "via_host", "contact", "flow"),
    [case[1:] for case in PATH_CASES],
    ids=[case[0] for case in PATH_CASES],
)
def test_register_gets_our_path_with_received_when_needed(
    source: Target, via_host: str, contact: bytes, flow: Target | None
) -> None:
    proxy = make_proxy()
    listener = {"udp": 0, "tcp": 1, "tls": 2}[source.transport]
    request = forwarded(
        proxy, register(source, via_host=via_host, contact=contact), source, listener
    )
    paths = our_path(request)
    # the REGISTER changed listener when it came by TCP/TLS: two entries, like Record-Route
    assert len(paths) == (1 if source.transport == "udp" else 2)
    assert paths[0].host == PUBLIC
    assert all("lr" in uri.params and "path" in uri.params for uri in paths)
    # the first entry carries the flow (Kamailio's path_use_received reads the first Path URI)
    assert flow_of(paths[0]) == flow
    assert all(flow_of(uri) is None for uri in paths[1:])
    if flow is not None:
        assert flow_of(paths[0]).flow  # type: ignore[union-attr]
    assert b"path" in request.values(b"require")
    # the registrar sees no NAT knowledge needed: the Contact is untouched (no alias on REGISTER)
    assert request.values(b"contact") == [contact]


def test_received_is_escaped_in_the_path_uri_as_kamailio_writes_it() -> None:
    proxy = make_proxy()
    source = Target("tcp", "198.51.100.8", 51000)
    request = forwarded(proxy, register(source, via_host="198.51.100.8"), source, 1)
    top, bottom = request.values(b"path")
    assert (
        top == b"<sip:203.0.113.1:5060;lr;path;received=sip:198.51.100.8:51000%3Btransport%3Dtcp>"
    )
    assert bottom == b"<sip:203.0.113.1:5060;transport=tcp;lr;path>"


def invite_along_path(path: list[bytes], ruri: bytes, *, branch: bytes = b"z9hG4bKk1") -> bytes:
    """What a registrar/proxy (Kamailio ``lookup``) sends to a registered phone."""
    return build_request(
        "INVITE",
        ruri,
        [
            (b"Via", b"SIP/2.0/UDP 10.0.0.3:5060;branch=" + branch),
            (b"Max-Forwards", b"69"),
            *((b"Route", value) for value in path),
            (b"From", b"<sip:bob@example.com>;tag=b1"),
            (b"To", b"<sip:alice@example.com>"),
            (b"Call-ID", b"call-1"),
            (b"CSeq", b"1 INVITE"),
            (b"Contact", b"<sip:bob@10.0.0.3:5060>"),
        ],
    )


@pytest.mark.parametrize(
    ("source", "listener", "expect_listener"),
    [(PHONE_NAT, 0, 0), (Target("tcp", "198.51.100.8", 51000), 1, 1)],
    ids=["udp", "tcp"],
)
def test_invite_along_our_path_reaches_the_phone_flow(
    source: Target, listener: int, expect_listener: int
) -> None:
    proxy = make_proxy()
    request = forwarded(proxy, register(source), source, listener)
    registrar_ok(proxy, request)
    proxy.receive(
        invite_along_path(request.values(b"path"), b"sip:alice@192.168.1.10:5060"), PBX, 0, 1.0
    )
    sends = [s for s in take(proxy) if s.data.startswith(b"INVITE ")]
    assert len(sends) == 1, proxy.events
    [send] = sends
    assert send.target == source
    assert send.target.flow  # over TCP: the phone's connection, never a new one
    assert send.listener == expect_listener
    invite = parse(send.data)
    assert isinstance(invite, Request)
    assert not invite.has(b"route")  # both of our Path entries were ours to remove
    assert invite.uri == b"sip:alice@192.168.1.10:5060"


def test_invite_along_a_path_without_received_goes_by_the_request_uri() -> None:
    proxy = make_proxy()
    public = Target("udp", "198.51.100.8", 5060)
    request = forwarded(
        proxy,
        register(public, via_host=public.host, contact=b"<sip:bob@198.51.100.8:5060>"),
        public,
        0,
    )
    proxy.receive(invite_along_path(request.values(b"path"), b"sip:bob@198.51.100.8"), PBX, 0, 1)
    [send] = [s for s in take(proxy) if s.data.startswith(b"INVITE ")]
    assert send.target == public
    assert not send.target.flow


def test_only_a_destination_may_send_along_our_path() -> None:
    proxy = make_proxy()
    request = forwarded(proxy, register(), PHONE_NAT, 0)
    proxy.receive(invite_along_path(request.values(b"path"), b"sip:a@192.168.1.10"), STRANGER, 0, 1)
    sends = take(proxy)
    assert {send.target for send in sends} == {STRANGER}  # nothing went towards the phone
    statuses = [parse(send.data).status for send in sends]  # type: ignore[union-attr]
    assert statuses == [403]  # refused statelessly, before any 100 Trying


def test_a_lost_phone_connection_answers_430_flow_failed() -> None:
    proxy = make_proxy()
    source = Target("tcp", "198.51.100.8", 51000)
    request = forwarded(proxy, register(source), source, 1)
    proxy.receive(invite_along_path(request.values(b"path"), b"sip:a@192.168.1.10"), PBX, 0, 1.0)
    take(proxy)
    proxy.transport_error(source, 1.1)
    statuses = [parse(s.data) for s in take(proxy) if s.target == PBX]
    assert [r.status for r in statuses if isinstance(r, Response)] == [430]


# ---- bad input ---------------------------------------------------------------------------------

BAD_CASES = [
    ("contact-no-bracket-close", (b"Contact", b"<sip:alice@192.168.1.10")),
    ("contact-bad-host", (b"Contact", b"<sip:alice@[zz]:5060>")),
    ("contact-bad-expires", (b"Contact", b"<sip:alice@192.168.1.10>;expires=soon")),
    ("contact-star-with-others", (b"Contact", b"*, <sip:a@192.168.1.10>")),
    ("path-garbage", (b"Path", b"<sip:proxy.example.com;lr")),
    ("path-not-sip", (b"Path", b"<tel:+123>")),
]


@pytest.mark.parametrize("header", [case[1] for case in BAD_CASES], ids=[c[0] for c in BAD_CASES])
def test_malformed_contact_or_path_gets_400_and_nothing_is_forwarded(
    header: tuple[bytes, bytes],
) -> None:
    proxy = make_proxy()
    data = register(contact=header[1]) if header[0] == b"Contact" else register(extra=(header,))
    proxy.receive(data, PHONE_NAT, 0, 0.0)
    sends = take(proxy)
    assert [s.target for s in sends] == [PHONE_NAT]
    response = parse(sends[0].data)
    assert isinstance(response, Response)
    assert response.status == 400
    # and the next, well-formed REGISTER goes through as usual
    assert forwarded(proxy, register(branch=b"z9hG4bKreg2"), PHONE_NAT, 0).has(b"path")


def test_require_supported_answers_421_to_a_phone_without_path_support() -> None:
    proxy = make_proxy(require_supported=True)
    proxy.receive(register(extra=()), PHONE_NAT, 0, 0.0)
    [send] = take(proxy)
    response = parse(send.data)
    assert isinstance(response, Response)
    assert (response.status, response.get(b"require")) == (421, b"path")


def test_a_registrar_without_path_support_is_a_clear_logged_failure() -> None:
    proxy = make_proxy()
    request = forwarded(proxy, register(), PHONE_NAT, 0)
    data = build_response(
        request, 420, b"Bad Extension", to_tag=b"r1", extra=[(b"Unsupported", b"path")]
    )
    proxy.receive(data, REGISTRAR, 0, 0.1)
    [up] = [s for s in take(proxy) if s.target == PHONE_NAT]
    response = parse(up.data)
    assert isinstance(response, Response)
    assert response.status == 500
    assert not response.has(b"unsupported")  # the phone asked for no extension
    assert RegistrarLacksPath("sip:10.0.0.2:5060", "420 Unsupported: path") in proxy.events


# ---- contact alias -----------------------------------------------------------------------------


def test_contact_alias_brings_in_dialog_requests_back_to_the_phone() -> None:
    proxy = make_proxy()
    invite = build_request(
        "INVITE",
        b"sip:bob@example.com",
        [
            (b"Via", b"SIP/2.0/UDP 192.168.1.10:5060;branch=z9hG4bKi1;rport"),
            (b"Max-Forwards", b"70"),
            (b"From", b"<sip:alice@example.com>;tag=a1"),
            (b"To", b"<sip:bob@example.com>"),
            (b"Call-ID", b"call-2"),
            (b"CSeq", b"1 INVITE"),
            (b"Contact", b"<sip:alice@192.168.1.10:5060>"),
        ],
    )
    proxy.receive(invite, PHONE_NAT, 0, 0.0)
    [out] = [s for s in take(proxy) if s.data.startswith(b"INVITE ")]
    forwarded_invite = parse(out.data)
    assert isinstance(forwarded_invite, Request)
    [contact] = forwarded_invite.values(b"contact")
    assert contact == b"<sip:alice@192.168.1.10:5060;alias=198.51.100.7~40000~1>"
    # the PBX's BYE later goes to that Contact, through our Record-Route
    rr = forwarded_invite.values(b"record-route")
    bye = build_request(
        "BYE",
        parse_name_addr(contact).uri,
        [
            (b"Via", b"SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bKb1"),
            (b"Max-Forwards", b"70"),
            *((b"Route", value) for value in rr),
            (b"From", b"<sip:bob@example.com>;tag=b9"),
            (b"To", b"<sip:alice@example.com>;tag=a1"),
            (b"Call-ID", b"call-2"),
            (b"CSeq", b"2 BYE"),
        ],
    )
    proxy.receive(bye, REGISTRAR, 0, 1.0)
    [send] = [s for s in take(proxy) if s.data.startswith(b"BYE ")]
    assert send.target == PHONE_NAT
    out_bye = parse(send.data)
    assert isinstance(out_bye, Request)
    assert out_bye.uri == b"sip:alice@192.168.1.10:5060"  # handle_ruri_alias removes it


def test_a_phone_answering_from_behind_nat_gets_its_contact_aliased() -> None:
    proxy = make_proxy()
    request = forwarded(proxy, register(), PHONE_NAT, 0)
    registrar_ok(proxy, request)
    proxy.receive(
        invite_along_path(request.values(b"path"), b"sip:alice@192.168.1.10:5060"), PBX, 0, 1.0
    )
    [send] = [s for s in take(proxy) if s.data.startswith(b"INVITE ")]
    invite = parse(send.data)
    assert isinstance(invite, Request)
    ok = build_response(
        invite, 200, b"OK", to_tag=b"p1", extra=[(b"Contact", b"<sip:alice@192.168.1.10:5060>")]
    )
    proxy.receive(ok, PHONE_NAT, 0, 1.1)
    [up] = [s for s in take(proxy) if s.target == PBX]
    response = parse(up.data)
    assert isinstance(response, Response)
    assert response.values(b"contact") == [
        b"<sip:alice@192.168.1.10:5060;alias=198.51.100.7~40000~1>"
    ]


def test_a_phone_not_behind_nat_keeps_its_contact() -> None:
    proxy = make_proxy()
    public = Target("udp", "198.51.100.8", 5060)
    invite = build_request(
        "INVITE",
        b"sip:bob@example.com",
        [
            (b"Via", b"SIP/2.0/UDP 198.51.100.8:5060;branch=z9hG4bKi2"),
            (b"From", b"<sip:alice@example.com>;tag=a1"),
            (b"To", b"<sip:bob@example.com>"),
            (b"Call-ID", b"call-3"),
            (b"CSeq", b"1 INVITE"),
            (b"Contact", b"<sip:alice@198.51.100.8:5060>"),
        ],
    )
    proxy.receive(invite, public, 0, 0.0)
    [out] = [s for s in take(proxy) if s.data.startswith(b"INVITE ")]
    message = parse(out.data)
    assert isinstance(message, Request)
    assert message.values(b"contact") == [b"<sip:alice@198.51.100.8:5060>"]


# ---- keepalives --------------------------------------------------------------------------------


def test_keepalives_ping_registered_phones_and_report_one_that_stops_answering() -> None:
    proxy = make_proxy(keepalive_interval=10.0, keepalive_misses=2)
    request = forwarded(proxy, register(), PHONE_NAT, 0)
    registrar_ok(proxy, request, expires=600)
    pings: list[tuple[float, Send]] = []
    now = 0.1
    for _ in range(10_000):  # bounded walk of the wheel over 45 s
        deadline = proxy.get_timer()
        assert deadline is not None
        if deadline > 45.0:
            break
        now = deadline
        proxy.handle_timer(now)
        for send in take(proxy):
            pings.append((now, send))
            if now < 12.0:  # the phone answers the first pings only
                answer(proxy, send, now)
    times = [at for at, send in pings if send.target == PHONE_NAT]
    assert len(times) in (4, 5)
    assert all(b - a == pytest.approx(10.0) for a, b in itertools.pairwise(times))
    assert pings[0][1].data.startswith(b"OPTIONS sip:alice@192.168.1.10:5060 SIP/2.0")
    assert pings[0][1].target.flow
    unreachable = [e for e in proxy.events if isinstance(e, PhoneUnreachable)]
    assert len(unreachable) == 1  # reported once, after two unanswered pings in a row
    assert unreachable[0].cause == "2 keepalives unanswered"
    assert unreachable[0].aor == "sip:alice@example.com"


def answer(proxy: Proxy, send: Send, now: float) -> None:
    request = parse(send.data)
    assert isinstance(request, Request)
    proxy.receive(build_response(request, 200, b"OK", to_tag=b"x"), send.target, 0, now)


def test_an_answer_after_a_report_brings_the_phone_back() -> None:
    proxy = make_proxy(keepalive_interval=1.0, keepalive_misses=1)
    registrar_ok(proxy, forwarded(proxy, register(), PHONE_NAT, 0))
    last: Send | None = None
    for _ in range(3 * SLOTS):
        deadline = proxy.get_timer()
        assert deadline is not None
        assert deadline < 10
        proxy.handle_timer(deadline)
        sends = take(proxy)
        if sends:
            last = sends[-1]
        if any(isinstance(e, PhoneUnreachable) for e in proxy.events):
            break
    assert last is not None
    answer(proxy, last, 5.0)
    assert isinstance(proxy.events[-1], PhoneReachable)


def test_stream_phones_get_crlf_pings_and_a_lost_connection_is_reported() -> None:
    proxy = make_proxy(keepalive_interval=2.0)
    source = Target("tls", "198.51.100.9", 52000)
    registrar_ok(proxy, forwarded(proxy, register(source), source, 2))
    for _ in range(SLOTS + 1):
        deadline = proxy.get_timer()
        assert deadline is not None
        proxy.handle_timer(deadline)
        sends = take(proxy)
        if sends:
            assert [(s.data, s.target, s.listener) for s in sends] == [(b"\r\n\r\n", source, 2)]
            break
    else:
        pytest.fail("no keepalive within one turn of the wheel")
    proxy.transport_error(source, 3.0)
    assert any(isinstance(e, PhoneUnreachable) for e in proxy.events)
    assert proxy.front is not None
    assert proxy.front.keepalive is not None
    assert proxy.front.keepalive.bindings == {}


def test_unregister_and_expiry_remove_the_binding() -> None:
    proxy = make_proxy(keepalive_interval=1.0)
    keepalive = proxy.front.keepalive  # type: ignore[union-attr]
    assert keepalive is not None
    registrar_ok(proxy, forwarded(proxy, register(), PHONE_NAT, 0), expires=3)
    assert list(keepalive.bindings) == [PHONE_NAT]
    for _ in range(10 * SLOTS):
        deadline = proxy.get_timer()
        if deadline is None or deadline > 5.0:
            break
        proxy.handle_timer(deadline)
        take(proxy)
    assert keepalive.bindings == {}
    registrar_ok(proxy, forwarded(proxy, register(branch=b"z9hG4bKr3"), PHONE_NAT, 0), expires=0)
    assert keepalive.bindings == {}


def test_100k_phones_spread_over_the_wheel() -> None:
    proxy = make_proxy(keepalive_interval=30.0)
    keepalive = proxy.front.keepalive  # type: ignore[union-attr]
    assert keepalive is not None
    for i in range(100_000):
        flow = Target("udp", f"198.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}", 5060, flow=True)
        aor, contact = b"sip:u%d@example.com" % i, b"sip:u%d@192.168.0.1" % i
        keepalive.learned(flow, 0, aor, contact, 3600, 0.0)
    sizes = [len(bucket) for bucket in keepalive.wheel]
    assert sum(sizes) == 100_000
    assert max(sizes) < 1.2 * 100_000 / SLOTS  # no tick pings much more than its share
    proxy.handle_timer(proxy.get_timer() or 0.0)
    assert len(take(proxy)) == sizes[0]  # one tick, one bucket


# ---- multi-homing ------------------------------------------------------------------------------


def make_two_sided_proxy() -> Proxy:
    """Public 203.0.113.1 and private 10.0.0.1, both UDP; the host routes 10/8 privately."""
    from siplb.proxy.multihome import SourceRouting

    listeners = [Listener(0, "udp", PUBLIC, 5060), Listener(1, "udp", "10.0.0.1", 5060)]
    spec = DestinationSpec("sip:10.0.0.2:5060", REGISTRAR.host, REGISTRAR.port)
    proxy = Proxy(
        listeners=listeners,
        sets=[SetSpec("registrar", (spec,))],
        default_set="registrar",
        settings=ProxySettings(),
        health=HealthSettings(),
        now=0.0,
        probing=False,
        registrar=RegistrarSettings(),
    )
    proxy.routing = SourceRouting(
        listeners, lambda host: "10.0.0.1" if host.startswith("10.") else PUBLIC
    )
    return proxy


def test_a_register_from_the_public_side_leaves_on_the_private_side_with_two_paths() -> None:
    proxy = make_two_sided_proxy()
    proxy.receive(register(), PHONE_NAT, 0, 0.0)
    [send] = [s for s in take(proxy) if s.target == REGISTRAR]
    assert send.listener == 1  # from the private address
    request = parse(send.data)
    assert isinstance(request, Request)
    assert request.top_via().host == "10.0.0.1"
    top, bottom = request.values(b"path")
    assert top.startswith(b"<sip:10.0.0.1:5060;lr;path;received=sip:198.51.100.7:40000>")
    assert bottom == b"<sip:203.0.113.1:5060;lr;path>"
    registrar_ok(proxy, request)
    # the registrar's INVITE comes in privately and leaves publicly, to the NAT binding
    proxy.receive(
        invite_along_path(request.values(b"path"), b"sip:alice@192.168.1.10"), PBX, 1, 1.0
    )
    [invite] = [s for s in take(proxy) if s.data.startswith(b"INVITE ")]
    assert (invite.target, invite.listener) == (PHONE_NAT, 0)
    message = parse(invite.data)
    assert isinstance(message, Request)
    assert message.values(b"record-route") == [
        b"<sip:203.0.113.1:5060;lr>",
        b"<sip:10.0.0.1:5060;lr>",
    ]


def test_a_phone_registering_from_a_new_nat_binding_replaces_the_old_one() -> None:
    proxy = make_proxy()
    keepalive = proxy.front.keepalive  # type: ignore[union-attr]
    assert keepalive is not None
    registrar_ok(proxy, forwarded(proxy, register(), PHONE_NAT, 0))
    moved = Target("udp", PHONE_NAT.host, 40001)
    registrar_ok(proxy, forwarded(proxy, register(moved, branch=b"z9hG4bKr9"), moved, 0))
    assert list(keepalive.bindings) == [moved]
    assert sum(len(bucket) for bucket in keepalive.wheel) == 1


# ---- RFC 5626 outbound: the edge proxy's flow token ------------------------------------------

OUTBOUND_CONTACT = b'<sip:bob@198.51.100.8:5070;ob>;reg-id=1;+sip.instance="<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"'
PUBLIC_PHONE = Target("udp", "198.51.100.8", 5060)  # not behind NAT: no received in our Path


# (case, source, listener, contact, via count, token and ob expected)
OUTBOUND_CASES = [
    pytest.param(PUBLIC_PHONE, 0, OUTBOUND_CONTACT, 1, True, id="udp-reg-id"),
    pytest.param(
        Target("tcp", "198.51.100.8", 51000), 1, OUTBOUND_CONTACT, 1, True, id="tcp-reg-id"
    ),
    pytest.param(PUBLIC_PHONE, 0, b"<sip:bob@198.51.100.8:5070;ob>", 1, False, id="no-reg-id"),
    pytest.param(PUBLIC_PHONE, 0, OUTBOUND_CONTACT, 2, False, id="not-the-first-hop"),
]


@pytest.mark.parametrize(("source", "listener", "contact", "vias", "outbound"), OUTBOUND_CASES)
def test_an_outbound_register_gets_a_flow_token_and_ob_in_our_path(
    source: Target, listener: int, contact: bytes, vias: int, outbound: bool
) -> None:
    """RFC 5626 5.1: the first hop puts a flow token (the flow the REGISTER came on) in the user
    part of its Path URI, with ``ob``; a proxy further in puts neither."""
    proxy = make_proxy()
    data = register(source, via_host=source.host, contact=contact)
    if vias == 2:
        data = data.replace(b"Via: ", b"Via: SIP/2.0/UDP 192.0.2.50;branch=z9hG4bKedge\r\nVia: ", 1)
    request = forwarded(proxy, data, source, listener)
    paths = our_path(request)
    phone_side = paths[-1]  # the entry of the listener the phone came in on
    assert ("ob" in phone_side.params) is outbound
    assert (phone_side.user is not None) is outbound
    assert all(uri.user is None and "ob" not in uri.params for uri in paths[:-1])
    if outbound:
        assert token_flow(phone_side.user or b"") == source
    assert request.values(b"contact") == [contact]  # the Contact goes to the registrar as sent


def test_a_request_along_an_outbound_path_uses_the_flow_not_the_request_uri() -> None:
    """RFC 5626 5.3: the flow token, not the Contact (port 5070), says where the phone is."""
    proxy = make_proxy()
    request = forwarded(
        proxy,
        register(PUBLIC_PHONE, via_host=PUBLIC_PHONE.host, contact=OUTBOUND_CONTACT),
        PUBLIC_PHONE,
        0,
    )
    registrar_ok(proxy, request)
    proxy.receive(
        invite_along_path(request.values(b"path"), b"sip:bob@198.51.100.8:5070;ob"), PBX, 0, 1.0
    )
    [send] = [s for s in take(proxy) if s.data.startswith(b"INVITE ")]
    assert send.target == PUBLIC_PHONE  # before: 198.51.100.8:5070, by the Request-URI
    assert send.target.flow


def test_a_changed_flow_token_is_refused() -> None:
    proxy = make_proxy()
    request = forwarded(
        proxy,
        register(PUBLIC_PHONE, via_host=PUBLIC_PHONE.host, contact=OUTBOUND_CONTACT),
        PUBLIC_PHONE,
        0,
    )
    [path] = request.values(b"path")
    token = parse_name_addr(path).parsed_uri().user  # type: ignore[union-attr]
    assert token is not None
    forged = path.replace(token, b"bm90IGEgZmxvdw")  # "not a flow"
    proxy.receive(invite_along_path([forged], b"sip:bob@198.51.100.8"), PBX, 0, 1.0)
    statuses = [parse(s.data) for s in take(proxy)]
    assert [r.status for r in statuses if isinstance(r, Response)] == [403]


def test_a_silent_phone_flow_answers_430_so_the_registrar_side_tries_another() -> None:
    """RFC 5626 5.3: a flow that fails (here: no answer on UDP until Timer B) is 430, not 408."""
    proxy = make_proxy()
    request = forwarded(
        proxy,
        register(PUBLIC_PHONE, via_host=PUBLIC_PHONE.host, contact=OUTBOUND_CONTACT),
        PUBLIC_PHONE,
        0,
    )
    proxy.receive(invite_along_path(request.values(b"path"), b"sip:bob@198.51.100.8"), PBX, 0, 1.0)
    take(proxy)
    now = 1.0
    while (deadline := proxy.get_timer()) is not None and deadline < 40.0:
        now = deadline
        proxy.handle_timer(now)
    finals = [parse(s.data) for s in take(proxy) if s.target == PBX]
    statuses = {r.status for r in finals if isinstance(r, Response) and r.status >= 200}
    assert statuses == {430}  # (sent again by Timer G: this PBX never ACKs)


def test_430_from_a_destination_fails_over_to_the_next_one() -> None:
    """A destination whose flow to the phone failed answers 430: another destination of the
    set may hold another flow of the same phone (RFC 5626 5.3, 10)."""
    lab = make_lab([Script(invite=(430,)), Script()])
    call = lab.uac.call()
    call.invite()
    lab.net.run(1.0)
    assert call.statuses == [100, 180, 200]
    assert lab.proxy.stats["failovers"] == 1
    assert lab.state(0) == "up"  # the destination itself is fine: only its flow failed
