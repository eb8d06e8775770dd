"""Stopping a child process politely, then firmly."""

from __future__ import annotations

import subprocess


def terminate(process: subprocess.Popen, timeout: float = 15) -> int:
    """SIGTERM, wait up to `timeout`, then SIGKILL; returns the exit code."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
    return process.returncode
