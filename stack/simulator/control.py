"""Tiny client for the simulator's `/_sim/` control endpoints (fault injection and counters)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from stack.paths import PROJECT_ROOT
from stack.ports import HOST, wait_for_port
from stack.processes import terminate

TIMEOUT_S = 10


def _call(port: int, method: str, path: str, payload: dict | None = None, host: str = HOST) -> dict:
    data = json.dumps(payload).encode() if payload is not None else None
    request = urllib.request.Request(
        f"http://{host}:{port}{path}",
        data=data,
        method=method,
        headers={"Content-Type": "application/json"} if data is not None else {},
    )
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
        return json.loads(response.read())


def set_faults(port: int, host: str = HOST, **faults) -> dict:
    """Change some faults (latency_ms, bandwidth_bps, error_rate, error_status, drop_after_bytes,
    wrong_size, offline, wrong_password, fail_next, low_privilege, refuse_download_forms,
    download_refusal_status, download_refusal_sub_status, download_body); returns the whole
    fault state.

    e.g. `low_privilege="download"` answers downloads with 403 lowPrivilege;
    `refuse_download_forms="post_xml,get_xml"` accepts only the query-string GET;
    `download_body="hikvision"` accepts only a body in the hikvision.com namespace."""
    return _call(port, "PUT", "/_sim/faults", faults, host)


def reset_faults(port: int, host: str = HOST) -> dict:
    return _call(port, "DELETE", "/_sim/faults", host=host)


def get_faults(port: int, host: str = HOST) -> dict:
    return _call(port, "GET", "/_sim/faults", host=host)


def stats(port: int, host: str = HOST) -> dict:
    return _call(port, "GET", "/_sim/stats", host=host)


def reset_stats(port: int, host: str = HOST) -> dict:
    return _call(port, "DELETE", "/_sim/stats", host=host)


def segments(port: int, host: str = HOST) -> list[dict]:
    """Every segment the recorder holds (track, local start/end, name, size, playbackURI)."""
    return _call(port, "GET", "/_sim/segments", host=host)["segments"]


@contextmanager
def running(spec: dict, folder: Path, ready_timeout: float = 300) -> Iterator[subprocess.Popen]:
    """Run `python -m stack.simulator` on `spec` (written into `folder`) until the block ends.

    The first start may render footage with ffmpeg, hence the generous ready timeout.
    """
    spec_file = folder / "simulator-spec.json"
    spec_file.write_text(json.dumps(spec))
    process = subprocess.Popen(
        [sys.executable, "-m", "stack.simulator", "--spec", str(spec_file)],
        cwd=PROJECT_ROOT,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
        stdout=subprocess.DEVNULL,
    )
    try:
        for recorder in spec["recorders"]:
            wait_for_port(recorder["port"], timeout=ready_timeout, alive=lambda: process.poll() is None)
        yield process
    finally:
        terminate(process)
