"""The event each tracked object becomes: what an automation can match on, and its stable id."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from core.object_ref import object_ref, parse_object_ref
from core.segment import Segment
from flows.detect import FoundObject
from flows.events import OBJECT_EVENT, is_night, object_event

T0 = datetime(2026, 11, 1, 2, 0, tzinfo=UTC)


def _object(start: datetime, label: str = "person", thumbnail: bytes = b"jpeg") -> FoundObject:
    return FoundObject("abc123", label, start, start + timedelta(seconds=7), 0.81234, start + timedelta(seconds=2),
                       (10.0, 20.0, 50.0, 120.0), 8, thumbnail)  # fmt: skip


@pytest.mark.parametrize(
    ("utc_hour", "offset_h", "night"),
    [(2, 0, True), (12, 0, False), (19, 0, False), (20, 0, True), (5, 0, True), (6, 0, False),
     (14, 8, True), (2, 8, False), (23, -5, False)],
)  # fmt: skip
def test_night_is_read_on_the_recorders_own_clock(utc_hour, offset_h, night):
    assert is_night(T0.replace(hour=utc_hour), timedelta(hours=offset_h)) is night


def test_an_objects_event_names_its_camera_label_and_time(monkeypatch):
    monkeypatch.setenv("NVRFLOW_REVIEW_URL", "http://review.example:8088/")
    segment = Segment.of_recording(
        "nvr-01", 2, "0020000001", T0 - timedelta(seconds=5), T0 + timedelta(seconds=15), 99
    )
    event = object_event(segment, "depot", _object(T0), timedelta(hours=8))
    assert event["event"] == OBJECT_EVENT and event["occurred"] == T0
    assert event["resource"] == {
        "prefect.resource.id": "nvrflow.camera.nvr-01.2",
        "prefect.resource.name": "nvr-01 channel 2",
        "nvrflow.recorder": "nvr-01",
        "nvrflow.channel": "2",
        "nvrflow.site": "depot",
        "nvrflow.label": "person",
        "nvrflow.night": "false",  # 10:00 on a recorder at UTC+8
    }
    payload = event["payload"]
    assert (payload["label"], payload["score"], payload["second"]) == ("person", 0.812, 5.0)
    assert payload["thumbnail"] == "thumbnails/nvr-01/2/2026-11-01/abc123.jpg"
    assert payload["clip"] == "clips/nvr-01/2/2026-11-01/0020000001.mp4"
    assert (
        payload["url"]
        == f"http://review.example:8088/objects/{object_ref('nvr-01', 2, '0020000001', 'abc123')}"
    )
    assert parse_object_ref(payload["url"].rsplit("/", 1)[1]) == ("nvr-01", 2, "0020000001", "abc123")
    # The same object, announced again by a re-run, is the same event.
    assert object_event(segment, "depot", _object(T0), timedelta(hours=8))["id"] == event["id"]
    assert (
        object_event(segment, "depot", _object(T0, "car"), timedelta(0))["id"] == event["id"]
    )  # same object id
    monkeypatch.delenv("NVRFLOW_REVIEW_URL")
    assert object_event(segment, "depot", _object(T0, thumbnail=b""), timedelta(0))["payload"]["url"] == ""
