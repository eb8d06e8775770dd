"""What a pipeline run shows in the Prefect UI: its progress, its segments table and its summary."""

from __future__ import annotations

import re
from uuid import UUID

from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.futures import as_completed

from core.segment import Segment
from core.windows import Window
from flows.chain import Chain, SegmentOutcome
from flows.detect import FoundObject
from flows.events import object_url

MAX_OBJECTS_LISTED = 50


def _object_line(segment: Segment, obj: FoundObject) -> str:
    what = (f"- {obj.label} on channel {segment.channel}, {obj.start:%H:%M:%S}-{obj.end:%H:%M:%S} UTC, "
            f"score {obj.best_score:.2f}")  # fmt: skip
    url = object_url(segment, obj.object_id)
    return f"{what}: [watch]({url})" if url else what


def artifact_key(kind: str, recorder: str) -> str:
    """Artifact keys allow lowercase letters, digits and dashes only."""
    return re.sub(r"[^a-z0-9-]+", "-", f"{kind}-{recorder}".lower())


def collect_outcomes(recorder: str, chains: list[Chain]) -> list[SegmentOutcome]:
    """Each segment's outcome, taken as its last stage ends, with the run's progress bar moving on."""
    progress: UUID = create_progress_artifact(  # type: ignore[assignment]  # sync call: the id
        0.0 if chains else 100.0,
        key=artifact_key("progress", recorder),
        description=f"{recorder}: segments done of {len(chains)}",
    )
    last = {list(c.stages.values())[-1]: c for c in chains}
    outcomes = []
    for done, future in enumerate(as_completed(list(last)), start=1):
        outcomes.append(last[future].outcome())
        update_progress_artifact(progress, 100.0 * done / len(chains))
    return outcomes


def publish(recorder: str, window: Window, outcomes: list[SegmentOutcome], ran: list[str]) -> None:
    """The segments table and the run summary; `ran`: the cached stages the run had."""
    rows = [
        {
            "channel": o.segment.channel,
            "segment": o.segment.name,
            "start (UTC)": o.segment.start.isoformat(),
            "codec": o.source_codec,
            "duration s": round(o.duration_s, 1),
            "transcode": o.mode,
            "top labels": o.top_labels,
            "status": o.state if o.ok else o.error,
        }  # fmt: skip
        for o in sorted(outcomes, key=lambda o: (o.segment.channel, o.segment.start))
    ]
    create_table_artifact(
        rows, key=artifact_key("segments", recorder), description=f"{recorder} segments {window.describe()}"
    )
    ok = sum(o.ok for o in outcomes)
    seconds = sum(o.duration_s for o in outcomes)
    reused = ", ".join(f"{sum(s in o.reused for o in outcomes)} {s}" for s in ran) or "-"
    text = [f"# {recorder}: {window.describe()}", "", f"- segments persisted: **{ok} of {len(outcomes)}**",
            f"- video: {seconds:.0f} s", f"- re-used from earlier runs: {reused}"]  # fmt: skip
    text += [f"- failed: {o.segment.label}: {o.error}" for o in outcomes if not o.ok]
    found = sorted(((o.segment, f) for o in outcomes for f in o.objects), key=lambda sf: sf[1].start)
    if found:
        text += ["", f"## People and vehicles: {len(found)}", ""]
        text += [_object_line(segment, obj) for segment, obj in found[:MAX_OBJECTS_LISTED]]
        if len(found) > MAX_OBJECTS_LISTED:
            text.append(f"- ... and {len(found) - MAX_OBJECTS_LISTED} more (the review app finds them all)")
    create_markdown_artifact(
        "\n".join(text), key=artifact_key("summary", recorder), description=f"{recorder} run summary"
    )
