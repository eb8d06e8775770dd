"""A flow for the work pool tests: writes what its process sees of the pool's job variables."""

from __future__ import annotations

import json
import os
from pathlib import Path

from prefect import flow

KEYS = ("NVRFLOW_ROOT", "NVRFLOW_DATA", "PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "MALLOC_MMAP_THRESHOLD_")


@flow(name="nvrflow-env-probe")
def env_probe(out: str) -> None:
    seen = {key: os.environ.get(key) for key in KEYS} | {"cwd": os.getcwd()}
    Path(out).write_text(json.dumps(seen))
