"""TOML -> validated, frozen settings (docs/design.md section 2).

``load_config(path)`` and ``parse_config(text)`` return a ``Config``; a bad config raises one
``ConfigError`` whose ``problems`` list every problem with the path of its key. Pydantic models
(``schema``) check the file at the edge; what the rest of siplb sees are the frozen dataclasses
of ``settings`` and ``siplb.dispatch.spec``. Files the config names are found relative to its
folder when it is loaded; the ``[protection]`` blocklist and the ``[cluster]`` secret file are
read then too. ``Config.config_hash`` is what cluster nodes compare to show config skew.
"""

from siplb.settings import (
    AclRule,
    AdminSettings,
    ClusterSettings,
    Config,
    HostPort,
    LimitsSettings,
    ListenerSettings,
    LogSettings,
    NftablesSettings,
    ProtectionSettings,
    ProxySettings,
    RateSettings,
    RouteRule,
    ScannerSettings,
    TcpSettings,
    TlsFiles,
)

from .default import DEFAULT_CONFIG_TOML
from .errors import ConfigError, Problem
from .hashing import config_hash
from .loader import load_config, parse_config

__all__ = [
    "DEFAULT_CONFIG_TOML",
    "AclRule",
    "AdminSettings",
    "ClusterSettings",
    "Config",
    "ConfigError",
    "HostPort",
    "LimitsSettings",
    "ListenerSettings",
    "LogSettings",
    "NftablesSettings",
    "Problem",
    "ProtectionSettings",
    "ProxySettings",
    "RateSettings",
    "RouteRule",
    "ScannerSettings",
    "TcpSettings",
    "TlsFiles",
    "config_hash",
    "load_config",
    "parse_config",
]
