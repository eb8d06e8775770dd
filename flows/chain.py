"""A segment's chain of stage tasks, by name, and what became of it.

`STAGES` is the chain: each stage submits its task for one segment, reading what earlier
stages of the same segment return (by name) and the run's settings. Adding a stage is one
entry there. The pipeline submits stage by stage over all segments: a task waiting for its
upstream holds a worker thread, so segment-by-segment submission would run the segments one
after another.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prefect.futures import PrefectFuture

from blocks.model_server import TFServingModel
from blocks.recorder import HikvisionRecorder, Recording
from core.segment import Segment
from flows.classify import SubStream, classify_segment
from flows.detect import DetectOptions, FoundObject, SegmentDetections, detect_segment
from flows.export import download_task_for, segment_of
from flows.persist import Analysis, Destination, persist_segment
from flows.transcode import transcode_task_for
from video.transcode import TranscodeOptions, TranscodeResult

CACHED_STAGES = ("download", "transcode", "classify", "detect")


@dataclass(frozen=True)
class RunSettings:
    """What every segment's stages of one run share."""

    recorder: HikvisionRecorder
    model: TFServingModel
    model_version: int
    transcode: TranscodeOptions
    frames: DetectOptions  # the frame choice (and, for a detector, where it looks)
    to: Destination


@dataclass
class Chain:
    """One segment's stages as submitted, by name, in order."""

    recording: Recording
    sub_stream: Recording | None  # the sub-stream recording to classify from, if any
    segment: Segment = field(init=False)
    stages: dict[str, PrefectFuture[Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.segment = segment_of(self.recording)

    def __getitem__(self, stage: str) -> PrefectFuture[Any]:
        return self.stages[stage]

    @property
    def analysis(self) -> PrefectFuture[Any]:
        """The classify or detect stage, whichever the model's kind runs."""
        return self.stages.get("detect") or self.stages["classify"]

    def outcome(self) -> SegmentOutcome:
        """Waits for every stage; the first one that did not complete is the segment's failure."""
        for future in self.stages.values():
            future.wait()  # the final state is known locally only after a wait
            state = future.state
            if not state.is_completed():
                why = error_text(state) if state.is_failed() else f"not run ({state.name})"
                return SegmentOutcome(self.segment, "failed", why)
        transcoded: TranscodeResult = self["transcode"].result()
        analysis: Analysis = self.analysis.result()
        reused = tuple(s for s in CACHED_STAGES if s in self.stages and self.stages[s].state.name == "Cached")
        top = ", ".join(f"{label} ({n})" for label, n in analysis.top_labels())
        objects = tuple(analysis.objects) if isinstance(analysis, SegmentDetections) else ()
        return SegmentOutcome(
            self.segment, "ok", mode=transcoded.mode, source_codec=transcoded.source_codec,
            duration_s=transcoded.duration_s, top_labels=top, reused=reused, objects=objects,
        )  # fmt: skip


@dataclass
class SegmentOutcome:
    segment: Segment
    state: str  # "ok" or "failed"
    error: str = ""
    mode: str = ""
    source_codec: str = ""
    duration_s: float = 0.0
    top_labels: str = ""  # the classifier's labels most often first, or the detector's objects by label
    reused: tuple[str, ...] = ()  # stages answered from the cache of an earlier run
    objects: tuple[FoundObject, ...] = ()  # a detector's, in the segment

    @property
    def ok(self) -> bool:
        return self.state == "ok"


def error_text(state) -> str:
    """`<exception type>: <first line>` of a failed state, or its message."""
    try:
        state.result()
    except Exception as exc:  # the state's own exception, re-raised by result()
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return state.message or state.name


def _sub_stream_download(chain: Chain, run: RunSettings) -> PrefectFuture[Any] | None:
    if chain.sub_stream is None:
        return None
    return download_task_for(chain.sub_stream).submit(
        run.recorder, segment_of(chain.sub_stream), chain.sub_stream
    )


def _frames_of(chain: Chain) -> Any:
    """What the model reads: the sub-stream covering the segment, else the segment's MP4."""
    if "sub-stream download" in chain.stages:
        # A future in place of the result: Prefect resolves it (a dataclass field) before the task runs.
        return SubStream(segment_of(chain.sub_stream), chain["sub-stream download"])  # type: ignore[arg-type]
    return chain["transcode"]


def _classify(chain: Chain, run: RunSettings) -> PrefectFuture[Any] | None:
    if run.model.kind != "classifier":
        return None
    return classify_segment.submit(
        chain.segment, _frames_of(chain), run.model, run.model_version, run.frames.fps, run.frames.key_frames,
        return_state=False,
    )  # fmt: skip


def _detect(chain: Chain, run: RunSettings) -> PrefectFuture[Any] | None:
    if run.model.kind != "detector":
        return None
    return detect_segment.submit(
        chain.segment, _frames_of(chain), chain["transcode"], run.model, run.model_version, run.frames,
        return_state=False,
    )  # fmt: skip


Stage = Callable[[Chain, RunSettings], "PrefectFuture[Any] | None"]

# (name, submit); a stage whose submit gives None does not run for that segment. Stages are
# submitted in this order over all segments, and a segment's failure is the first of them that
# did not complete. The sub-stream download comes right after the main one, so that the
# segment's model stage can start sooner.
STAGES: tuple[tuple[str, Stage], ...] = (
    ("download", lambda c, run: download_task_for(c.recording).submit(run.recorder, c.segment, c.recording)),
    ("sub-stream download", _sub_stream_download),
    ("transcode", lambda c, run: transcode_task_for(c.segment).submit(
        c.segment, c["download"], run.transcode, return_state=False)),
    ("classify", _classify),
    ("detect", _detect),
    ("persist", lambda c, run: persist_segment.submit(
        c.segment, c["transcode"], c.analysis, run.to, return_state=False)),
)  # fmt: skip


def submit_chains(
    recordings: list[Recording], subs: dict[Recording, Recording], run: RunSettings
) -> list[Chain]:
    """Every segment's chain, submitted stage by stage."""
    chains = [Chain(rec, subs.get(rec)) for rec in recordings]
    for name, submit in STAGES:
        for chain in chains:
            future = submit(chain, run)
            if future is not None:
                chain.stages[name] = future
    return chains
