"""What the cluster tests do to runs, workers and ClickHouse: start, wait (polling with a
deadline), read where a run ran and what its tasks did, count rows."""

from __future__ import annotations

from typing import Any, TypeVar
from uuid import UUID

from tests.cluster.conftest import WORKERS, Cluster, Recorder
from tests.polling import wait_until

T = TypeVar("T")
PIPELINE = "recorder-pipeline/recorder"
FLUSH = "flush-outbox/flush-outbox"
STAGES = ("download", "transcode", "classify", "persist")


def start(deployment: str, **parameters: Any) -> UUID:
    from prefect.deployments import run_deployment

    return run_deployment(deployment, parameters=parameters, timeout=0).id


def start_pipeline(cluster: Cluster, rec: Recorder) -> UUID:
    begin, end = cluster.window
    return start(PIPELINE, recorder=rec.name, start=begin.isoformat(), end=end.isoformat())


def read_run(run_id: UUID):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(run_id)


def wait_final(run_id: UUID, timeout: float = 300, min_run_count: int = 1):
    def final():
        run = read_run(run_id)
        done = run.state is not None and run.state.is_final() and run.run_count >= min_run_count
        return run if done else None

    return wait_until("the run's final state", final, timeout, every=1)


def run_to_completion(deployment: str, timeout: float = 300, **parameters: Any):
    run = wait_final(start(deployment, **parameters), timeout)
    assert run.state.is_completed(), (run.name, run.state.name, run.state.message)
    return run


def worker_of(run) -> str | None:
    return run.labels.get("prefect.worker.name")


def states(run_id: UUID) -> list:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return sorted(client.read_flow_run_states(run_id), key=lambda s: s.timestamp)


def task_states(run_id: UUID) -> dict[str, list[str]]:
    """{stage: [state name of each of its task runs]} of one flow run (task runs are named `<stage> <segment>`)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))
    found: dict[str, list[str]] = {}
    for task_run in runs:
        stage = task_run.name.split(" ", 1)[0]
        if stage in STAGES:
            found.setdefault(stage, []).append(task_run.state.name if task_run.state else "?")
    return {stage: sorted(names) for stage, names in found.items()}


def use_only(cluster: Cluster, role: str) -> None:
    """Only `role`'s worker polls the pool: every other worker stopped, `role`'s running."""
    for other in WORKERS:
        if other != role:
            cluster.stop_worker(other)
    if not cluster.worker_running(role):
        cluster.start_worker(role)


def all_workers(cluster: Cluster) -> None:
    for role in WORKERS:
        if not cluster.worker_running(role):
            cluster.start_worker(role)


def _sink():
    from blocks.clickhouse import ClickHouseSink
    from core.settings import DEFAULT_SINK_BLOCK

    return ClickHouseSink.load(DEFAULT_SINK_BLOCK)


def _recorder_rows(sql: str, recorder: str) -> list[tuple]:
    with _sink().connect() as reader:
        return [tuple(row) for row in reader.query(sql, {"r": recorder})]


def segment_rows(recorder: str) -> list[tuple]:
    """Every `segments` row of the recorder (no FINAL: copies would show)."""
    return _recorder_rows(
        "SELECT channel, segment, start, output_path, version_key, flow_run_id FROM nvrflow.segments "
        "WHERE recorder = {r:String} ORDER BY channel, segment, flow_run_id",
        recorder,
    )


def detection_rows(recorder: str) -> list[tuple]:
    return _recorder_rows(
        "SELECT channel, segment, frame_time, rank, label, score, version_key FROM nvrflow.detections "
        "WHERE recorder = {r:String} ORDER BY channel, segment, frame_time, rank, version_key",
        recorder,
    )


def assert_exactly_once(recorder: str, segment_names: set[str]) -> tuple[int, int]:
    """Every segment of the window once, every detection once; (segments, detections)."""
    rows = segment_rows(recorder)
    names = [row[1] for row in rows]
    assert sorted(names) == sorted(segment_names), rows  # each once, none missing
    detections = detection_rows(recorder)
    distinct = {(row[0], row[1], row[2], row[3]) for row in detections}
    assert detections and len(detections) == len(distinct), (len(detections), len(distinct))
    assert {row[1] for row in detections} == segment_names
    return len(rows), len(detections)


def exports_of(cluster: Cluster, role: str, recorder: str) -> list[str]:
    folder = cluster.data_dir(role) / "exports" / recorder
    return sorted(p.stem for p in folder.rglob("*.ps")) if folder.exists() else []  # not the .part
