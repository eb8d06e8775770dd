"""Export stage: find a window's recordings on a recorder and download them.

Every call to a recorder holds a slot of its global concurrency limit
`recorder:<name>` (strict: a missing limit is an error, not unlimited).

Cache key of a download: the segment's identity (recorder, channel, segment name, size),
DOWNLOAD_VERSION and the data folder; it expires after DOWNLOAD_CACHE_DAYS, the retention
of exports on disk. A re-recorded segment (same name, new size) is another key:
downloaded again. A cached download is used only where its file exists and verifies
(`download_task_for`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import httpx
from prefect import Task, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.concurrency.asyncio import ConcurrencySlotAcquisitionError
from prefect.concurrency.sync import concurrency
from prefect.runtime import task_run

from blocks.isapi.download import is_complete
from blocks.isapi.naming import UnsafeNameError, segment_path
from blocks.recorder import MAIN_STREAM, SUB_STREAM, DownloadResult, HikvisionRecorder, ISAPIClient, Recording
from core.errors import ServiceError
from core.segment import Segment, stage_key
from core.settings import exports_dir
from flows import retry_policy
from flows.caching import StageKey, trusting_files

DOWNLOAD_VERSION = 1
DOWNLOAD_CACHE_DAYS = 14
# A recorder slot's lease: renewed every 45 s (75 %) while held, so a slot of a killed flow run
# returns at most 60 s (the server's minimum) plus the server's repossessor period later.
SLOT_LEASE_S = 60
# A recorder clock this far from this machine's is reported with every search.
CLOCK_SKEW_WARNING = timedelta(minutes=5)


def limit_name(recorder: str) -> str:
    return f"recorder:{recorder}"


class SlotUnavailable(ServiceError):
    """The Prefect server could not hand out a recorder slot (it answered 5xx or not at all)."""

    retryable = True


def _server_trouble(exc: ConcurrencySlotAcquisitionError) -> bool:
    """A slot refused because the server was in trouble, not because the limit is missing."""
    cause = exc.__cause__
    if isinstance(cause, httpx.HTTPStatusError):
        return cause.response.status_code >= 500
    return isinstance(cause, httpx.TransportError)


@contextmanager
def recorder_call(recorder: HikvisionRecorder) -> Iterator[ISAPIClient]:
    """A slot of the recorder's limit (strict: a missing limit is an error) and a client, for one call.

    A slot the server fails to hand out (a busy database answering 503) is a retryable
    SlotUnavailable; a missing limit stays Prefect's own error, not retried.
    """
    name = limit_name(recorder.name)
    with ExitStack() as held:
        try:
            held.enter_context(concurrency(name, occupy=1, strict=True, lease_duration=SLOT_LEASE_S))
        except ConcurrencySlotAcquisitionError as exc:
            if _server_trouble(exc):
                raise SlotUnavailable(
                    f"{recorder.name}: no slot of {name} from the Prefect server: {exc}"
                ) from exc
            raise
        yield held.enter_context(recorder.connect())


def segment_of(rec: Recording) -> Segment:
    return Segment.of_recording(rec.recorder, rec.channel, rec.name, rec.start, rec.end, rec.size)


def _search_run_name() -> str:
    params = task_run.parameters
    stream = " sub-stream" if params.get("stream") == SUB_STREAM else ""
    return f"search {params['recorder'].name} channel {params['channel']}{stream}"


@dataclass(frozen=True)
class Search:
    """A channel's recordings in a window, and the recorder's clock: its local time is UTC plus `utc_offset`."""

    recordings: list[Recording]
    utc_offset: timedelta


@task(name="search", task_run_name=_search_run_name, cache_policy=NO_CACHE, **retry_policy.RECORDER)
def search_recordings(
    recorder: HikvisionRecorder, channel: int, start: datetime, end: datetime, stream: int = MAIN_STREAM
) -> Search:
    with recorder_call(recorder) as client:
        found = client.search(channel, start, end, stream)
        skew = client.clock_skew()
        offset = client.clock().utc_offset
    logger = get_run_logger()
    if abs(skew) >= CLOCK_SKEW_WARNING and stream == MAIN_STREAM:
        logger.warning(clock_skew_warning(recorder.name, skew))
    what = "sub-stream recordings" if stream == SUB_STREAM else "recordings"
    logger.info(f"{recorder.name} channel {channel}: {len(found)} {what} in {start} .. {end}")
    return Search(found, offset)


# A sub-stream file stands in for a main one it covers to within this much at either end.
SUB_STREAM_SLACK = timedelta(seconds=1)


def covering_sub_streams(recordings: list[Recording], subs: list[Recording]) -> dict[Recording, Recording]:
    """Main recording -> the sub-stream recording of its channel that covers its whole span.

    A recorder writes both streams of a channel in files of its own; one whose sub-stream file
    misses part of the main one's span (a gap, another boundary) is left out, and is classified
    from its main stream.
    """
    covering = {}
    for rec in recordings:
        for sub in subs:
            if (
                sub.channel == rec.channel
                and sub.start <= rec.start + SUB_STREAM_SLACK
                and sub.end >= rec.end - SUB_STREAM_SLACK
            ):
                covering[rec] = sub
                break
    return covering


def clock_skew_warning(recorder: str, skew: timedelta) -> str:
    minutes = round(abs(skew).total_seconds() / 60)
    way = "ahead of" if skew > timedelta(0) else "behind"
    return (
        f"{recorder}: its clock is {minutes // 60} h {minutes % 60:02d} min {way} this machine's; "
        "recordings are searched and stored in the recorder's own time, so this window's rows "
        "carry times that far off (set the recorder's clock, e.g. NTP, to fix it)"
    )


def download_key(segment: Segment) -> str:
    return stage_key(segment, "download", DOWNLOAD_VERSION)


@task(name="download", task_run_name="download {segment.label}",
      cache_policy=StageKey(key_of=lambda inputs: download_key(inputs["segment"]), per_data_folder=True),
      cache_expiration=timedelta(days=DOWNLOAD_CACHE_DAYS), **retry_policy.RECORDER)  # fmt: skip
def download_recording(recorder: HikvisionRecorder, segment: Segment, rec: Recording) -> DownloadResult:
    with recorder_call(recorder) as client:
        result = client.download(rec, exports_dir())
    if result.reused:
        get_run_logger().info(f"{segment.label}: already downloaded and verified, not downloaded again")
    else:
        get_run_logger().info(f"{segment.label}: {result.bytes} bytes downloaded")
    return result


def export_path(rec: Recording) -> Path | None:
    """Where this data folder keeps the recording's export; None for a name no path can take."""
    try:
        return segment_path(exports_dir(), rec.recorder, rec.channel, rec.start, rec.name)
    except UnsafeNameError:
        return None  # the download task itself fails with the recorder's error


def download_task_for(rec: Recording) -> Task[..., DownloadResult]:
    """The download task, running again unless this data folder holds the verified export."""
    path = export_path(rec)
    return trusting_files(download_recording, path is not None and is_complete(path, rec.size))
