"""End-to-end benchmark: a realistic window through nvrflow and through the seeds' way, in one run.

`python -m bench.e2e` (or `make bench`) brings up an embedded stack of its own (own data folder,
own Prefect database, schedules paused) and serves on its simulator two recorders x two
channels x two 10-minute segments of 1280x720 25 fps video (80 minutes) of scripted scenes
(`stack.simulator.scenes.make_script`, fixed seeds): people and vehicles enter, cross, stop and
leave a still place, as in `bench.detect`:

    e2e-a  ch1 pasture, a truck then a person, H.264 + G.711u    ch2 pasture, a person then a bus, H.265
    e2e-b  ch1 launch pad, a person and a truck, H.264          ch2 cliff, nobody, H.264 + G.711a

Each channel's script lasts 60 s; its clip is encoded once and looped ten times
(`scene_footage.ensure_scene_clip(loops=10)`: the actors cross ten times a segment), cached under
`cache_dir()/footage/`. The window is then processed:
  nvrflow  through the `recorder-pipeline/recorder` deployment and the stack's worker, with the
           stack's default model block (the NanoDet detector of people and vehicles) and so the
           detect stage, as the demo's recorders run: one flow run per recorder started at once, as
           dispatch does; every pass registers its recorders under new block names, so no cache
           of an earlier pass is used.
             full   all four channels at 1 frame/s (repeated, around the seeds' pass);
             h264   the three H.264 channels at 1 frame/s, and again with key frames only;
  seeds    what the seeds' scripts did, one step after another, with the same detector: hikload per
           recorder, the HandBrakeCLI command per file, per MP4 the 1 frame/s JPEG pictures (ffmpeg)
           then one synchronous Predict per whole picture (`bench.detect.seeds_pictures`), and one
           INSERT per box (clickhouse-connect); same simulator, model server and ClickHouse. One
           pass: it takes over 10 minutes here.
Measured per pass: wall time from the first trigger to the last run's end, realtime factor,
CPU seconds (every process of the stack, flow runs and their ffmpeg included, and the seeds'
own processes), peak memory (each pipeline flow-run process's high-water mark, the figure of the
target "at most 300 MB per pipeline flow run", and the PSS of that process with its children,
sampled; each seeds step's own process), and per stage: nvrflow's time in tasks and the span from the stage's
first task to its last, the seeds' step times. Prefect's share of the wall time comes from the
runs' own timings: the part of the wall time in which no task of any run was running (flow-run
start, scheduling, state changes between tasks). The data is checked after each pass: every
segment in ClickHouse's `segments` once (rows counted without FINAL), and in `objects` people and
vehicles for each channel whose script shows them; the objects persisted are counted against the
scripts' appearances.

Rows go to `bench/results/e2e.json` (format in `bench.common`) and are printed; `bench/RESULTS.md`
gets every bench's latest table (`bench.results_page`). `--no-seeds` skips the seeds' pass (55 min)
and writes the rows against the targets alone, to `bench/results/e2e-targets.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.common import Sampler, print_table, row, run_measured, status_mb, write_results
from stack.paths import PROJECT_ROOT

SEGMENT_S = 600
SEGMENTS = 2
CLIP_S, LOOPS = 60, 10
WIDTH, HEIGHT, FPS = 1280, 720, 25
USER = "admin"
SITE = "bench"
START = datetime(2026, 11, 1, 0, 0, 0, tzinfo=UTC)  # the recorders run on UTC
END = START + timedelta(seconds=SEGMENT_S * SEGMENTS)


@dataclass(frozen=True)
class Camera:
    """A channel's footage: the scripted scene of `seed` (`scenes.make_script`) on `background`."""

    seed: int
    background: str
    codec: str
    audio: str

    def script(self) -> Any:  # stack.simulator.scenes.Script
        from stack.simulator.scenes import make_script

        return make_script(self.seed, CLIP_S, WIDTH, HEIGHT, self.background)

    @property
    def scene(self) -> str:
        return f"{self.background}-{self.seed}"


# Recorder -> channel -> camera. Seeds picked for what they show in their minute, people and
# vehicles the detector finds at 1 frame/s: a truck then a person; a person then a bus; a person
# and a truck; nobody (a quiet camera).
RECORDERS: dict[str, dict[int, Camera]] = {
    "e2e-a": {1: Camera(108, "pasture", "h264", "g711u"), 2: Camera(101, "pasture", "h265", "none")},
    "e2e-b": {1: Camera(103, "launch-pad", "h264", "none"), 2: Camera(110, "cliff", "h264", "g711a")},
}
RUN_TIMEOUT_S = 3600
STEP_TIMEOUT_S = 3600
SEEDS_TABLE = "seeds_detections"
STAGES = ("search", "download", "transcode", "detect", "persist")
VEHICLES = frozenset({"car", "truck", "bus"})


def video_seconds(channels: dict[str, list[int]]) -> float:
    return float(sum(len(chs) for chs in channels.values()) * SEGMENT_S * SEGMENTS)


# -- footage and the simulator ------------------------------------------------------------------


def ensure_footage() -> dict[tuple[str, int], Path]:
    from stack.simulator.scene_footage import ensure_scene_clip

    clips = {}
    for recorder, channels in RECORDERS.items():
        for channel, cam in channels.items():
            started = time.perf_counter()
            clips[recorder, channel] = ensure_scene_clip(
                cam.script(), 0, CLIP_S, cam.codec, cam.audio, WIDTH, HEIGHT, FPS, loops=LOOPS
            )
            if time.perf_counter() - started > 5:
                print(
                    f"  made {clips[recorder, channel].name} in {time.perf_counter() - started:.0f} s",
                    flush=True,
                )
    return clips


def simulator_spec(ports: list[int], password: str, clips: dict[tuple[str, int], Path]) -> dict:
    return {
        "width": WIDTH,
        "height": HEIGHT,
        "fps": FPS,
        "recorders": [
            {
                "name": recorder,
                "port": port,
                "username": USER,
                "password": password,
                "timezone": "GMT0:00:00",
                "track_element": "trackIDList",  # hikload only ever sends <trackIDList>
                "recording_start": START.replace(tzinfo=None).isoformat(),
                "recording_end": END.replace(tzinfo=None).isoformat(),
                "segment_seconds": SEGMENT_S,
                "channels": [
                    {
                        "id": ch,
                        "scene": cam.scene,
                        "codec": cam.codec,
                        "audio": cam.audio,
                        "clip": str(clips[recorder, ch]),
                    }
                    for ch, cam in channels.items()
                ],
            }
            for (recorder, channels), port in zip(RECORDERS.items(), ports, strict=True)
        ],
    }


# -- CPU and memory of the stack's processes ----------------------------------------------------


def _stat_cpu(pid: int) -> float:
    """utime + stime + cutime + cstime of a process, in seconds (children it reaped included)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def _flow_run_pids(tag: str) -> list[int]:
    from stack.supervisor import _tagged_pids

    found = []
    for pid in _tagged_pids(tag):
        try:
            if b"prefect.engine" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
        except OSError:
            continue
    return found


def _tree(pid: int) -> list[int]:
    """The process and its descendants."""
    found, todo = [], [pid]
    while todo:
        found.append(todo.pop())
        todo += _children(found[-1])
    return found


def _pss_mb(pid: int) -> float:
    """A process's proportional set size in MB (pages shared with others split among them: a child
    between fork and exec does not count its parent's memory twice); 0 once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return 0.0
    return 0.0


class FlowRunMemory(Sampler):
    """Samples, while a pass runs, the high-water mark (VmHWM) of every pipeline flow-run process,
    and the proportional set size of each one with its children (its ffmpeg) added up."""

    every = 0.2

    def __init__(self, tag: str) -> None:
        super().__init__()
        self.tag = tag
        self.peak_mb: dict[int, float] = {}
        self.tree_peak_mb: dict[int, float] = {}

    def sample(self) -> None:
        for pid in _flow_run_pids(self.tag):
            mb = status_mb(pid, "VmHWM")
            if mb is not None:
                self.peak_mb[pid] = max(self.peak_mb.get(pid, 0.0), mb)
            tree = sum(_pss_mb(p) for p in _tree(pid))
            self.tree_peak_mb[pid] = max(self.tree_peak_mb.get(pid, 0.0), tree)


# -- results of a pass --------------------------------------------------------------------------


@dataclass
class Pass:
    side: str
    label: str
    video_s: float
    wall_s: float
    cpu_s: float
    peak_mb: float
    stages: dict[str, dict[str, float]] = field(default_factory=dict)  # stage -> figures
    prefect_share: float | None = None
    checks: list[str] = field(default_factory=list)
    tree_peak_mb: float = 0.0  # a flow run's process with its children (PSS), sampled
    objects: dict[str, int] = field(default_factory=dict)  # by class: objects persisted (seeds: box rows)

    @property
    def realtime(self) -> float:
        return self.video_s / self.wall_s


# -- nvrflow -------------------------------------------------------------------------------------


def _register(
    prefix: str, ports: dict[str, int], password: str, channels: dict[str, list[int]]
) -> dict[str, str]:
    from pydantic import SecretStr

    from blocks.recorder import HikvisionRecorder
    from flows.recorders import upsert_recorder

    names = {}
    for recorder, chs in channels.items():
        name = f"{prefix}-{recorder}"
        block = HikvisionRecorder(
            host="127.0.0.1", port=ports[recorder], username=USER, password=SecretStr(password),
            channels=chs, site=SITE,
        )  # fmt: skip
        upsert_recorder(name, block)
        names[name] = recorder
    return names


def _intervals(task_runs: list[Any]) -> list[tuple[float, float]]:
    spans = []
    for tr in task_runs:
        if tr.start_time is not None and tr.end_time is not None:
            spans.append((tr.start_time.timestamp(), tr.end_time.timestamp()))
    return spans


def _union(spans: list[tuple[float, float]]) -> float:
    total, reach = 0.0, float("-inf")
    for begin, end in sorted(spans):
        if end <= reach:
            continue
        total += end - max(begin, reach)
        reach = end
    return total


def _all_task_runs(client: Any, flow_run_ids: list[Any]) -> list[Any]:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    found: list[Any] = []
    while True:  # the API gives at most 200 a page
        page = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=flow_run_ids)), limit=200, offset=len(found)
        )
        found += page
        if len(page) < 200:
            return found


def final_task_runs(client: Any, flow_run_ids: list[Any], timeout_s: float, every_s: float) -> list[Any]:
    """The runs' task runs once every one is final with an end time (or as they are at the timeout):
    task states reach the API as events, a moment after the flow runs end."""
    task_runs: list[Any] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        task_runs = _all_task_runs(client, flow_run_ids)
        if all(tr.state is not None and tr.state.is_final() and tr.end_time for tr in task_runs):
            break
        time.sleep(every_s)
    return task_runs


def object_class(label: str) -> str:
    return "vehicle" if label in VEHICLES else label


def script_classes(cam: Camera) -> set[str]:
    """The classes of the actors in a camera's script (person, vehicle)."""
    return {object_class(a.label) for a in cam.script().actors}


def script_appearances() -> dict[str, int]:
    """How many times actors of each class cross the frames of the window, by the scripts."""
    counts: dict[str, int] = {}
    for channels in RECORDERS.values():
        for cam in channels.values():
            for actor in cam.script().actors:
                kind = object_class(actor.label)
                counts[kind] = counts.get(kind, 0) + LOOPS * SEGMENTS
    return counts


def check_store(
    label: str, names: dict[str, str], channels: dict[str, list[int]], key_frames: bool
) -> tuple[list[str], dict[str, int]]:
    """After a pass: every segment once in `segments` (rows counted without FINAL), and in `objects`
    each channel's people and vehicles: at 1 frame/s objects of every class its script shows; with
    key frames only, objects at least (a crossing shorter than the key-frame interval may fall
    between two). Returns the checks' lines and the objects persisted by class (person, vehicle,
    other labels as themselves)."""
    from blocks.clickhouse import ClickHouseSink
    from blocks.loading import load_block
    from core.settings import DEFAULT_SINK_BLOCK

    window = {"s": START, "e": END}
    with load_block(ClickHouseSink, DEFAULT_SINK_BLOCK).connect() as ch:
        rows = {
            (recorder, int(channel)): (int(count), int(distinct))
            for recorder, channel, count, distinct in ch.query(
                "SELECT recorder, channel, count(), uniqExact(segment) FROM {db}.segments "
                "WHERE start >= {s:DateTime64(3)} AND start < {e:DateTime64(3)} GROUP BY recorder, channel",
                window,
            )
        }
        boxes = dict(ch.query(
            "SELECT recorder, count() FROM {db}.boxes FINAL "
            "WHERE frame_time >= {s:DateTime64(3)} AND frame_time < {e:DateTime64(3)} GROUP BY recorder",
            window,
        ))  # fmt: skip
        summaries = ch.summary_between(START, END)
    checks: list[str] = []
    problems: list[str] = []
    total: dict[str, int] = {}
    for name, recorder in names.items():
        found = summaries[name].objects if name in summaries else {}
        for ch_id in channels[recorder]:
            got = rows.get((name, ch_id), (0, 0))
            if got != (SEGMENTS, SEGMENTS):
                problems.append(
                    f"{name} ch{ch_id}: {got[0]} segment rows of {got[1]} segments, expected {SEGMENTS} once"
                )
            by_class: dict[str, int] = {}
            for obj_label, n in found.get(ch_id, []):
                by_class[object_class(obj_label)] = by_class.get(object_class(obj_label), 0) + n
            for kind, n in by_class.items():
                total[kind] = total.get(kind, 0) + n
            cam = RECORDERS[recorder][ch_id]
            wanted = script_classes(cam)
            if key_frames:
                missing = {"person or vehicle"} if wanted and not by_class else set()
            else:
                missing = wanted - by_class.keys()
            if missing:
                problems.append(f"{name} ch{ch_id} ({cam.scene}): no {', '.join(sorted(missing))} object")
            shows = ", ".join(sorted(wanted)) or "nobody"
            seen = ", ".join(f"{k} {v}" for k, v in sorted(by_class.items())) or "none"
            checks.append(f"{name} ch{ch_id} ({cam.scene}, shows {shows}): {got[1]} segments, objects {seen}")
        checks.append(f"{name}: {boxes.get(name, 0)} boxes")
    if problems:
        raise RuntimeError(f"nvrflow pass {label}: " + "; ".join(problems))
    return checks, total


def nvrflow_pass(
    state: Any,
    label: str,
    ports: dict[str, int],
    password: str,
    channels: dict[str, list[int]],
    key_frames: bool,
) -> Pass:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from core.settings import DEFAULT_MODEL_BLOCK
    from core.windows import Window
    from flows.launch import start_pipeline_runs, wait_for_runs

    prefix = f"{label}-{secrets.token_hex(2)}"
    names = _register(prefix, ports, password, channels)
    tag = str(state.data_dir)
    services = list(state.pids.values())
    cpu_before = sum(_stat_cpu(p) for p in services)
    with FlowRunMemory(tag) as memory:
        began = time.time()
        # The detector (the stack's default block) and the detect stage, as the demo's recorders run.
        options = {"key_frames": key_frames, "model_block": DEFAULT_MODEL_BLOCK}
        runs = start_pipeline_runs(dict.fromkeys(names, SITE), Window(START, END), options=options)
        states = wait_for_runs(runs, RUN_TIMEOUT_S)
        # The flow-run processes end a moment after their state: wait for the worker to reap them
        # (an exited, unreaped one is still its child), so that their CPU, and their ffmpeg's, is in
        # the worker's account.
        deadline = time.monotonic() + 60
        while _children(state.pids["worker"]) and time.monotonic() < deadline:
            time.sleep(0.2)
    if any(s != "Completed" for s in states.values()):
        raise RuntimeError(f"nvrflow pass {label}: {states}")
    cpu = sum(_stat_cpu(p) for p in services) - cpu_before

    with get_client(sync_client=True) as client:
        flow_runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=list(runs.values())))
        )
        task_runs = final_task_runs(client, list(runs.values()), timeout_s=30, every_s=0.5)
    ended = max(fr.end_time.timestamp() for fr in flow_runs if fr.end_time)
    wall = ended - began
    stages: dict[str, dict[str, float]] = {}
    for stage in STAGES:
        mine = [tr for tr in task_runs if tr.name.split(" ")[0] == stage]
        spans = _intervals(mine)
        if spans:
            stages[stage] = {
                "tasks": float(len(mine)),
                "task_s": sum(e - b for b, e in spans),
                "span_s": max(e for _, e in spans) - min(b for b, _ in spans),
            }
    busy = _union(_intervals(task_runs))
    startup = [fr.start_time.timestamp() - began for fr in flow_runs if fr.start_time]
    stages["flow-run start"] = {"tasks": float(len(startup)), "task_s": sum(startup), "span_s": max(startup)}

    checks, objects = check_store(label, names, channels, key_frames)
    return Pass(
        side="nvrflow", label=label, video_s=video_seconds(channels), wall_s=wall, cpu_s=cpu,
        peak_mb=max(memory.peak_mb.values(), default=0.0), stages=stages,
        prefect_share=1 - busy / wall, checks=checks,
        tree_peak_mb=max(memory.tree_peak_mb.values(), default=0.0), objects=objects,
    )  # fmt: skip


# -- the seeds' way ------------------------------------------------------------------------------


def _step(args: list[str], what: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> Any:
    measured = run_measured(args, STEP_TIMEOUT_S, cwd=cwd, env=env)
    if measured.returncode != 0 or measured.timed_out:
        raise RuntimeError(f"seeds' {what} failed ({measured.returncode}):\n{measured.stderr[-3000:]}")
    return measured


def seeds_pass(state: Any, ports: dict[str, int], password: str, work: Path) -> Pass:
    from bench.export import hikload_argv
    from bench.hikload_env import ensure_hikload
    from video.transcode import TranscodeOptions, handbrake_argv

    hikload = ensure_hikload()
    channels = {rec: list(chs) for rec, chs in RECORDERS.items()}
    service = {
        "download": "simulator",
        "transcode": None,
        "detect": "model-server",
        "persist": "clickhouse-gateway",
    }
    figures: dict[str, dict[str, float]] = {s: {"task_s": 0.0, "cpu_s": 0.0, "peak_mb": 0.0} for s in service}

    def account(stage: str, measured: Any, service_cpu: float) -> None:
        figures[stage]["task_s"] += measured.seconds
        figures[stage]["cpu_s"] += measured.cpu_s + service_cpu
        figures[stage]["peak_mb"] = max(figures[stage]["peak_mb"], measured.max_rss_mb)

    def service_cpu(stage: str) -> float:
        name = service[stage]
        return _stat_cpu(state.pids[name]) if name else 0.0

    began = time.time()
    table_rows = 0
    boxes: dict[str, int] = {}
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    for recorder, chs in channels.items():
        out = work / recorder
        (out / "download").mkdir(parents=True)
        (out / "mp4").mkdir()
        before = service_cpu("download")
        args = hikload_argv(hikload, ports[recorder], USER, password, START, END, chs, out / "download")
        measured = _step(args, f"hikload of {recorder}", cwd=out / "download")
        account("download", measured, service_cpu("download") - before)
        files = sorted(p for p in (out / "download").rglob("*") if p.is_file())
        if len(files) != len(chs) * SEGMENTS:
            raise RuntimeError(f"hikload of {recorder}: {len(files)} files, expected {len(chs) * SEGMENTS}")
        for n, src in enumerate(files):
            measured = _step(
                handbrake_argv(src, out / "mp4" / f"{n:02d}.mp4", TranscodeOptions()),
                f"HandBrakeCLI on {src.name}",
            )
            account("transcode", measured, 0.0)
        before = service_cpu("detect")
        detections = out / "detections.json"
        args = [sys.executable, "-m", "bench.e2e", "--seeds-detect", str(out / "mp4"), "--target", state.model_target,
                "--result", str(detections), "--recorder", recorder]  # fmt: skip
        measured = _step(args, f"detection of {recorder}", env=env)
        account("detect", measured, service_cpu("detect") - before)
        before = service_cpu("persist")
        args = [sys.executable, "-m", "bench.e2e", "--seeds-insert", str(detections), "--url", state.clickhouse_url,
                "--recorder", recorder]  # fmt: skip
        measured = _step(
            args, f"inserts of {recorder}", env=env | {"NVRFLOW_BENCH_CH_PASSWORD": state.clickhouse_password}
        )
        account("persist", measured, service_cpu("persist") - before)
        inserted = json.loads(measured.stdout.strip().splitlines()[-1])
        if inserted["rows_in_table"] != inserted["rows"]:
            raise RuntimeError(f"seeds' inserts of {recorder}: {inserted}")
        table_rows += inserted["rows"]
        for kind, n in inserted["boxes"].items():
            boxes[kind] = boxes.get(kind, 0) + n
    wall = time.time() - began
    return Pass(
        side="seeds", label="full", video_s=video_seconds(channels), wall_s=wall,
        cpu_s=sum(f["cpu_s"] for f in figures.values()), peak_mb=max(f["peak_mb"] for f in figures.values()),
        stages={k: {"task_s": v["task_s"], "span_s": v["task_s"], "cpu_s": v["cpu_s"], "peak_mb": v["peak_mb"]}
                for k, v in figures.items()},
        checks=[f"{table_rows} box rows in {SEEDS_TABLE}, one INSERT each: "
                + (", ".join(f"{k} {v}" for k, v in sorted(boxes.items())) or "none")],
        objects=boxes,
    )  # fmt: skip


def seeds_detect(folder: Path, target: str, result: Path, recorder: str) -> None:
    """One picture at a time, as `bench.detect.seeds_pictures` does, for every MP4 of the folder: a
    row per box, in frame pixels."""
    from bench.detect import detector_block, seeds_pictures
    from stack import detector_build

    model = detector_block(target, detector_build.ensure_model(), batch_size=1)
    rows = []
    with model.connect() as client:
        for mp4 in sorted(folder.glob("*.mp4")):
            pictures = folder / f"{mp4.stem}-jpg"
            pictures.mkdir()
            for n, found in enumerate(seeds_pictures(mp4, client, model.input_size, pictures)):
                for label, score, (x0, y0, x1, y1) in found:
                    rows.append(
                        [
                            recorder,
                            mp4.stem,
                            n,
                            label,
                            score,
                            x0 * WIDTH,
                            y0 * HEIGHT,
                            x1 * WIDTH,
                            y1 * HEIGHT,
                        ]
                    )
    result.write_text(json.dumps(rows))


def seeds_insert(detections: Path, url: str, recorder: str) -> None:
    """One INSERT per row, as the seeds' scripts wrote them."""
    import clickhouse_connect

    host, port = url.removeprefix("http://").rsplit(":", 1)
    client = clickhouse_connect.get_client(
        host=host, port=int(port), username="default", password=os.environ["NVRFLOW_BENCH_CH_PASSWORD"],
        connect_timeout=10, send_receive_timeout=60,
    )  # fmt: skip
    client.command(
        f"CREATE TABLE IF NOT EXISTS default.{SEEDS_TABLE} (recorder String, video String, frame UInt32, "
        "label String, score Float32, x0 Float32, y0 Float32, x1 Float32, y1 Float32) "
        "ENGINE = MergeTree ORDER BY (recorder, video, frame)"
    )
    rows = json.loads(detections.read_text())
    columns = ["recorder", "video", "frame", "label", "score", "x0", "y0", "x1", "y1"]
    for one in rows:
        client.insert(f"default.{SEEDS_TABLE}", [one], column_names=columns)
    count = client.command(f"SELECT count() FROM default.{SEEDS_TABLE} WHERE recorder = {{r:String}}",
                           parameters={"r": recorder})  # fmt: skip
    labels: dict[str, int] = {}
    for one in rows:
        labels[object_class(one[3])] = labels.get(object_class(one[3]), 0) + 1
    print(json.dumps({"rows": len(rows), "rows_in_table": count, "boxes": labels}))


# -- the run -------------------------------------------------------------------------------------


def _rows(full: list[Pass], seeds: Pass, h264: list[Pass], key: list[Pass]) -> list[dict]:
    """nvrflow against the seeds' way, then against the targets."""
    med = statistics.median
    seeds_name = "the seeds' way: hikload, HandBrakeCLI per file, JPEG + one Predict per whole frame, one INSERT per box"
    video_min = seeds.video_s / 60
    rows = [
        row(f"end to end, {video_min:.0f} min of 1280x720 scripted scenes (2 recorders x 2 channels x 2 x 10 min), "
            f"detector at 1 frame/s: wall time (median of {len(full)}; seeds once)", "s",
            med(p.wall_s for p in full), seeds.wall_s, seeds_name),
        row("end to end, 1 frame/s: realtime factor", "x realtime", med(p.realtime for p in full), seeds.realtime,
            seeds_name),
        row("end to end, 1 frame/s: CPU seconds", "s", med(p.cpu_s for p in full), seeds.cpu_s, seeds_name),
        row("end to end, 1 frame/s: peak memory of one pipeline flow run (seeds: of one step's process)", "MB",
            med(p.peak_mb for p in full), seeds.peak_mb, seeds_name),
    ]  # fmt: skip
    for stage in ("download", "transcode", "detect", "persist"):
        span = med(p.stages.get(stage, {}).get("span_s", 0.0) for p in full)
        step = seeds.stages[stage]["task_s"]
        rows.append(row(f"stage {stage}: wall time (nvrflow: its first task's start to its last task's end, "
                        "the stages overlapping; seeds: the step)", "s", span, step, seeds_name))  # fmt: skip
        rows.append(row(f"stage {stage}: realtime factor (over that wall time)", "x realtime",
                        seeds.video_s / span if span else 0.0, seeds.video_s / step if step else 0.0,
                        seeds_name))  # fmt: skip
        rows.append(row(f"stage {stage}: time in tasks, summed over the segments' tasks (seeds: the step)", "s",
                        med(p.stages.get(stage, {}).get("task_s", 0.0) for p in full), step, seeds_name))  # fmt: skip
    return rows + _target_rows(full, h264, key)


def _target_rows(full: list[Pass], h264: list[Pass], key: list[Pass]) -> list[dict]:
    """nvrflow against the targets and the scripts: all a run without the seeds' pass measures."""
    med = statistics.median
    every = [*full, *h264, *key]
    rows = [
        row(f"peak memory per pipeline flow run: the flow-run process's high-water mark (VmHWM), highest of "
            f"all {len(every)} passes' runs", "MB", max(p.peak_mb for p in every), 300.0,
            "target: at most 300 MB per pipeline flow run"),
        row("peak memory per pipeline flow run with its child processes (ffmpeg): proportional set size, "
            "sampled every 0.2 s, highest of all passes' runs", "MB", max(p.tree_peak_mb for p in every), 300.0,
            "target: at most 300 MB per pipeline flow run"),
    ]  # fmt: skip
    appearances = script_appearances()
    for kind in ("person", "vehicle"):
        rows.append(row(f"{kind} objects persisted, 1 frame/s, all channels (median of {len(full)})", "objects",
                        med(p.objects.get(kind, 0) for p in full), appearances.get(kind, 0),
                        "the scripts' appearances (an actor crossing once)"))  # fmt: skip
    share = med(p.prefect_share or 0.0 for p in full)
    rows.append(row("Prefect's share of the wall time (no task running), 1 frame/s, all channels", "%",
                    100 * share, 10.0, "target: at most 10 %"))  # fmt: skip
    h264_min = h264[0].video_s / 60
    rows.append(row(f"H.264 channels only ({h264_min:.0f} min), 1 frame/s: realtime factor (median of {len(h264)})",
                    "x realtime", med(p.realtime for p in h264), 20.0, "target: 20x"))  # fmt: skip
    rows.append(row(f"H.264 channels only ({h264_min:.0f} min), key frames only: realtime factor (median of {len(key)})",
                    "x realtime", med(p.realtime for p in key), med(p.realtime for p in h264),
                    "the same channels at 1 frame/s"))  # fmt: skip
    rows.append(row("H.264 channels, key frames only: Prefect's share of the wall time", "%",
                    100 * med(p.prefect_share or 0.0 for p in key), 10.0, "target: at most 10 %"))  # fmt: skip
    return rows


def _print_pass(p: Pass) -> None:
    share = f", Prefect {100 * p.prefect_share:.1f} %" if p.prefect_share is not None else ""
    tree = f" ({p.tree_peak_mb:.0f} MB with its children)" if p.tree_peak_mb else ""
    print(f"  {p.side} {p.label}: {p.wall_s:.1f} s, {p.realtime:.1f}x realtime, CPU {p.cpu_s:.0f} s, "
          f"peak {p.peak_mb:.0f} MB{tree}{share}", flush=True)  # fmt: skip
    for stage, f in p.stages.items():
        print(f"      {stage:15} " + ", ".join(f"{k} {v:.1f}" for k, v in f.items()), flush=True)
    for check in p.checks:
        print(f"      check: {check}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.e2e", description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2, help="nvrflow passes of each kind")
    parser.add_argument(
        "--no-seeds",
        action="store_true",
        help="skip the seeds' pass: the targets' rows alone, to bench/results/e2e-targets.json "
        "(e2e.json, the last comparison with the seeds, is kept)",
    )
    parser.add_argument("--seeds-detect", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--seeds-insert", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--target", "--url", dest="target", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--recorder", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.seeds_detect:
        seeds_detect(args.seeds_detect, args.target, args.result, args.recorder)
        return 0
    if args.seeds_insert:
        seeds_insert(args.seeds_insert, args.target, args.recorder)
        return 0

    from stack import prefect_database, supervisor
    from stack.state import load_state

    clips = ensure_footage()
    root = Path(tempfile.mkdtemp(prefix="nvrflow-bench-e2e-"))
    os.environ["NVRFLOW_SCHEDULES"] = "off"  # only the bench's runs
    password = secrets.token_urlsafe(12)
    try:
        state = supervisor.start(root, say=lambda msg: print(f"  {msg}", flush=True))
        os.environ.update(state.env())
        # The last ports: the simulator counts as started once the stack's last recorder port listens.
        bench_ports = state.recorder_ports[-len(RECORDERS) :]
        spec = simulator_spec(bench_ports, password, clips)
        (root / "stack" / "simulator.json").write_text(json.dumps(spec, indent=2))
        supervisor.stop_service("simulator", root)
        supervisor.start_service("simulator", root)
        restarted = load_state(root)
        assert restarted is not None  # the stack was just started there
        state = restarted
        ports = dict(zip(RECORDERS, bench_ports, strict=True))
        everything = {rec: list(chs) for rec, chs in RECORDERS.items()}
        h264_only = {
            rec: [c for c, cam in chs.items() if cam.codec == "h264"] for rec, chs in RECORDERS.items()
        }
        print(f"e2e benchmark: {video_seconds(everything) / 60:.0f} min of video on {len(RECORDERS)} recorders, "
              f"{args.repeats} nvrflow passes of each kind", flush=True)  # fmt: skip
        full: list[Pass] = []
        h264: list[Pass] = []
        key: list[Pass] = []
        seeds: Pass | None = None
        for rep in range(args.repeats):
            full.append(nvrflow_pass(state, f"full{rep}", ports, password, everything, key_frames=False))
            _print_pass(full[-1])
            if rep == 0 and not args.no_seeds:
                with tempfile.TemporaryDirectory(prefix="seeds-", dir=root) as work:
                    seeds = seeds_pass(state, ports, password, Path(work))
                _print_pass(seeds)
            h264.append(nvrflow_pass(state, f"h264-{rep}", ports, password, h264_only, key_frames=False))
            _print_pass(h264[-1])
            key.append(nvrflow_pass(state, f"key-{rep}", ports, password, h264_only, key_frames=True))
            _print_pass(key[-1])
    finally:
        supervisor.stop(root, say=lambda _m: None)
        prefect_database.drop(root)
        shutil.rmtree(root, ignore_errors=True)
    if seeds is None:  # the targets alone, apart: the last comparison with the seeds stays as it was
        rows = _target_rows(full, h264, key)
        path = write_results("e2e-targets", rows)
    else:
        rows = _rows(full, seeds, h264, key)
        path = write_results("e2e", rows)
        passes = {"full": full, "seeds": [seeds], "h264": h264, "key": key}
        (path.parent / "e2e.passes.json").write_text(
            json.dumps({k: [asdict(p) for p in v] for k, v in passes.items()}, indent=2) + "\n"
        )
    print_table(rows)
    print(f"results: {path}")
    from bench.results_page import write_page

    print(f"all benches: {write_page()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
