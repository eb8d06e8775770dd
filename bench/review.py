"""Review app under viewers: 20 at once, each searching and streaming clips, next to one alone.

`python -m bench.review` (or `make bench-review`) runs on this machine, all on loopback:
- a ClickHouse gateway of its own (the stack's engine, chdb), migrated, with `--objects` tracked
  objects (10,000 by default: a day of 8 recorders x 4 channels at about 40 objects an hour each)
  inserted through the sink block's writer;
- a video store on disk with real H.264 clips (640x360, faststart) and JPEG thumbnails;
- the app in a process of its own (uvicorn, as `python -m review` runs it).

Each viewer loops for `--seconds`: a search (one of: a label; a recorder, channel and label; an
hour of a channel with a minimum score), the result's thumbnail, the object's page, then its
clip as a browser plays it: byte ranges of 512 KiB from the start, `--watch` seconds of it (the
whole clip with 0), read at most `--pace` times as fast as the clip plays (a player buffering
ahead; 4 by default). The same loop
runs with one viewer, then with `--viewers` at once (arriving over the length of one loop, as
viewers do, not in the same millisecond); then once more with `--viewers` reading clips
as fast as they come (a stress: every viewer downloading, not watching). Reported: search latency
(p50, p95), clip bytes served a second, requests and errors. Target: p95 search latency under
300 ms with 20 viewers watching.

Rows go to `bench/results/review.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import random
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.common import print_table, row, write_results

RECORDERS, CHANNELS = 8, 4
LABELS = ("person", "person", "person", "car", "car", "truck", "bicycle")
DAY = datetime(2026, 11, 1, tzinfo=UTC)
CLIPS = 12
CLIP_S = 60
THUMBNAILS = 200
RANGE = 512 * 1024
PASSWORD_ENV = "NVRFLOW_BENCH_GATEWAY_PASSWORD"


def objects(count: int) -> list:
    """`count` tracked objects over a day of the fleet, spread over recorders, channels and labels."""
    from blocks.clickhouse_schema import ObjectRow

    rng = random.Random(7)
    found = []
    for i in range(count):
        recorder, channel = f"nvr-{i % RECORDERS + 1:02d}", (i // RECORDERS) % CHANNELS + 1
        start = DAY + timedelta(seconds=rng.uniform(0, 86_000))
        length = rng.uniform(3, 60)
        found.append(ObjectRow(
            recorder=recorder, site="bench", channel=channel, segment=f"{start:%Y%m%dT%H}00", object_id=str(i),
            label=rng.choice(LABELS), start=start, end=start + timedelta(seconds=length),
            best_score=rng.uniform(0.3, 0.99), best_time=start + timedelta(seconds=length / 2),
            x0=100.0, y0=80.0, x1=220.0, y1=330.0, frame_width=640, frame_height=360, frames=int(length),
            clip=f"clips/{i % CLIPS}.mp4", clip_offset_s=rng.uniform(0, CLIP_S - 10),
            thumbnail=f"thumbs/{i % THUMBNAILS}.jpg", model="nanodet-g", model_version=1,
            inserted_at=datetime.now(UTC), version_key="bench",
        ))  # fmt: skip
    return found


def make_store(folder: Path) -> None:
    """Real clips and thumbnails: CLIPS H.264 MP4s of CLIP_S seconds, THUMBNAILS JPEGs."""
    import numpy as np

    from video.tracking import thumbnail

    (folder / "clips").mkdir(parents=True)
    (folder / "thumbs").mkdir()
    first = folder / "clips" / "0.mp4"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi",
         "-i", f"testsrc2=size=640x360:rate=25:duration={CLIP_S}", "-c:v", "libx264", "-preset", "veryfast",
         "-b:v", "1500k", "-pix_fmt", "yuv420p", "-movflags", "+faststart", str(first)],
        check=True, timeout=600,
    )  # fmt: skip
    for i in range(1, CLIPS):
        os.link(first, folder / "clips" / f"{i}.mp4")
    rng = np.random.default_rng(3)
    for i in range(THUMBNAILS):
        picture = rng.integers(0, 255, (180, 320, 3), dtype=np.uint8)
        (folder / "thumbs" / f"{i}.jpg").write_bytes(thumbnail(picture, (50.0, 40.0, 110.0, 165.0)))


def serve(port: int, sink_url: str, sink_password: str, store_dir: str, password: str) -> None:
    """The app as `python -m review` runs it, on blocks made here (no Prefect API needed)."""
    import uvicorn
    from prefect.filesystems import LocalFileSystem
    from pydantic import SecretStr

    from blocks.clickhouse import ClickHouseSink
    from blocks.video_store import VideoStore
    from review.app import ReviewSettings, create_app

    settings = ReviewSettings(
        sink=ClickHouseSink(url=sink_url, password=SecretStr(sink_password), database="bench"),
        store=VideoStore.of(LocalFileSystem(basepath=store_dir)),
        password=SecretStr(password),
    )
    uvicorn.run(create_app(settings), host="127.0.0.1", port=port, log_level="warning", access_log=False)


@dataclass
class Tally:
    search_ms: list[float] = field(default_factory=list)
    clip_bytes: int = 0
    requests: int = 0
    errors: int = 0


def _search_params(rng: random.Random) -> dict[str, str]:
    kind = rng.randrange(3)
    label = rng.choice(LABELS)
    if kind == 0:
        return {"label": label}
    recorder, channel = f"nvr-{rng.randrange(RECORDERS) + 1:02d}", str(rng.randrange(CHANNELS) + 1)
    if kind == 1:
        return {"recorder": recorder, "channel": channel, "label": label}
    hour = DAY + timedelta(hours=rng.randrange(24))
    return {"recorder": recorder, "channel": channel, "start": hour.isoformat(),
            "end": (hour + timedelta(hours=1)).isoformat(), "min_score": "0.5"}  # fmt: skip


@dataclass(frozen=True)
class Viewing:
    seconds: float  # the pass's length
    pace: float  # clip reading speed, x real time; 0: as fast as it comes
    watch_s: float  # seconds of each clip watched; 0: all of it


async def viewer(url: str, password: str, how: Viewing, seed: int, tally: Tally) -> None:
    import httpx

    rng = random.Random(seed)
    deadline = time.monotonic() + how.seconds
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        login = await client.post("/login", data={"password": password, "next": "/"})
        if login.status_code != 303:
            tally.errors += 1
            return
        if how.pace > 0 and how.watch_s > 0:  # viewers arrive over one loop, not all in the same instant
            await asyncio.sleep(rng.uniform(0, how.watch_s / how.pace))
        while time.monotonic() < deadline:
            try:
                began = time.perf_counter()
                found = await client.get("/api/objects", params=_search_params(rng) | {"per_page": "24"})
                tally.search_ms.append((time.perf_counter() - began) * 1000)
                tally.requests += 1
                if found.status_code != 200:
                    tally.errors += 1
                    continue
                listed = found.json()["objects"]
                if not listed:
                    continue
                chosen = rng.choice(listed)
                for path in (chosen["thumbnail_url"], chosen["page_url"]):
                    response = await client.get(path)
                    tally.requests += 1
                    tally.errors += response.status_code != 200
                offset, began = 0, time.monotonic()
                while time.monotonic() < deadline:
                    part = await client.get(
                        chosen["clip_url"], headers={"range": f"bytes={offset}-{offset + RANGE - 1}"}
                    )
                    tally.requests += 1
                    if part.status_code != 206:
                        tally.errors += 1
                        break
                    tally.clip_bytes += len(part.content)
                    size = int(part.headers["content-range"].rsplit("/", 1)[1])
                    offset += len(part.content)
                    if offset >= size or (how.watch_s and offset >= size * how.watch_s / CLIP_S):
                        break
                    if how.pace > 0:  # no further ahead than a player buffering at `pace` x real time
                        due = began + offset / (size / CLIP_S * how.pace)
                        await asyncio.sleep(max(0.0, min(due, deadline) - time.monotonic()))
            except httpx.HTTPError:
                tally.errors += 1


def run_viewers(url: str, password: str, count: int, how: Viewing) -> tuple[Tally, float]:
    tally = Tally()

    async def all_of_them() -> None:
        await asyncio.gather(*(viewer(url, password, how, seed, tally) for seed in range(count)))

    began = time.perf_counter()
    asyncio.run(all_of_them())
    return tally, time.perf_counter() - began


def _p(values: list[float], q: int) -> float:
    if len(values) < 2:
        return values[0] if values else 0.0
    return statistics.quantiles(values, n=100)[q - 1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=10_000)
    parser.add_argument("--viewers", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=30.0, help="each pass's length")
    parser.add_argument("--pace", type=float, default=4.0, help="clip reading speed, x real time")
    parser.add_argument("--watch", type=float, default=15.0, help="seconds of each clip watched (0: all)")
    args = parser.parse_args(argv)

    from pydantic import SecretStr

    from blocks.clickhouse import ClickHouseSink
    from stack.paths import PROJECT_ROOT
    from stack.ports import free_port, wait_for_port

    password, gateway_password = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    with tempfile.TemporaryDirectory(prefix="nvrflow-bench-review-") as scratch:
        root = Path(scratch)
        gateway_port, app_port = free_port(), free_port()
        env = {**os.environ, PASSWORD_ENV: gateway_password, "PYTHONPATH": str(PROJECT_ROOT)}
        with (root / "gateway.log").open("wb") as log:
            gateway = subprocess.Popen(  # noqa: S603 - fixed argument list
                [sys.executable, "-m", "stack.clickhouse_gateway", "--port", str(gateway_port),
                 "--data-dir", str(root / "clickhouse"), "--password-env", PASSWORD_ENV],
                env=env, stdout=log, stderr=log,
            )  # fmt: skip
        app = None
        try:
            wait_for_port(gateway_port, timeout=60, alive=lambda: gateway.poll() is None)
            sink_url = f"http://127.0.0.1:{gateway_port}"
            sink = ClickHouseSink(url=sink_url, password=SecretStr(gateway_password), database="bench")
            rows = objects(args.objects)
            with sink.connect() as writer:
                writer.migrate()
                for i in range(0, len(rows), 2000):
                    writer.insert("objects", rows[i : i + 2000], token=f"bench-{i}")
            make_store(root / "store")
            print(f"{len(rows)} objects, {CLIPS} clips of {CLIP_S} s, app on port {app_port}", flush=True)
            app = multiprocessing.get_context("spawn").Process(
                target=serve, args=(app_port, sink_url, gateway_password, str(root / "store"), password)
            )
            app.start()
            wait_for_port(app_port, timeout=60, alive=app.is_alive)
            url = f"http://127.0.0.1:{app_port}"
            watching = Viewing(args.seconds, args.pace, args.watch)
            run_viewers(url, password, 2, Viewing(3, 0, args.watch))  # warm up: connections, caches
            one, one_s = run_viewers(url, password, 1, watching)
            many, many_s = run_viewers(url, password, args.viewers, watching)
            stress, stress_s = run_viewers(url, password, args.viewers, Viewing(args.seconds, 0, 0))
        finally:
            if app is not None and app.is_alive():
                app.terminate()
                app.join(timeout=30)
            gateway.terminate()
            gateway.wait(timeout=60)

    name = f"1 viewer ({args.objects} objects)"
    rows_out = []
    for what, (tally, took) in ((f"{args.viewers} viewers", (many, many_s)),
                                (f"{args.viewers} downloading", (stress, stress_s))):  # fmt: skip
        rows_out += [
            row(f"search p50 latency, {what}", "ms", _p(tally.search_ms, 50), _p(one.search_ms, 50), name),
            row(f"search p95 latency, {what}", "ms", _p(tally.search_ms, 95), _p(one.search_ms, 95), name),
            row(
                f"searches per second, {what}",
                "1/s",
                len(tally.search_ms) / took,
                len(one.search_ms) / one_s,
                name,
            ),
            row(
                f"clip MB served per second, {what}",
                "MB/s",
                tally.clip_bytes / took / 1e6,
                one.clip_bytes / one_s / 1e6,
                name,
            ),
            row(f"requests per second, {what}", "1/s", tally.requests / took, one.requests / one_s, name),
            row(f"errors, {what}", "count", tally.errors, one.errors, name),
        ]
    path = write_results("review", rows_out)
    print_table(rows_out)
    print(f"results: {path}")
    target_met = _p(many.search_ms, 95) < 300 and many.errors == 0
    print(
        f"target (p95 search < 300 ms with {args.viewers} viewers, no errors): {'met' if target_met else 'NOT met'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
