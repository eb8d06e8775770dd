"""Transcode stage: a recorder export (or an ingested file) becomes a web-playable MP4.

The work is `video.transcode.transcode_file`; this task runs its commands through
prefect-shell, so the encoder's output lands in the task run's log.

Cache key of a transcode: the segment's identity, TRANSCODE_VERSION and the options that
shape the MP4 (`TranscodeOptions.output_settings`: engine, preset, CRF, audio; not the
timeout), and the data folder. It expires after TRANSCODE_CACHE_DAYS, the retention of
MP4s on disk. A cached MP4 is used only where its file exists with moov before mdat
(`transcode_task_for`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

from prefect import Task, task
from prefect_shell import ShellOperation

from blocks.recorder import DownloadResult
from core.segment import Segment, mp4_path, stage_key
from core.settings import mp4_dir
from flows import retry_policy
from flows.caching import StageKey, trusting_files
from video.command import TAIL_LINES, CommandFailed
from video.mp4 import is_faststart
from video.transcode import TranscodeOptions, TranscodeResult, transcode_file

TRANSCODE_VERSION = 1
TRANSCODE_CACHE_DAYS = 30

# The one script prefect-shell runs: a constant. The arguments reach it only through
# environment variables and are expanded as quoted words, so no file name (spaces,
# quotes, `;`, `$(...)`, non-ASCII) is ever parsed by the shell.
_EXEC_ARGV = r"""set -euo pipefail
argv=()
i=0
while name="NVRFLOW_ARG_$i" && [ -n "${!name+set}" ]; do
  argv+=("${!name}")
  i=$((i + 1))
done
exec 2>&1
exec timeout --kill-after=10 "$NVRFLOW_TIMEOUT" "${argv[@]}"
"""


def run_in_shell_operation(argv: Sequence[str], timeout_s: float, what: str) -> list[str]:
    """A `video.command.Runner` through prefect-shell: output lines, or CommandFailed."""
    env = {f"NVRFLOW_ARG_{i}": str(arg) for i, arg in enumerate(argv)}
    env["NVRFLOW_TIMEOUT"] = f"{max(1, int(timeout_s))}s"
    with ShellOperation(commands=[_EXEC_ARGV], env=env, stream_output=False) as op:
        proc = op.trigger()
        try:
            proc.wait_for_completion()
        except RuntimeError:
            raise CommandFailed(what, proc.return_code, proc.fetch_result()[-TAIL_LINES:]) from None
        return proc.fetch_result()


def transcode_key(segment: Segment, options: TranscodeOptions) -> str:
    return stage_key(segment, "transcode", TRANSCODE_VERSION, options.output_settings())


@task(name="transcode", task_run_name="transcode {segment.label}",
      cache_policy=StageKey(key_of=lambda inputs: transcode_key(inputs["segment"], inputs["options"]),
                            per_data_folder=True),
      cache_expiration=timedelta(days=TRANSCODE_CACHE_DAYS), **retry_policy.MEDIA)  # fmt: skip
def transcode_segment(
    segment: Segment, source: DownloadResult | Path, options: TranscodeOptions
) -> TranscodeResult:
    """`source`: a recorder's download, or an ingested file; the MP4 goes to the segment's place."""
    src = source.path if isinstance(source, DownloadResult) else source
    expected = (segment.end - segment.start).total_seconds() if segment.end else None
    key = transcode_key(segment, options)
    output = mp4_path(segment, mp4_dir())
    result = transcode_file(src, output, options, expected, run=run_in_shell_operation, made_from=key)
    return dataclasses.replace(result, key=key)


def transcode_task_for(segment: Segment) -> Task[..., TranscodeResult]:
    """The transcode task, running again unless this data folder holds the segment's MP4."""
    try:
        output = mp4_path(segment, mp4_dir())
    except ValueError:  # a name no path can take: the task itself fails, naming it
        return trusting_files(transcode_segment, False)
    return trusting_files(transcode_segment, output.is_file() and is_faststart(output))
