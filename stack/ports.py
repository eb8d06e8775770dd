"""Loopback port helpers shared by the stack's processes and the tests."""

from __future__ import annotations

import socket
import time

HOST = "127.0.0.1"


def free_port() -> int:
    """A port that nothing listens on right now; servers bind it without SO_REUSEPORT."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def is_listening(port: int, host: str = HOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def wait_for_port(port: int, timeout: float, host: str = HOST, alive=lambda: True) -> None:
    """Block until something accepts connections on the port, or raise TimeoutError.

    `alive` is polled too, so a server that died during start-up fails fast instead of
    waiting out the timeout.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if is_listening(port, host):
            return
        if not alive():
            raise RuntimeError(f"process meant to listen on {host}:{port} exited during start-up")
        time.sleep(0.1)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout:.0f} s")
