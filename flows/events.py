"""One Prefect event per tracked object, so operators write their own alerts as automations.

    event     nvrflow.object.detected
    resource  nvrflow.camera.<recorder>.<channel>, with labels nvrflow.recorder, nvrflow.channel,
              nvrflow.site, nvrflow.label (person, car, ...) and nvrflow.night ("true" between
              NIGHT_STARTS and NIGHT_ENDS on the recorder's own clock)
    payload   label, score, start, end (UTC, ISO), segment, second (where the clip shows it),
              thumbnail and clip (keys in the video store), url (the object's page in the review
              app, when NVRFLOW_REVIEW_URL is set)

An automation matches on the resource's labels, e.g. a person on nvr-01's channel 2 at night
(`deployments/automations/alerts.yaml`). An event's id comes from the object's, so a re-run of
the same footage announces nothing new to Prefect.
"""

from __future__ import annotations

import os
import uuid
from datetime import datetime, timedelta

from prefect.events import emit_event

from core.object_ref import object_ref
from core.segment import Segment
from core.store import clip_key, thumbnail_key
from flows.detect import FoundObject, SegmentDetections

OBJECT_EVENT = "nvrflow.object.detected"
NIGHT_STARTS, NIGHT_ENDS = 20, 6  # local hours: 20:00 to 06:00
_EVENT_IDS = uuid.UUID("5c1f3e52-59d4-4a3c-9a53-2f0e6b3c8d71")


def is_night(moment: datetime, utc_offset: timedelta) -> bool:
    hour = (moment + utc_offset).hour
    return hour >= NIGHT_STARTS or hour < NIGHT_ENDS


def camera_resource(recorder: str, channel: int) -> str:
    return f"nvrflow.camera.{recorder}.{channel}"


def object_url(segment: Segment, object_id: str) -> str:
    """The object's page in the review app, when `NVRFLOW_REVIEW_URL` says where the app is."""
    base = os.environ.get("NVRFLOW_REVIEW_URL", "").rstrip("/")
    ref = object_ref(segment.source, segment.channel, segment.name, object_id)
    return f"{base}/objects/{ref}" if base else ""


def object_event(segment: Segment, site: str, obj: FoundObject, utc_offset: timedelta) -> dict:
    """The event's fields (`emit_event`'s keywords) for one object."""
    return {
        "event": OBJECT_EVENT,
        "id": uuid.uuid5(_EVENT_IDS, obj.object_id),
        "occurred": obj.start,
        "resource": {
            "prefect.resource.id": camera_resource(segment.source, segment.channel),
            "prefect.resource.name": f"{segment.source} channel {segment.channel}",
            "nvrflow.recorder": segment.source,
            "nvrflow.channel": str(segment.channel),
            "nvrflow.site": site,
            "nvrflow.label": obj.label,
            "nvrflow.night": "true" if is_night(obj.start, utc_offset) else "false",
        },
        "payload": {
            "object_id": obj.object_id,
            "label": obj.label,
            "score": round(obj.best_score, 3),
            "start": obj.start.isoformat(),
            "end": obj.end.isoformat(),
            "segment": segment.name,
            "second": round(max(0.0, (obj.start - segment.start).total_seconds()), 1),
            "thumbnail": thumbnail_key(segment, obj.object_id) if obj.thumbnail else "",
            "clip": clip_key(segment),
            "url": object_url(segment, obj.object_id),
        },
    }


def announce_objects(segment: Segment, site: str, found: SegmentDetections, utc_offset: timedelta) -> int:
    """One event per object of the segment; returns how many."""
    for obj in found.objects:
        emit_event(**object_event(segment, site, obj, utc_offset))
    return len(found.objects)
