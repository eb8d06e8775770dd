"""Export stage: find a window's recordings on a recorder and download them.

Every call to a recorder holds a slot of its global concurrency limit
`recorder:<name>` (strict: a missing limit is an error, not unlimited).
"""

from __future__ import annotations

from datetime import datetime

from prefect import get_run_logger, task
from prefect.concurrency.sync import concurrency
from prefect.tasks import exponential_backoff

from blocks.recorder import DownloadResult, HikvisionRecorder, Recording, is_retryable
from flows.retries import retry_when
from flows.settings import exports_dir


def limit_name(recorder: str) -> str:
    return f"recorder:{recorder}"


_RETRIES = dict(
    retries=4,
    retry_delay_seconds=exponential_backoff(backoff_factor=2),
    retry_jitter_factor=0.5,
    # Timeouts, 5xx, dropped connections, bad bodies; never wrong credentials.
    retry_condition_fn=retry_when(is_retryable),
)


@task(name="search", task_run_name="search {recorder} channel {channel}", **_RETRIES)
def search_recordings(recorder: str, channel: int, start: datetime, end: datetime) -> list[Recording]:
    block = HikvisionRecorder.load(recorder)
    with concurrency(limit_name(recorder), occupy=1, strict=True), block.connect(recorder) as client:
        found = client.search(channel, start, end)
    get_run_logger().info(f"{recorder} channel {channel}: {len(found)} recordings in {start} .. {end}")
    return found


def download_key(context, parameters) -> str:
    rec: Recording = parameters["rec"]
    return f"download/{rec.recorder}/{rec.channel}/{rec.name}/{rec.size}"


@task(name="download", task_run_name="download {rec.recorder} ch{rec.channel} {rec.name}",
      cache_key_fn=download_key, **_RETRIES)  # fmt: skip
def download_recording(rec: Recording) -> DownloadResult:
    block = HikvisionRecorder.load(rec.recorder)
    with concurrency(limit_name(rec.recorder), occupy=1, strict=True), block.connect(rec.recorder) as client:
        result = client.download(rec, exports_dir())
    logger = get_run_logger()
    if result.reused:
        logger.info(
            f"{rec.recorder} ch{rec.channel} {rec.name}: already downloaded and verified, not downloaded again"
        )
    else:
        logger.info(f"{rec.recorder} ch{rec.channel} {rec.name}: {result.bytes} bytes downloaded")
    return result
