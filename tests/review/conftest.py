"""The review app against a ClickHouse gateway of its own, a local video store of real clips, on a free port.

Objects are inserted through the sink block's writer as the pipeline writes them; clips are real
H.264 MP4s (faststart) made with ffmpeg, thumbnails real JPEGs with their box drawn.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pytest
import uvicorn
from prefect.filesystems import LocalFileSystem
from pydantic import SecretStr

from blocks.clickhouse import ClickHouseSink
from blocks.clickhouse_schema import ObjectRow
from blocks.video_store import VideoStore
from review.app import ReviewSettings, create_app
from stack.ports import HOST, free_port, wait_for_port
from tests.gateway_process import Gateway
from video.tracking import thumbnail

PASSWORD = "correct horse battery staple"
DAY = datetime(2026, 11, 1, tzinfo=UTC)
CLIP_SECONDS = 20
# Objects on three channels: nvr-01/1 has people every 2 minutes from 02:00 (30 of them: paging),
# nvr-01/2 cars, nvr-02/1 a person and a car.
PEOPLE = 30


def make_clip(path: Path, seconds: int = CLIP_SECONDS) -> Path:
    """A small real H.264 MP4 with its index first (faststart), as the pipeline stores them."""
    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi",
         "-i", f"testsrc2=size=320x180:rate=10:duration={seconds}",
         "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-g", "10",
         "-movflags", "+faststart", str(path)],
        check=True, timeout=120,
    )  # fmt: skip
    return path


def make_thumbnail(box: tuple[float, float, float, float]) -> bytes:
    picture = np.full((180, 320, 3), 90, dtype=np.uint8)
    return thumbnail(picture, box)


def object_row(recorder: str, channel: int, index: int, label: str, start: datetime, score: float, **kw) -> ObjectRow:
    segment = f"{start:%Y%m%dT%H}00-ch{channel}"
    values = dict(
        recorder=recorder, site="site-a", channel=channel, segment=segment, object_id=f"{label}-{index}",
        label=label, start=start, end=start + timedelta(seconds=8), best_score=score,
        best_time=start + timedelta(seconds=3), x0=40.0, y0=30.0, x1=120.0, y1=150.0,
        frame_width=320, frame_height=180, frames=8,
        clip=f"{recorder}/{channel}/clip.mp4", clip_offset_s=float(3 + index % 10),
        thumbnail=f"{recorder}/{channel}/thumbs/{label}-{index}.jpg",
        model="nanodet-g", model_version=1, inserted_at=datetime.now(UTC), version_key="test",
    )  # fmt: skip
    values.update(kw)
    return ObjectRow(**values)


def rows() -> list[ObjectRow]:
    found = [
        object_row("nvr-01", 1, i, "person", DAY + timedelta(hours=2, minutes=2 * i), 0.5 + i / 100)
        for i in range(PEOPLE)
    ]
    found += [object_row("nvr-01", 2, i, "car", DAY + timedelta(hours=5, minutes=10 * i), 0.8) for i in range(5)]
    found += [
        object_row("nvr-02", 1, 0, "person", DAY + timedelta(hours=9), 0.95),
        object_row("nvr-02", 1, 1, "car", DAY + timedelta(hours=9, minutes=30), 0.6),
    ]
    return found


@dataclass
class ReviewServer:
    url: str
    store: VideoStore
    store_dir: Path
    outside: Path  # a file beside the store, never to be served
    rows: list[ObjectRow]
    sink: ClickHouseSink

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kwargs)

    @contextmanager
    def logged_in(self) -> Iterator[httpx.Client]:
        with self.client() as client:
            response = client.post("/login", data={"password": PASSWORD, "next": "/"})
            assert response.status_code == 303, response.text
            yield client

    def basic(self) -> httpx.Client:
        return self.client(auth=("any", PASSWORD))


@pytest.fixture(scope="package")
def clickhouse(tmp_path_factory) -> Iterator[ClickHouseSink]:
    base = tmp_path_factory.mktemp("review-clickhouse")
    with Gateway(base / "data", password="review-gateway") as gateway:
        sink = gateway.sink("review")
        with sink.connect() as writer:
            writer.migrate()
        yield sink


@pytest.fixture(scope="package")
def review(clickhouse, tmp_path_factory) -> Iterator[ReviewServer]:
    base = tmp_path_factory.mktemp("review-store")
    store_dir = base / "store"
    store = VideoStore.of(LocalFileSystem(basepath=str(store_dir)))
    clip = make_clip(base / "clip.mp4")
    inserted = rows()
    for row in inserted:
        store.put_file(clip, row.clip)
        store.put_bytes(make_thumbnail((row.x0 / 2, row.y0 / 2, row.x1 / 2, row.y1 / 2)), row.thumbnail)
    with clickhouse.connect() as writer:
        writer.insert("objects", inserted, token="review-test-objects")
    outside = base / "outside.mp4"
    outside.write_bytes(b"SECRET-OUTSIDE-THE-STORE" * 10)

    settings = ReviewSettings(sink=clickhouse, store=store, password=SecretStr(PASSWORD), ui_url="http://ui.invalid")
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host=HOST, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for_port(port, timeout=60, alive=thread.is_alive)
    yield ReviewServer(f"http://{HOST}:{port}", store, store_dir, outside, inserted, clickhouse)
    server.should_exit = True
    thread.join(timeout=30)
    assert not thread.is_alive()
