"""Export benchmark: nvrflow's ISAPIClient.download against hikload 1.1.4 on one simulated recorder.

`python -m bench.export` (or `make bench-export`) measures, in one run:
  (a) one large segment (1 GiB by default),
  (b) 100 small segments (4 channels x 25 segments of a 20 s 640x360 H.264 clip),
each side in its own child process, searching and downloading the same segments one after
another. Throughput is bytes over the time the child spent from its first ISAPI request to
its last byte on disk; peak RSS is the child's own, from wait4. Results go to
`bench/results/export.json` (rows as described in `bench.common`) and are printed as a table.

The large segment is not encoded by ffmpeg: a cached 20 s clip's MPEG-PS payload is
repeated behind the clip's single 40-byte IMKH header until the file reaches the wanted
size. Every pack is a valid PS pack, but timestamps restart at each repetition: right for
measuring transport and storage, not meant for playback. It is cached under
`cache_dir()/bench/` and served through the simulator's per-channel `clip` option.

Each side's files are checked (count, sizes, sha256 of the large one) and deleted after
measuring. `--side nvrflow` runs the nvrflow child (used by the orchestrator itself).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import shutil
import statistics
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.common import Measured, print_table, row, run_measured, write_results
from bench.hikload_env import ensure_hikload
from bench.results_page import write_page
from stack.paths import PROJECT_ROOT, cache_dir

IMKH_HEADER_BYTES = 40
USER = "admin"
PASSWORD_ENV = "NVRFLOW_BENCH_PASSWORD"
SEGMENT_SECONDS = 20
SMALL_CHANNELS = (2, 3, 4, 5)
BIG_CHANNEL = 1
RECORDING_START = datetime(2026, 11, 1, 0, 0, 0)  # device local time; the recorder runs on UTC
SIDE_TIMEOUT_S = 300
MB = 1_000_000
MIB = 1024 * 1024
HASH_CHUNK = 4 * MIB
BASELINE = "hikload 1.1.4"

# Runs hikload's own console entry point unchanged, timing it from inside its process so that
# both sides are timed the same way (interpreter start-up excluded).
HIKLOAD_TIMED = """\
import json, sys, time
from hikload.__main__ import main
sys.argv[0] = "hikload"
started = time.perf_counter()
main()
print(json.dumps({"seconds": time.perf_counter() - started}))
"""


# -- the large clip -----------------------------------------------------------------------------


def build_repeated_clip(source: Path, target_bytes: int, out: Path) -> Path:
    """Write `source`'s IMKH header once, then its PS payload repeated until `target_bytes` or more."""
    data = source.read_bytes()
    if data[:4] != b"IMKH" or len(data) <= IMKH_HEADER_BYTES:
        raise ValueError(f"{source} is not a Hikvision-form clip (IMKH header then PS)")
    header, payload = data[:IMKH_HEADER_BYTES], data[IMKH_HEADER_BYTES:]
    copies = max(1, -(-(target_bytes - IMKH_HEADER_BYTES) // len(payload)))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}")
    try:
        with tmp.open("wb") as sink:
            sink.write(header)
            for _ in range(copies):
                sink.write(payload)
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while block := source.read(HASH_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def ensure_big_clip(target_bytes: int) -> tuple[Path, str]:
    """The cached large clip and its sha256 (kept beside it, so it is hashed once)."""
    from stack.simulator.footage import ensure_clip

    source = ensure_clip("coffee", "h264", "none", SEGMENT_SECONDS, 640, 360, 10)
    out = cache_dir() / "bench" / f"repeat-{source.stem}-{target_bytes}.hik"
    sidecar = out.with_name(out.name + ".sha256")
    if not (out.exists() and sidecar.exists()):
        build_repeated_clip(source, target_bytes, out)
        sidecar.write_text(sha256_of(out) + "\n")
    return out, sidecar.read_text().strip()


# -- the simulator ------------------------------------------------------------------------------


def bench_spec(port: int, password: str, big_clip: Path, small_segments_per_channel: int) -> dict:
    """One recorder: channel 1 serves the large clip, channels 2-5 ordinary footage."""
    end = RECORDING_START + timedelta(seconds=SEGMENT_SECONDS * small_segments_per_channel)
    channels = [{"id": BIG_CHANNEL, "scene": "coffee", "codec": "h264", "clip": str(big_clip)}]
    channels += [{"id": c, "scene": "coffee", "codec": "h264", "audio": "none"} for c in SMALL_CHANNELS]
    return {
        "width": 640,
        "height": 360,
        "fps": 10,
        "recorders": [
            {
                "name": "bench-nvr",
                "port": port,
                "username": USER,
                "password": password,
                "timezone": "GMT0:00:00",
                "track_element": "trackIDList",  # hikload only ever sends <trackIDList>
                "recording_start": RECORDING_START.isoformat(),
                "recording_end": end.isoformat(),
                "segment_seconds": SEGMENT_SECONDS,
                "channels": channels,
            }
        ],
    }


# -- the two sides ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    label: str
    channels: tuple[int, ...]
    start: datetime  # device local == UTC here
    end: datetime
    segments: int
    expected_bytes: int


@dataclass(frozen=True)
class SideResult:
    seconds: float  # measured inside the child
    max_rss_mb: float
    files: int
    bytes: int

    @property
    def mb_per_s(self) -> float:
        return self.bytes / MB / self.seconds


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def _timing(measured: Measured, side: str) -> dict:
    if measured.timed_out or measured.returncode != 0:
        state = "timed out" if measured.timed_out else f"exited {measured.returncode}"
        raise RuntimeError(f"{side} {state}:\n{measured.stderr[-3000:]}")
    lines = [line for line in measured.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"{side} printed no timing:\n{measured.stdout[-2000:]}{measured.stderr[-2000:]}")
    return json.loads(lines[-1])


def _check(side: str, case: Case, folder: Path, big_sha: str | None) -> tuple[int, int]:
    files = _files(folder)
    total = sum(p.stat().st_size for p in files)
    if len(files) != case.segments or total != case.expected_bytes:
        raise RuntimeError(
            f"{side} on {case.label}: {len(files)} files / {total} bytes, "
            f"expected {case.segments} / {case.expected_bytes}"
        )
    if big_sha is not None and any(sha256_of(p) != big_sha for p in files):
        raise RuntimeError(f"{side} on {case.label}: content differs from the served clip")
    return len(files), total


def run_nvrflow(case: Case, port: int, password: str, out: Path) -> SideResult:
    args = [sys.executable, "-m", "bench.export", "--side", "nvrflow", "--port", str(port)]
    args += ["--channels", ",".join(map(str, case.channels))]
    args += ["--start", case.start.isoformat(), "--end", case.end.isoformat(), "--out", str(out)]
    env = {**os.environ, PASSWORD_ENV: password, "PYTHONPATH": str(PROJECT_ROOT)}
    measured = run_measured(args, SIDE_TIMEOUT_S, cwd=PROJECT_ROOT, env=env)
    timing = _timing(measured, "nvrflow")
    return SideResult(timing["seconds"], measured.max_rss_mb, timing["files"], timing["bytes"])


def hikload_argv(
    hikload_python: Path,
    port: int,
    user: str,
    password: str,
    start: datetime,
    end: datetime,
    channels: Sequence[int],
    out: Path,
) -> list[str]:
    """hikload downloading the main streams of `channels` in [start, end) as they are, timed."""
    # hikload reads times as device-local wall clock; it appends the Z itself.
    args = [str(hikload_python), "-c", HIKLOAD_TIMED, "--server", f"127.0.0.1:{port}"]
    args += ["--username", user, "--password", password]
    args += [
        "--starttime",
        start.replace(tzinfo=None).isoformat(),
        "--endtime",
        end.replace(tzinfo=None).isoformat(),
    ]
    args += ["--cameras", ",".join(str(c * 100 + 1) for c in channels)]
    args += ["--downloads", str(out), "--videoformat", "mp4", "--no-ffmpeg", "--no-forcetranscoding"]
    return args


def run_hikload(case: Case, hikload_python: Path, port: int, password: str, out: Path) -> SideResult:
    args = hikload_argv(hikload_python, port, USER, password, case.start, case.end, case.channels, out)
    measured = run_measured(args, SIDE_TIMEOUT_S, cwd=out)
    timing = _timing(measured, "hikload")
    files = _files(out)
    return SideResult(
        timing["seconds"], measured.max_rss_mb, len(files), sum(p.stat().st_size for p in files)
    )


def nvrflow_side(port: int, channels: list[int], start: datetime, end: datetime, out: Path) -> dict:
    """The nvrflow child: search then download every segment, as the export task does."""
    import time

    from blocks.isapi.client import ISAPIClient

    started = time.perf_counter()
    files = total = 0
    with ISAPIClient(
        name="bench-nvr",
        base_url=f"http://127.0.0.1:{port}",
        username=USER,
        password=os.environ[PASSWORD_ENV],
        read_timeout=60,
    ) as client:
        for channel in channels:
            for recording in client.search(channel, start, end):
                result = client.download(recording, out)
                files += 1
                total += result.bytes
    return {"seconds": time.perf_counter() - started, "files": files, "bytes": total}


# -- orchestration ------------------------------------------------------------------------------


def _median(values: list[float]) -> float:
    return statistics.median(values)


def _one_run(
    side: str, case: Case, hikload_python: Path, port: int, password: str, work: Path, big_sha: str
) -> SideResult:
    out = work / side
    out.mkdir()
    try:
        if side == "nvrflow":
            result = run_nvrflow(case, port, password, out)
        else:
            result = run_hikload(case, hikload_python, port, password, out)
        _check(side, case, out, big_sha if case.segments == 1 else None)
        return result
    finally:
        shutil.rmtree(out, ignore_errors=True)
        # Flush what this run left dirty now, not during the next side's measurement.
        os.sync()


def measure(big_bytes: int, small_per_channel: int, repeat: int) -> list[dict]:
    from stack.ports import free_port
    from stack.simulator import control

    hikload_python = ensure_hikload()
    print("preparing the large clip ...", flush=True)
    big_clip, big_sha = ensure_big_clip(big_bytes)
    work = Path(tempfile.mkdtemp(prefix="export-", dir=cache_dir() / "bench"))
    password = secrets.token_urlsafe(12)
    port = free_port()
    try:
        with control.running(bench_spec(port, password, big_clip, small_per_channel), work):
            segments = control.segments(port)
            small = [s for s in segments if s["track_id"] != BIG_CHANNEL * 100 + 1]
            big_size = next(s["size"] for s in segments if s["track_id"] == BIG_CHANNEL * 100 + 1)
            cases = [
                Case(
                    f"1 segment of {big_size / MB:.0f} MB",
                    (BIG_CHANNEL,),
                    RECORDING_START,
                    RECORDING_START + timedelta(seconds=SEGMENT_SECONDS),
                    1,
                    big_size,
                ),
                Case(
                    f"{len(small)} segments of {small[0]['size'] / MB:.2f} MB",
                    SMALL_CHANNELS,
                    RECORDING_START,
                    RECORDING_START + timedelta(seconds=SEGMENT_SECONDS * small_per_channel),
                    len(small),
                    sum(s["size"] for s in small),
                ),
            ]
            # Both sides read the clip from the page cache, not the first one from disk.
            sha256_of(big_clip)
            rows: list[dict] = []
            for case in cases:
                runs: dict[str, list[SideResult]] = {"hikload": [], "nvrflow": []}
                for attempt in range(repeat):
                    # Alternate who goes first, so neither side always meets a warmer machine.
                    order = ("hikload", "nvrflow") if attempt % 2 == 0 else ("nvrflow", "hikload")
                    for side in order:
                        result = _one_run(side, case, hikload_python, port, password, work, big_sha)
                        print(
                            f"  {case.label}: {side:8s} {result.mb_per_s:8.1f} MB/s "
                            f"{result.max_rss_mb:8.1f} MiB peak RSS ({result.seconds:.2f} s)",
                            flush=True,
                        )
                        runs[side].append(result)
                ours, theirs = runs["nvrflow"], runs["hikload"]
                rows.append(
                    row(f"{case.label}: throughput (higher is better)", "MB/s",
                        _median([r.mb_per_s for r in ours]), _median([r.mb_per_s for r in theirs]),
                        BASELINE)
                )  # fmt: skip
                rows.append(
                    row(f"{case.label}: peak RSS (lower is better)", "MiB",
                        _median([r.max_rss_mb for r in ours]), _median([r.max_rss_mb for r in theirs]),
                        BASELINE)
                )  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rows


def _targets(rows: list[dict]) -> list[str]:
    """The goals on the large segment: >= 1.5x hikload's throughput, <= 10 % of its peak RSS."""
    throughput, rss = rows[0], rows[1]
    return [
        f"large segment throughput {throughput['ratio']}x hikload (target >= 1.5): "
        + ("met" if (throughput["ratio"] or 0) >= 1.5 else "MISSED"),
        f"large segment peak RSS {rss['ratio']}x hikload (target <= 0.10): "
        + ("met" if rss["ratio"] is not None and rss["ratio"] <= 0.10 else "MISSED"),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.export", description=__doc__.split("\n")[0])
    parser.add_argument("--big-mib", type=int, default=1024, help="size of the large segment (MiB)")
    parser.add_argument("--small-per-channel", type=int, default=25, help="small segments per channel (x4)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per side and case; medians are kept")
    parser.add_argument("--side", choices=["nvrflow"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--channels", help=argparse.SUPPRESS)
    parser.add_argument("--start", help=argparse.SUPPRESS)
    parser.add_argument("--end", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.side == "nvrflow":
        report = nvrflow_side(
            args.port,
            [int(c) for c in args.channels.split(",")],
            datetime.fromisoformat(args.start).replace(tzinfo=UTC),
            datetime.fromisoformat(args.end).replace(tzinfo=UTC),
            Path(args.out),
        )
        print(json.dumps(report), flush=True)
        return 0
    if args.big_mib <= 0 or args.repeat <= 0 or not 1 <= args.small_per_channel <= 40:
        parser.error("--big-mib and --repeat must be positive, --small-per-channel between 1 and 40")
    rows = measure(args.big_mib * MIB, args.small_per_channel, args.repeat)
    path = write_results("export", rows)
    write_page()
    print()
    print_table(rows)
    for line in _targets(rows):
        print(line)
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
