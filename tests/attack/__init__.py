"""Small, bounded attack tools for the protection tests (loopback only)."""
