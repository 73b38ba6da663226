"""``[proxy] workers``: the number of balancer processes (1 unless told)."""

from __future__ import annotations

import pytest

from siplb.config import ConfigError, parse_config

MINIMAL = (
    '[[listen]]\naddress = "127.0.0.1:5060"\n'
    '[[sets]]\nname = "pbx"\ndestinations = [{ uri = "sip:127.0.0.1:5070" }]\n'
)

# (the [proxy] table's text, workers expected; None: the config is refused at proxy.workers)
CASES = [
    ("", 1),
    ("[proxy]\nworkers = 1\n", 1),
    ("[proxy]\nworkers = 2\n", 2),
    ("[proxy]\nworkers = 64\n", 64),
    ("[proxy]\nworkers = 0\n", None),
    ("[proxy]\nworkers = 65\n", None),
    ('[proxy]\nworkers = "2"\n', None),
]


@pytest.mark.parametrize(("table", "workers"), CASES)
def test_workers(table: str, workers: int | None) -> None:
    if workers is not None:
        assert parse_config(MINIMAL + table).proxy.workers == workers
        return
    with pytest.raises(ConfigError) as info:
        parse_config(MINIMAL + table)
    assert [problem.path for problem in info.value.problems] == ["proxy.workers"]
