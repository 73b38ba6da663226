"""A minimal working config: one UDP listener on loopback, one set with one destination."""

DEFAULT_CONFIG_TOML = """\
[[listen]]
transport = "udp"
address = "127.0.0.1:5060"

[[sets]]
name = "default"
destinations = [{ uri = "sip:127.0.0.1:5070" }]
"""
