"""Destination sets, selection algorithms, health state and call accounting (pure)."""

from siplb.dispatch.accounting import CallAccounting, CallEntry
from siplb.dispatch.dispatcher import Dispatcher
from siplb.dispatch.dset import Destination, NoDestination, NoDestinationReason
from siplb.dispatch.health import (
    AdminState,
    HealthSnapshot,
    HealthTable,
    State,
    StateChanged,
)
from siplb.dispatch.spec import (
    Algorithm,
    DestinationSpec,
    HashKey,
    HealthSettings,
    SetSpec,
)

__all__ = [
    "AdminState",
    "Algorithm",
    "CallAccounting",
    "CallEntry",
    "Destination",
    "DestinationSpec",
    "Dispatcher",
    "HashKey",
    "HealthSettings",
    "HealthSnapshot",
    "HealthTable",
    "NoDestination",
    "NoDestinationReason",
    "SetSpec",
    "State",
    "StateChanged",
]
