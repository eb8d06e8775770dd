"""What every benchmark shares: measuring a child process, and writing and printing result rows.

A result file `bench/results/<name>.json` is a JSON list of rows:
`{"metric", "unit", "nvrflow", "baseline", "baseline_name", "ratio"}` where
`ratio = nvrflow / baseline` always; the metric name says whether higher or lower is better.
Beside it, `<name>.run.json` says when and on which machine the rows were measured.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Self

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Measured:
    """One finished child process: exit code, wall time, peak RSS, and what it printed."""

    returncode: int
    seconds: float
    max_rss_mb: float
    stdout: str
    stderr: str
    timed_out: bool
    cpu_s: float = 0.0  # user + system CPU of the process and the children it waited for


# Linux carries a process's RSS high-water mark across execve, and a forked child starts with
# its parent's pages, so a child spawned straight from this (large) process would report at
# least our own RSS. A bare interpreter (~9 MiB) forks the measured command instead and reports
# its rusage: the floor is then below any Python program's own footprint.
_LAUNCHER = """\
import os, sys
pid = os.fork()
if pid == 0:
    try:
        os.execvp(sys.argv[2], sys.argv[2:])
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as report:
    report.write(f"{usage.ru_maxrss} {os.waitstatus_to_exitcode(status)} {usage.ru_utime + usage.ru_stime}")
sys.exit(0)
"""


def run_measured(
    args: Sequence[str],
    timeout: float,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> Measured:
    """Run `args` and report its own peak RSS (wait4's ru_maxrss of that process alone).

    `resource.getrusage(RUSAGE_CHILDREN)` would give the maximum over every child this process
    ever reaped; a small launcher's wait4 on the one pid keeps the sides of a benchmark apart.
    The command gets its own session so that a timeout kills it with anything it started.
    """
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        tempfile.TemporaryDirectory(prefix="measured-") as scratch,
    ):
        report = Path(scratch) / "rusage"
        started = time.perf_counter()
        proc = subprocess.Popen(  # noqa: S603 - callers pass fixed argument lists
            [sys.executable, "-I", "-S", "-c", _LAUNCHER, str(report), *args],
            cwd=cwd,
            env=dict(env) if env is not None else None,
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        expired = threading.Event()

        def _kill() -> None:
            expired.set()
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

        timer = threading.Timer(timeout, _kill)
        timer.start()
        try:
            proc.wait()
        finally:
            timer.cancel()
        seconds = time.perf_counter() - started
        max_rss_kib, returncode, cpu_s = 0, proc.returncode, 0.0
        if report.exists():
            rss_text, code_text, cpu_text = report.read_text().split()
            max_rss_kib, returncode, cpu_s = int(rss_text), int(code_text), float(cpu_text)
        out.seek(0)
        err.seek(0)
        return Measured(
            returncode=returncode,
            seconds=seconds,
            max_rss_mb=max_rss_kib / 1024,  # Linux reports KiB
            stdout=out.read().decode(errors="replace"),
            stderr=err.read().decode(errors="replace"),
            timed_out=expired.is_set(),
            cpu_s=cpu_s,
        )


def row(metric: str, unit: str, nvrflow: float, baseline: float, baseline_name: str) -> dict:
    """A result row; `ratio` is nvrflow / baseline (None when the baseline is 0)."""
    return {
        "metric": metric,
        "unit": unit,
        "nvrflow": round(nvrflow, 3),
        "baseline": round(baseline, 3),
        "baseline_name": baseline_name,
        "ratio": round(nvrflow / baseline, 3) if baseline else None,
    }


def machine() -> str:
    """This machine in one line: CPU model, cores, memory, OS."""
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    memory_kib = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )
    system = "Linux"
    release = Path("/etc/os-release")
    if release.exists():
        for line in release.read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                system = line.split("=", 1)[1].strip('"')
    return f"{cpu}, {os.cpu_count()} cores, {memory_kib / 1024 / 1024:.0f} GB, {system}"


class Sampler:
    """Calls `sample()` every `every` seconds in a thread of its own while the `with` block runs."""

    every = 0.5

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            self.sample()

    def sample(self) -> None:
        raise NotImplementedError


def status_mb(pid: int, field: str) -> float | None:
    """A memory field of /proc/<pid>/status (VmRSS, VmHWM, ...) in MB; None once the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def commit() -> str:
    """The commit the bench ran on, `+ changes` when the work tree differs from it."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(  # noqa: S603 - fixed argument list
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.strip()
        dirty = subprocess.run(  # noqa: S603
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return f"{head} + changes" if head and dirty else head or "unknown"


def write_results(name: str, rows: list[dict], results_dir: Path = RESULTS_DIR) -> Path:
    """`<name>.json` holds the rows; `<name>.run.json` when and where they were measured."""
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{name}.json"
    run = {"date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine(), "commit": commit()}
    for target, payload in ((path, rows), (results_dir / f"{name}.run.json", run)):
        tmp = target.with_name(f".{target.name}.{os.getpid()}")
        tmp.write_text(json.dumps(payload, indent=2) + "\n")
        tmp.replace(target)
    return path


def format_table(rows: list[dict]) -> str:
    headers = ["metric", "unit", "nvrflow", "baseline", "baseline_name", "ratio"]
    cells = [headers] + [["" if r[h] is None else str(r[h]) for h in headers] for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def print_table(rows: list[dict]) -> None:
    print(format_table(rows), flush=True)
