"""siplb: a SIP load balancer and high-availability toolkit."""

__version__ = "0.1.0"
