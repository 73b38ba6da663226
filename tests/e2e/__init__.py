"""End-to-end tests: real SIPp callers and callees around a proxy on loopback."""
