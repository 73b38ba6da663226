"""SIP capture for Homer and other HEP collectors: what a captured message is and how it is
encoded (HEP version 3). Pure: the shell (``siplb.io.capture``) takes the messages, the clock
and the socket."""

from .hep import Agent, Captured, call_id, cseq_method, encode

__all__ = ["Agent", "Captured", "call_id", "cseq_method", "encode"]
