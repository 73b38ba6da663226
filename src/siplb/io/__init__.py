"""The asyncio shell: sockets, timers and the clock. The only code that touches the event loop."""
