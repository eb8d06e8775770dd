"""Data valid wherever a task runs.

Cached results that name a file (an export, an MP4) name the file of the host that made it; a
run on another worker host must make its own (download and transcode run again) and may take
what names no file (the classification, Cached), and ClickHouse's rows stay as they were.

The outbox is shared by the worker hosts (NVRFLOW_OUTBOX): rows kept by a host that could not
reach ClickHouse are sent by a flush that runs on the other one.

Where a run lands is chosen by stopping the other worker (`ops.use_only`); its label
`prefect.worker.name` says where it ran.
"""

from __future__ import annotations

import pytest

from blocks import clickhouse_outbox
from stack.simulator import control
from tests.cluster import ops

pytestmark = pytest.mark.cluster

A, B = "worker-a", "worker-b"


@pytest.fixture
def workers_back(cluster):
    yield
    ops.all_workers(cluster)


def _pipeline_on(cluster, role, rec):
    ops.use_only(cluster, role)
    begin, end = cluster.window
    run = ops.run_to_completion(ops.PIPELINE, recorder=rec.name, start=begin.isoformat(), end=end.isoformat())
    assert ops.worker_of(run) == role, run.labels
    return run


def test_a_host_does_not_trust_another_hosts_files(cluster, workers_back):
    rec = cluster.single_use["cache-move"]
    names = {s["name"] for s in control.segments(rec.port, host=rec.host)}
    n = len(names)

    first = _pipeline_on(cluster, A, rec)
    assert ops.task_states(first.id) == {stage: ["Completed"] * n for stage in ops.STAGES}
    ops.assert_exactly_once(rec.name, names)
    segments, detections = ops.segment_rows(rec.name), ops.detection_rows(rec.name)
    assert set(ops.exports_of(cluster, A, rec.name)) == names

    # On B: A's export and MP4 are not B's files, so they are made again; the classification
    # names no file and is taken from the cache. The rows are the same rows (same tokens).
    second = _pipeline_on(cluster, B, rec)
    assert ops.task_states(second.id) == {
        "download": ["Completed"] * n,
        "transcode": ["Completed"] * n,
        "classify": ["Cached"] * n,
        "persist": ["Completed"] * n,
    }
    assert set(ops.exports_of(cluster, B, rec.name)) == names
    assert ops.segment_rows(rec.name) == segments
    assert ops.detection_rows(rec.name) == detections

    # Back on A: its own files are there, so everything cached is taken from the cache.
    third = _pipeline_on(cluster, A, rec)
    assert ops.task_states(third.id) == {
        "download": ["Cached"] * n,
        "transcode": ["Cached"] * n,
        "classify": ["Cached"] * n,
        "persist": ["Completed"] * n,
    }
    assert ops.segment_rows(rec.name) == segments
    assert ops.detection_rows(rec.name) == detections


def test_rows_one_host_could_not_send_are_sent_from_the_other(cluster, workers_back):
    rec = cluster.single_use["outbox"]
    names = {s["name"] for s in control.segments(rec.port, host=rec.host)}
    assert not clickhouse_outbox.pending(cluster.outbox)
    clickhouse = cluster.address("clickhouse")
    netns = cluster.network.hosts[A].netns
    # ClickHouse unreachable from A only: its host's address routed nowhere in A's namespace.
    cluster.run(None, ["ip", "-n", netns, "route", "add", "unreachable", f"{clickhouse}/32"], "route add")
    try:
        run = _pipeline_on(cluster, A, rec)
        kept = [clickhouse_outbox.read(path) for path in clickhouse_outbox.pending(cluster.outbox)]
        tables = sorted(batch.table for batch in kept)
        assert tables.count("segments") == len(names) and tables.count("detections") == len(names), tables
        assert {batch.scope[0] for batch in kept if batch.scope} == {rec.name}
        assert ops.segment_rows(rec.name) == [] and ops.detection_rows(rec.name) == []

        ops.use_only(cluster, B)
        flush = ops.run_to_completion(ops.FLUSH)
        assert ops.worker_of(flush) == B, flush.labels
    finally:
        cluster.run(None, ["ip", "-n", netns, "route", "del", "unreachable", f"{clickhouse}/32"], "route del")
    assert clickhouse_outbox.pending(cluster.outbox) == []
    segment_count, detection_count = ops.assert_exactly_once(rec.name, names)
    print(
        f"\noutbox: {len(kept)} batches kept by {A} (run {run.name}), sent by the flush on {B}: "
        f"{segment_count} segments, {detection_count} detections, each once"
    )
