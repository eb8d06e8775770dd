"""A fleet's workbook, dispatched through the deployment: every recorder's limit holds.

Each simulated recorder counts the downloads it serves at once (`max_active_downloads`);
the pipeline submits every segment's download together, so without the limit
`recorder:<name>` a recorder would see as many downloads at once as it has segments.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta

import pytest
from openpyxl import Workbook

from deployments.sample_inventory import HEADER
from stack.ports import free_port
from stack.simulator import control
from tests.own_recorder import one_channel_spec, register
from tests.polling import wait_until
from tests.support import CLASSIFIER, final_runs, pipeline_runs_of, sink, state_names

pytestmark = pytest.mark.stack

RECORDERS = 4  # limits 2, 1, 2, 1; as many as the test stack's worker runs at once
SEGMENTS = 3
SEGMENT_SECONDS = 4
START = datetime(2026, 11, 2, 0, 0, 0, tzinfo=UTC)
PASSWORD = "fleet-Pa55"


def _limit(i: int) -> int:
    return 1 if i % 2 else 2


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fleet")
    end = START + timedelta(seconds=SEGMENT_SECONDS * SEGMENTS)
    recorders = [
        {
            "name": f"fleet-{i:02d}",
            "port": free_port(),
            "username": "admin",
            "password": PASSWORD,
            "segment_seconds": SEGMENT_SECONDS,
            "recording_start": START.replace(tzinfo=None).isoformat(),
            "recording_end": end.replace(tzinfo=None).isoformat(),
            "channels": [{"id": 1, "scene": "coffee", "codec": "h264", "audio": "none"}],
        }  # fmt: skip
        for i in range(RECORDERS)
    ]
    spec = {"width": 320, "height": 240, "fps": 10, "recorders": recorders}
    with control.running(spec, folder):
        for rec in recorders:
            # ~3 s a download (67 kB clips): a recorder's downloads overlap when nothing limits them.
            control.set_faults(rec["port"], bandwidth_bps=20_000)
        book = Workbook()
        sheet = book.active
        sheet.append(HEADER)
        for i, rec in enumerate(recorders):
            sheet.append(
                [rec["name"], "127.0.0.1", rec["port"], "admin", PASSWORD, "1", _limit(i), "fleet", "yes"]
            )
        path = folder / "fleet.xlsx"
        book.save(path)
        yield recorders, path, end


def test_a_fleet_dispatches_within_each_recorders_limit(stack, fleet):
    from flows.dispatch import dispatch
    from flows.inventory import sync_inventory

    recorders, workbook, end = fleet
    sync_inventory(str(workbook))
    names = [r["name"] for r in recorders]
    states = dispatch(START, end, recorders=names)
    assert states == {name: "Completed" for name in names}
    peaks = {}
    for i, rec in enumerate(recorders):
        stats = control.stats(rec["port"])
        assert stats["downloads_completed"] == SEGMENTS, (rec["name"], stats)
        peaks[rec["name"]] = stats["max_active_downloads"]
        assert peaks[rec["name"]] <= _limit(i), (rec["name"], peaks)
    # The check means something only if downloads did overlap where the limit allowed it.
    assert max(peaks.values()) == 2, peaks


WINDOW_START = datetime(2026, 11, 3, 0, 0, 0, tzinfo=UTC)
WINDOW_END = WINDOW_START + timedelta(seconds=SEGMENT_SECONDS * 2)


def _own_recorders(names: list[str]) -> dict:
    """A simulator spec with one recorder per name (two 4 s segments each), every one registered."""
    spec = {"width": 320, "height": 240, "fps": 10, "recorders": []}
    for name in names:
        (recorder,) = one_channel_spec(name, WINDOW_START, WINDOW_END, SEGMENT_SECONDS)["recorders"]
        spec["recorders"].append(recorder)
        register({**spec, "recorders": [recorder]})
    return spec


@contextmanager
def _holding_every_slot(recorder: str) -> Iterator[None]:
    """The test takes every slot of `recorder:<name>`: that recorder's runs wait at their first call."""
    from prefect.client.orchestration import get_client
    from prefect.concurrency.sync import concurrency

    from flows.export import limit_name

    with get_client(sync_client=True) as client:
        slots = client.read_global_concurrency_limit_by_name(limit_name(recorder)).limit
    with concurrency(limit_name(recorder), occupy=slots, strict=True):
        yield


def _state(run_id) -> str:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        state = client.read_flow_run(run_id).state
    return state.name if state else ""


def test_the_fleet_deployment_runs_one_dispatch_at_a_time_and_does_not_wait_for_its_runs(stack, tmp_path):
    """`dispatch/fleet` as deployed (prefect.yaml: concurrency limit 1, `wait: false`).

    The test holds the recorders' slots, so each pipeline run waits until the test lets it go:
    a first dispatch told to wait for its run stays running as long as the test wants.
    """
    from prefect.deployments import run_deployment

    spec = _own_recorders(["dispatch-01", "dispatch-02"])
    window = {"start": WINDOW_START.isoformat(), "end": WINDOW_END.isoformat()}
    since = datetime.now(UTC)
    with control.running(spec, tmp_path):
        with _holding_every_slot("dispatch-02"), ExitStack() as first_hold:
            first_hold.enter_context(_holding_every_slot("dispatch-01"))
            first = run_deployment(
                "dispatch/fleet", parameters={**window, "recorders": ["dispatch-01"], "wait": True}, timeout=0
            )
            wait_until("the first dispatch running", lambda: _state(first.id) == "Running", timeout=300)
            second = run_deployment(
                "dispatch/fleet", parameters={**window, "recorders": ["dispatch-02"]}, timeout=0
            )
            # One at a time: the second waits for the deployment's slot while the first runs.
            wait_until(
                "the second dispatch waiting for a slot",
                lambda: "AwaitingConcurrencySlot" in state_names(second.id),
                timeout=300,
            )
            assert _state(first.id) == "Running", state_names(first.id)
            first_hold.close()  # dispatch-01's run goes on; the first dispatch ends; the second runs
            (second_done,) = final_runs([second.id], timeout=600)
            assert second_done.state.name == "Completed", state_names(second.id)
            # Not waiting: the second dispatch ended while the run it started waits for dispatch-02.
            (pipeline,) = pipeline_runs_of("dispatch-02", since)
            assert not pipeline.state.is_final(), pipeline.state
        first_done, pipeline = final_runs([first.id, pipeline.id], timeout=600)
    assert [first_done.state.name, pipeline.state.name] == ["Completed", "Completed"], (first_done, pipeline)
    assert first_done.end_time <= second_done.start_time, (first_done, second_done)
    assert pipeline.end_time > second_done.end_time, (pipeline.end_time, second_done.end_time)


def test_the_sampling_choices_of_a_deployment_run_reach_the_classify_stage(stack, tmp_path):
    """`sample_fps` and `key_frames` as run parameters: the frames stored for the window follow them."""
    from prefect.deployments import run_deployment

    choices = {"sampling-fps2": {"sample_fps": 2}, "sampling-key": {"key_frames": True}}
    spec = _own_recorders(list(choices))
    window = {"start": WINDOW_START.isoformat(), "end": WINDOW_END.isoformat()}
    with control.running(spec, tmp_path):
        runs = [
            run_deployment(
                "recorder-pipeline/recorder",
                parameters={"recorder": name, **window, **chosen, "model_block": CLASSIFIER},
                timeout=0,
            )
            for name, chosen in choices.items()
        ]
        done = final_runs([r.id for r in runs], timeout=600)
    assert [r.state.name for r in done] == ["Completed", "Completed"], [(r.name, r.state) for r in done]
    seconds = int((WINDOW_END - WINDOW_START).total_seconds())
    with sink() as ch:
        frames = dict(
            ch.query(
                "SELECT recorder, uniqExact(frame_time) FROM {db}.detections "
                "WHERE recorder IN {names:Array(String)} GROUP BY recorder",
                {"names": list(choices)},
            )
        )
    # 2 frames a second; the clips' key frames come every 2 s (the simulator's group of pictures).
    assert frames == {"sampling-fps2": 2 * seconds, "sampling-key": seconds // 2}, frames
