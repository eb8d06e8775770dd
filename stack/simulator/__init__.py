"""Simulated Hikvision recorders speaking ISAPI on loopback ports (see `python -m stack.simulator`)."""
