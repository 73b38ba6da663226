"""Multi-link bonding, the pure part (docs/design.md section 2): packet format and sealing, link
health, scheduling, de-duplication and parity. Sockets are in ``siplb.io.bond``.

    bond = Bond(role=Role.CLIENT, client=1, key=key, links={1: 2, 2: 1}, flows=flows,
                health=HealthSettings(), first_number=first)
    bond.send(Channel(flow=1), datagram, now)       # a local application's datagram
    bond.receive(datagram, now)                      # what arrived on any link
    bond.handle_timer(now)                           # at bond.get_timer()
    for transmit in bond.datagrams_to_send(): ...    # Transmit(link, data)
    while (event := bond.next_event()) is not None: ...   # Delivered, LinkWentUp, LinkWentDown
"""

from .link import LinkState
from .packet import Channel, Kind, PacketError
from .peer import Bond, Counters, Delivered, LinkStatus, LinkWentDown, LinkWentUp, Role, Transmit
from .seal import KEY_SIZE
from .server import BondServer, ClientEvent, Outgoing, Path
from .settings import FlowPolicy, HealthSettings, Mode

__all__ = [
    "KEY_SIZE",
    "Bond",
    "BondServer",
    "Channel",
    "ClientEvent",
    "Counters",
    "Delivered",
    "FlowPolicy",
    "HealthSettings",
    "Kind",
    "LinkState",
    "LinkStatus",
    "LinkWentDown",
    "LinkWentUp",
    "Mode",
    "Outgoing",
    "PacketError",
    "Path",
    "Role",
    "Transmit",
]
