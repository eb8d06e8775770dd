"""People and vehicles through the pipeline: a scripted scene's actors found as objects against the
script, their thumbnails and clip in the store, rows once under a re-run, and the sample alert for
a person at night received by a webhook."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from stack.simulator import control
from stack.simulator.scenes import DEMO_SCRIPTS, truth
from tests.own_recorder import register
from tests.support import next_message_about, sink, webhook_receiver

pytestmark = pytest.mark.stack

RECORDER = "nightwatch"
SCRIPT = "demo-pasture"
START = datetime(2026, 11, 3, 2, 0, tzinfo=UTC)  # 02:00 on the recorder's clock (UTC): night
SEGMENT_S = 20
SEGMENTS = 6
# A segment boundary splits an object in two (README, "Objects"): a fragment seen in its segment's
# last second and one of its label starting at most this long after the boundary are one. The
# next segment's first frame has no earlier frame to show motion, and its whole-frame look misses
# a small person: their part there is found from the second or third frame on.
BOUNDARY_LAG_S = 3.0
# Every actor must be found; its start and end within 2 s only when it is at least this tall: the
# detector scores people under ~70 px below its threshold in part of their frames (README,
# "Benchmarks": make bench-detect measures it on an hour of scenes).
TIMED_HEIGHT = 80


def _spec() -> dict:
    from stack.ports import free_port
    from tests.own_recorder import PASSWORD

    end = START + timedelta(seconds=SEGMENT_S * SEGMENTS)
    recorder = {
        "name": RECORDER, "port": free_port(), "username": "admin", "password": PASSWORD,
        "segment_seconds": SEGMENT_S, "recording_start": START.replace(tzinfo=None).isoformat(),
        "recording_end": end.replace(tzinfo=None).isoformat(),
        "channels": [{"id": 1, "scene": "coffee", "codec": "h264", "audio": "none", "script": SCRIPT}],
    }  # fmt: skip
    return {"width": 640, "height": 360, "fps": 10, "recorders": [recorder]}


def _objects() -> list[tuple]:
    with sink() as ch:
        return ch.query(
            "SELECT label, start, end, thumbnail, clip, clip_offset_s, segment FROM {db}.objects FINAL "
            "WHERE recorder = {r:String} ORDER BY start",
            {"r": RECORDER},
        )


def _joined(objects: list[tuple]) -> list[tuple[str, datetime, datetime]]:
    """(label, start, end), fragments of one label split by a segment boundary joined."""
    joined: list[list] = []
    for label, start, end, *_ in objects:
        boundary = START + timedelta(seconds=(start - START).total_seconds() // SEGMENT_S * SEGMENT_S)
        same = [
            j
            for j in joined
            if j[0] == label
            and (boundary - j[2]).total_seconds() <= 1.0
            and (start - boundary).total_seconds() <= BOUNDARY_LAG_S
        ]
        if same and start >= same[-1][1]:
            same[-1][2] = max(same[-1][2], end)
        else:
            joined.append([label, start, end])
    return [tuple(j) for j in joined]  # type: ignore[misc]


@pytest.fixture(scope="module")
def night_alerts(stack):
    """The sample "person at night" automation, its camera set to this test's recorder."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock
    from prefect.client.orchestration import get_client

    from work_pools.automations import load, notification_block_id

    with webhook_receiver() as (url, got):
        CustomWebhookNotificationBlock(
            name="nvrflow alerts", url=url, json_data={"subject": "{{subject}}", "body": "{{body}}"},
            allow_private_urls=True,
        ).save("nvrflow-alerts", overwrite=True)  # fmt: skip
        (sample,) = [a for a in load(resolve_block=notification_block_id) if "person at night" in a.name]
        sample.name = f"nvrflow test person at night on {RECORDER}"
        sample.trigger.match.root["prefect.resource.id"] = f"nvrflow.camera.{RECORDER}.1"  # type: ignore[union-attr]
        with get_client(sync_client=True) as client:
            automation_id = client.create_automation(sample)
        try:
            yield got
        finally:
            with get_client(sync_client=True) as client:
                client.delete_automation(automation_id)


def test_a_scripted_scenes_people_and_vehicles_become_objects_once(stack, tmp_path, night_alerts):
    from PIL import Image
    from prefect.client.orchestration import get_client

    from blocks.video_store import load_video_store
    from core.windows import Window
    from flows.launch import start_pipeline_runs, wait_for_runs

    spec = _spec()
    register(spec)
    window = Window(START, START + timedelta(seconds=SEGMENT_S * SEGMENTS))
    with control.running(spec, tmp_path):
        runs = start_pipeline_runs({RECORDER: "test"}, window)
        assert wait_for_runs(runs, timeout_s=900) == {RECORDER: "Completed"}
        first = _objects()

        expected = truth(DEMO_SCRIPTS[SCRIPT], START, fps=10)
        found = _joined(first)
        vehicles = {"car", "truck", "bus"}
        for actor in expected:
            begin, finish = (
                datetime.fromisoformat(actor[k]) for k in ("first_visible_utc", "last_visible_utc")
            )
            kinds = vehicles if actor["label"] in vehicles else {actor["label"]}
            match = [f for f in found if f[0] in kinds and f[1] < finish and f[2] > begin]
            assert match, (actor["id"], actor["label"], begin, finish, found)
            label, start, end = match[0]
            tallest = max(b["box"][3] - b["box"][1] for b in actor["boxes"])
            if tallest >= TIMED_HEIGHT:
                assert abs((start - begin).total_seconds()) <= 2, (actor["id"], start, begin)
                assert abs((end - finish).total_seconds()) <= 2, (actor["id"], end, finish)
        assert len(found) == len(expected), (found, expected)

        store = load_video_store()
        for _label, _start, _end, thumbnail, clip, offset, _segment in first:
            with store.open(thumbnail) as file, Image.open(file) as picture:
                assert picture.format == "JPEG" and picture.width == 320, thumbnail
            assert store.size(clip) > 10_000 and 0 <= offset <= SEGMENT_S

        message = next_message_about(night_alerts, f"a person on {RECORDER} channel 1 at night")
        assert "person (score" in message["body"] and "UTC" in message["body"], message

        # Again, as a re-run: every row once, counted without FINAL.
        with sink() as ch:
            counts = ch.query(
                "SELECT (SELECT count() FROM {db}.objects WHERE recorder = {r:String}), "
                "(SELECT count() FROM {db}.boxes WHERE recorder = {r:String})", {"r": RECORDER},
            )[0]  # fmt: skip
        with get_client(sync_client=True) as client:  # another run of the same window, as by hand
            deployment = client.read_deployment_by_name("recorder-pipeline/recorder")
            again = client.create_flow_run_from_deployment(
                deployment.id, parameters={"recorder": RECORDER, **window.parameters()}
            )
        assert wait_for_runs({RECORDER: again.id}, timeout_s=900) == {RECORDER: "Completed"}
        with sink() as ch:
            assert ch.query(
                "SELECT (SELECT count() FROM {db}.objects WHERE recorder = {r:String}), "
                "(SELECT count() FROM {db}.boxes WHERE recorder = {r:String})", {"r": RECORDER},
            )[0] == counts  # fmt: skip
        assert counts[0] == len(first) and counts[1] > len(first)
