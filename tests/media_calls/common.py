"""What the media call tests share: waiting for siplb to see a destination up."""

from __future__ import annotations

import time

from e2e.balancer import SiplbProcess


def wait_up(siplb: SiplbProcess, uri: str, timeout: float = 10.0) -> None:
    """siplb logged ``uri`` up (its first probe answered): calls may go there."""
    deadline = time.monotonic() + timeout
    while not any(change.new == "up" for change in siplb.state_changes(uri)):
        assert time.monotonic() < deadline, f"{uri} never came up\n{siplb.log_tail()}"
        time.sleep(0.05)
