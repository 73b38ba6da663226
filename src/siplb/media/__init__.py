"""Media anchoring, the pure part (docs/design.md section 2): what the core asks of an engine and
the SDP rules. The engine client with its sockets is in ``siplb.io.media``."""
