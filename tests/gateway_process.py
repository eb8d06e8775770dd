"""A ClickHouse gateway process of a test's own, to stop and start again on the same port and data."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import clickhouse_connect
from pydantic import SecretStr

from blocks.clickhouse import ClickHouseSink
from stack.paths import PROJECT_ROOT
from stack.ports import HOST, free_port, wait_for_port

PASSWORD_ENV = "NVRFLOW_TEST_GATEWAY_PASSWORD"


@dataclass
class Gateway:
    data_dir: Path
    password: str
    port: int = field(default_factory=free_port)
    hold_file: Path | None = None  # the gateway's tests-only --hold-file
    proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, PASSWORD_ENV: self.password, "PYTHONPATH": str(PROJECT_ROOT)}
        argv = [sys.executable, "-m", "stack.clickhouse_gateway", "--port", str(self.port),
                "--data-dir", str(self.data_dir), "--password-env", PASSWORD_ENV]  # fmt: skip
        if self.hold_file is not None:
            argv += ["--hold-file", str(self.hold_file)]
        # A file, not a pipe: nobody reads the log while the gateway runs, and a full pipe would block it.
        log_path = self.data_dir.parent / f"gateway-{self.port}.log"
        with log_path.open("ab") as log:
            self.proc = subprocess.Popen(argv, env=env, stdout=log, stderr=log)
        proc = self.proc
        try:
            wait_for_port(self.port, timeout=60, alive=lambda: proc.poll() is None)
        except Exception:
            proc.kill()
            proc.wait(timeout=10)
            raise AssertionError(f"gateway did not start: {log_path.read_text()}") from None

    def stop(self) -> None:
        """SIGTERM if still running; either way the gateway must have exited cleanly."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(timeout=60) == 0

    def __enter__(self) -> Gateway:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def client(self, **kwargs):
        """A clickhouse-connect client, made as against a production server."""
        options = {"connect_timeout": 5, "send_receive_timeout": 30, "password": self.password, **kwargs}
        return clickhouse_connect.get_client(host=HOST, port=self.port, username="default", **options)

    def sink(self, database: str) -> ClickHouseSink:
        return ClickHouseSink(
            url=f"http://{HOST}:{self.port}", password=SecretStr(self.password), database=database
        )
