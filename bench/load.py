"""Load: 50 simulated recorders x 2 channels x 24 one-hour segments, dispatched at once.

`python -m bench.load` (or `make bench-load`) brings up an embedded stack of its own for each
Prefect database asked for (`--database sqlite`, `postgresql` or `both`, the default): SQLite
with the worker's flow-run limit (`NVRFLOW_WORKER_LIMIT`, 4), PostgreSQL as the stack and the
cluster target run it. Its simulator serves the recorders a day each: every channel's 24
segments are one-hour recordings whose files are small (an hour of 160x120 video at 1 frame/s
with a key frame a minute, some 0.5 MB, served as each segment), classified at one frame every 10 minutes: the load is on
orchestration, the recorders and the databases, not on decoding.

The day is dispatched as the `dispatch` flow does, one pipeline run per recorder started at
once, and the bench waits for every run. Then it checks and reports:
- every run Completed and none ever Crashed (each run's state history; a Crashed state's
  message and time are kept, and the stack's logs and Prefect's dead-letter queue are copied
  out when a pass has a problem);
- every recorder's limit held: the simulator's highest count of its downloads in flight is at
  most the recorder's `max_concurrent_downloads` (2);
- ClickHouse holds every segment once, counted without FINAL;
- segments per minute (wall time from the first trigger to the last run's end), CPU seconds of
  the stack's processes, peak memory: the highest sum of the resident memory of every process
  of the stack (server, worker, flow runs, ffmpeg, simulator, ClickHouse, model server) and the
  highest of any one flow-run process;
- Prefect's share of the wall time: the part in which no task of any run was running;
- the events Prefect's services gave up on (its dead-letter queue; SQLite drops some while
  its file is locked) and the zombie window the stack ran with.

Rows go to `bench/results/load.json` and `bench/RESULTS.md`.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.common import RESULTS_DIR, Sampler, print_table, row, status_mb, write_results
from bench.e2e import FlowRunMemory, _intervals, _stat_cpu, _union, final_task_runs

RECORDERS, CHANNELS, SEGMENTS = 50, 2, 24
SEGMENT_S = 3600
# A real hour of video that makes a small file: 160x120 at 1 frame/s, a key frame a minute
# (a 60 s encode looped), some 0.5 MB.
CLIP_S, LOOPS, WIDTH, HEIGHT, FPS, GOP_S = 60, 60, 160, 120, 1, 60
# One frame classified every 10 minutes: only those pictures' groups are decoded.
SAMPLE_FPS = 1 / 600
SCENES = ("coffee", "cat")
START = datetime(2026, 11, 2, 0, 0, 0, tzinfo=UTC)
END = START + timedelta(seconds=SEGMENT_S * SEGMENTS)
USER, SITE = "admin", "load"
SLOTS = 2  # each recorder's max_concurrent_downloads
RUN_TIMEOUT_S = 4 * 3600


def simulator_spec(ports: list[int], password: str, clips: list[Path]) -> dict:
    return {
        "width": WIDTH, "height": HEIGHT, "fps": FPS,
        "recorders": [
            {
                "name": f"load-{i:02d}", "port": port, "username": USER, "password": password,
                "recording_start": START.replace(tzinfo=None).isoformat(),
                "recording_end": END.replace(tzinfo=None).isoformat(), "segment_seconds": SEGMENT_S,
                "channels": [
                    {"id": ch, "scene": SCENES[ch - 1], "codec": "h264", "audio": "none", "clip": str(clips[ch - 1])}
                    for ch in range(1, CHANNELS + 1)
                ],
            }
            for i, port in enumerate(ports, start=1)
        ],
    }  # fmt: skip


class StackMemory(Sampler):
    """Samples the sum of the resident memory of every process of the stack (its tag)."""

    def __init__(self, tag: str) -> None:
        super().__init__()
        self.tag, self.peak_mb = tag, 0.0

    def sample(self) -> None:
        from stack.supervisor import _tagged_pids

        total = sum(status_mb(pid, "VmRSS") or 0.0 for pid in _tagged_pids(self.tag))
        self.peak_mb = max(self.peak_mb, total)


def _register(ports: dict[str, int], password: str) -> None:
    from pydantic import SecretStr

    from blocks.recorder import HikvisionRecorder
    from flows.recorders import upsert_recorder

    for name, port in ports.items():
        block = HikvisionRecorder(
            host="127.0.0.1", port=port, username=USER, password=SecretStr(password),
            channels=list(range(1, CHANNELS + 1)), max_concurrent_downloads=SLOTS, site=SITE,
        )  # fmt: skip
        upsert_recorder(name, block)


def _keep_logs(root: Path, database: str) -> Path:
    """The stack's logs and Prefect's dead-letter queue, kept out of the folder the pass removes."""
    kept = Path(tempfile.mkdtemp(prefix=f"nvrflow-bench-load-{database}-logs-"))
    for part in ("logs", "prefect/dlq"):
        if (root / part).is_dir():
            shutil.copytree(root / part, kept / part)
    return kept


def load_pass(database: str, recorders: int) -> dict[str, Any]:
    """One stack on `database`, the day dispatched at once; the figures and the checks.

    Prefect is imported only once the stack's environment (PREFECT_API_URL) is set: its settings
    are read when it is first imported.
    """
    from stack import prefect_database, supervisor
    from stack.ports import free_port
    from stack.simulator import control
    from stack.simulator.footage import ensure_clip
    from stack.state import load_state

    clips = [
        ensure_clip(scene, "h264", "none", CLIP_S, WIDTH, HEIGHT, FPS, loops=LOOPS, gop_s=GOP_S)
        for scene in SCENES
    ]
    root = Path(tempfile.mkdtemp(prefix=f"nvrflow-bench-load-{database}-"))
    saved = {k: os.environ.get(k) for k in (prefect_database.URL_SETTING, "NVRFLOW_SCHEDULES")}
    os.environ["NVRFLOW_SCHEDULES"] = "off"
    if database == "sqlite":
        (root / "prefect").mkdir(parents=True)
        os.environ[prefect_database.URL_SETTING] = f"sqlite+aiosqlite:///{root}/prefect/prefect.db"
    else:
        os.environ.pop(prefect_database.URL_SETTING, None)
    password = secrets.token_urlsafe(12)
    kept_logs: Path | None = None
    print(f"load ({database}): stack in {root}", flush=True)
    try:
        state = supervisor.start(root, say=lambda msg: print(f"  {msg}", flush=True))
        zombie_window_s = supervisor.zombie_window_s()
        os.environ.update(state.env())
        from prefect.client.orchestration import get_client

        from blocks.clickhouse import ClickHouseSink
        from blocks.loading import load_block
        from core.settings import DEFAULT_SINK_BLOCK
        from core.windows import Window
        from flows.launch import start_pipeline_runs, wait_for_runs
        from stack.models import CLASSIFIER_BLOCK

        # The stack's last recorder port last: the simulator is up once it listens.
        ports = [free_port() for _ in range(recorders - 1)] + [state.recorder_ports[-1]]
        spec = simulator_spec(ports, password, clips)
        (root / "stack" / "simulator.json").write_text(json.dumps(spec, indent=2))
        supervisor.stop_service("simulator", root)
        supervisor.start_service("simulator", root)
        state = load_state(root) or state
        by_name = {r["name"]: r["port"] for r in spec["recorders"]}
        _register(by_name, password)
        segments = recorders * CHANNELS * SEGMENTS
        print(f"load ({database}): {recorders} recorders x {CHANNELS} channels x {SEGMENTS} one-hour "
              f"segments = {segments} segments", flush=True)  # fmt: skip

        services = list(state.pids.values())
        cpu_before = sum(_stat_cpu(p) for p in services)
        tag = str(state.data_dir)
        with StackMemory(tag) as stack_memory, FlowRunMemory(tag) as run_memory:
            began = time.time()
            options = {
                "sample_fps": SAMPLE_FPS,
                "model_block": CLASSIFIER_BLOCK,
            }  # as before: one frame in 10 min
            runs = start_pipeline_runs(dict.fromkeys(by_name, SITE), Window(START, END), options=options)
            dispatched = time.time() - began
            states = wait_for_runs(runs, RUN_TIMEOUT_S)
        cpu = sum(_stat_cpu(p) for p in services) - cpu_before

        with get_client(sync_client=True) as client:
            histories = {name: client.read_flow_run_states(run_id) for name, run_id in runs.items()}
            ended = max(client.read_flow_run(run_id).end_time.timestamp() for run_id in runs.values())  # type: ignore[union-attr]
            said = {
                name: (client.read_flow_run(runs[name]).state.message or "")[:600]  # type: ignore[union-attr]
                for name, final in states.items()
                if final != "Completed"
            }
            task_runs = final_task_runs(client, list(runs.values()), timeout_s=60, every_s=1)
        wall = ended - began
        in_flight = {name: control.stats(port)["max_active_downloads"] for name, port in by_name.items()}
        with load_block(ClickHouseSink, DEFAULT_SINK_BLOCK).connect() as ch:
            stored, distinct = ch.query(
                "SELECT count(), uniqExact(recorder, channel, segment) FROM {db}.segments "
                "WHERE recorder LIKE 'load-%'"
            )[0]
        crashes = {
            name: [f"{s.timestamp:%H:%M:%S} {s.message or ''}"[:600] for s in history if s.name == "Crashed"]
            for name, history in histories.items()
        }
        crashes = {name: lines for name, lines in crashes.items() if lines}
        # Events Prefect's services gave up on (a locked SQLite file): its dead-letter queue.
        dropped = len(list((root / "prefect" / "dlq").glob("*")))
        if crashes or set(states.values()) != {"Completed"}:
            kept_logs = _keep_logs(root, database)
    finally:
        supervisor.stop(root, say=lambda _m: None)
        prefect_database.drop(root)
        shutil.rmtree(root, ignore_errors=True)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    busy = _union(_intervals(task_runs))
    figures = {
        "database": database,
        "recorders": recorders,
        "segments": segments,
        "wall_s": round(wall, 1),
        "dispatch_s": round(dispatched, 1),
        "segments_per_min": round(segments / (wall / 60), 1),
        "cpu_s": round(cpu, 1),
        "stack_peak_mb": round(stack_memory.peak_mb),
        "flow_run_peak_mb": round(max(run_memory.peak_mb.values(), default=0.0)),
        "prefect_share": round(1 - busy / wall, 3),
        "states": sorted(set(states.values())),
        "crashed_runs": sorted(crashes),
        "crashes": crashes,
        "dropped_events": dropped,
        "zombie_window_s": zombie_window_s,
        "max_downloads_in_flight": max(in_flight.values()),
        "stored_segments": stored,
        "distinct_segments": distinct,
    }
    problems = []
    if set(states.values()) != {"Completed"}:
        problems.append(f"not every run Completed: {said} (the stack's logs: {kept_logs})")
    if figures["crashed_runs"]:
        problems.append(f"runs Crashed on the way: {figures['crashed_runs']} (the stack's logs: {kept_logs})")
    if max(in_flight.values()) > SLOTS:
        problems.append(f"a recorder's limit of {SLOTS} was exceeded: {in_flight}")
    if stored != distinct or distinct != segments:
        problems.append(f"ClickHouse holds {stored} segment rows, {distinct} distinct, of {segments}")
    figures["problems"] = problems
    return figures


METRICS = (
    ("segments_per_min", "segments per minute", "segments/min"),
    ("wall_s", "wall time (first trigger to the last run's end)", "s"),
    ("cpu_s", "CPU of the stack's processes", "s"),
    ("stack_peak_mb", "peak memory, every process of the stack together", "MB"),
    ("flow_run_peak_mb", "peak memory of one flow-run process", "MB"),
    ("prefect_share", "Prefect's share of the wall time", "share"),
    ("max_downloads_in_flight", f"most downloads in flight on one recorder (limit {SLOTS})", "downloads"),
)


def _rows(passes: list[dict[str, Any]]) -> list[dict]:
    """PostgreSQL's figures against SQLite's (the baseline) when both ran; else the one alone."""
    by_db = {p["database"]: p for p in passes}
    main_pass = by_db.get("postgresql") or passes[0]
    base = by_db.get("sqlite") if main_pass["database"] == "postgresql" else None
    what = f"{main_pass['recorders']} recorders x {CHANNELS} ch x {SEGMENTS} one-hour segments, {main_pass['database']}"
    base_name = (
        f"the same load, Prefect on SQLite (worker limit {os.environ.get('NVRFLOW_WORKER_LIMIT', '4')})"
    )
    rows = []
    for key, label, unit in METRICS:
        baseline = float(base[key]) if base else 0.0
        rows.append(
            row(f"{what}: {label}", unit, float(main_pass[key]), baseline, base_name if base else "-")
        )
    rows.append(row(f"{what}: runs Crashed on the way", "runs", len(main_pass["crashed_runs"]),
                    len(base["crashed_runs"]) if base else 0, base_name if base else "-"))  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.splitlines()[0])
    parser.add_argument("--database", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--recorders", type=int, default=RECORDERS)
    args = parser.parse_args(argv)
    databases = ("sqlite", "postgresql") if args.database == "both" else (args.database,)
    kept = RESULTS_DIR / "load.passes.json"
    # A database not run this time keeps its latest pass (each database's own, at the same scale).
    passes = [
        p for p in (json.loads(kept.read_text()) if kept.exists() else [])
        if p["database"] not in databases and p["recorders"] == args.recorders
    ]  # fmt: skip
    for database in databases:
        figures = load_pass(database, args.recorders)
        print(json.dumps(figures, indent=2), flush=True)
        passes.append(figures)
    rows = _rows(passes)
    write_results("load", rows)
    kept.write_text(json.dumps(passes, indent=2) + "\n")
    path = RESULTS_DIR / "load.json"
    print_table(rows)
    from bench.results_page import write_page

    print(f"results: {path}; all benches: {write_page()}")
    failed = [
        f"{p['database']}: {problem}"
        for p in passes
        if p["database"] in databases
        for problem in p["problems"]
    ]
    for line in failed:
        print(f"FAILED {line}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
