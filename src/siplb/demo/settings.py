"""The demo's settings and the balancer config it embeds (no config file is needed)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

HOST: Final = "127.0.0.1"
SET_NAME: Final = "demo-pbx"
PBX_PORT_OFFSET: Final = 10  # the PBXs listen on port+10, port+11, port+12
PBX_COUNT: Final = 3

DEMO_CONFIG: Final = """\
[[listen]]
transport = "udp"
address = "{host}:{port}"

[[sets]]
name = "{set_name}"
algorithm = "{algorithm}"
destinations = [
{destinations}
]

[health]
interval = 1.0
timeout = 0.5
down_after = 2
up_after = 2

[proxy]
failover_timeout = 1.0
grace_period = 1.0
"""

ADMIN_CONFIG: Final = """
[admin]
listen = "{host}:{port}"
token = "{token}"
"""


@dataclass(frozen=True, slots=True)
class DemoSettings:
    duration: float | None = None  # None: until Ctrl-C or SIGTERM
    cps: float = 4.0
    port: int = 5060
    table: bool = True
    down_at: float = 12.0  # pbx2 stops answering this far into every cycle
    up_at: float = 24.0  # and answers again here
    cycle: float = 30.0
    hold: tuple[float, float] = (2.0, 8.0)
    algorithm: str = "round-robin"
    seed: int | None = None
    admin_port: int | None = 8080  # the admin API and dashboard (0: any free port; None: none)

    def problems(self) -> list[str]:
        out = []
        if not 0 < self.cps <= 200:
            out.append("--cps must be above 0 and at most 200")
        if not 1 <= self.port <= 65535 - PBX_COUNT - PBX_PORT_OFFSET:
            out.append(f"--port must be from 1 to {65535 - PBX_COUNT - PBX_PORT_OFFSET}")
        if self.duration is not None and self.duration <= 0:
            out.append("--duration must be above 0")
        if not 0 <= self.down_at < self.up_at <= self.cycle:
            out.append("the script needs 0 <= down_at < up_at <= cycle")
        if not 0 <= self.hold[0] <= self.hold[1]:
            out.append("hold must be (shortest, longest) in seconds")
        if self.admin_port is not None and not 0 <= self.admin_port <= 65535:
            out.append("--admin-port must be from 0 to 65535")
        return out

    def config_toml(self, token: str) -> str:
        """The balancer's config; ``token`` guards its admin API (when there is one)."""
        destinations = ",\n".join(  # attrs: the dashboard and `siplb status` name each PBX
            f'  {{ uri = "sip:{HOST}:{self.port + PBX_PORT_OFFSET + i}", '
            f'attrs = {{ pbx = "pbx{i + 1}" }} }}'
            for i in range(PBX_COUNT)
        )
        config = DEMO_CONFIG.format(
            host=HOST,
            port=self.port,
            set_name=SET_NAME,
            algorithm=self.algorithm,
            destinations=destinations,
        )
        if self.admin_port is not None:
            config += ADMIN_CONFIG.format(host=HOST, port=self.admin_port, token=token)
        return config
