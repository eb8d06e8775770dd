"""Many machines, one fleet: a dispatch over eight recorders on two recorder hosts runs on
both worker hosts, no recorder ever serves more downloads at once than its limit, and
ClickHouse on the services host holds every segment once.

Which worker ran a flow run: Prefect 3's worker labels every run it submits with
`prefect.worker.name` (each worker here is started with `--name <its host>`); the run's
exports must then be in that worker's own data folder and in no other.
"""

from __future__ import annotations

import subprocess

import httpx
import pytest

from stack.simulator import control
from tests.cluster.conftest import ROLES, SEGMENTS, WORKERS, Cluster

pytestmark = pytest.mark.cluster

SS_TIMEOUT_S = 10


def _listening(cluster: Cluster, role: str) -> list[str]:
    done = subprocess.run(
        cluster.network.hosts[role].argv(["ss", "-ltnH"]),
        capture_output=True,
        text=True,
        timeout=SS_TIMEOUT_S,
        check=True,
    )
    return [line.split()[3] for line in done.stdout.splitlines() if line.strip()]


def test_hosts_are_private_and_the_api_wants_its_password(cluster):
    subnet = str(cluster.network.subnet)
    for role in ROLES:
        routes = cluster.network.routes(role)
        assert routes and all(r.startswith(subnet + " ") for r in routes), (role, routes)
        address = cluster.address(role)
        for local in _listening(cluster, role):
            # gRPC binds an IPv4 address as its IPv4-mapped IPv6 form: the same address.
            bound = local.rsplit(":", 1)[0].strip("[]").removeprefix("::ffff:")
            # The namespace's own loopback is private to the host (Prefect's runner listens there
            # for its flow-run subprocesses); a wildcard would be reachable from the bridge.
            assert bound in (address, "127.0.0.1"), (role, local)
    refused = httpx.post(f"{cluster.api_url}/flows/filter", json={}, timeout=10)
    assert refused.status_code == 401


def test_dispatch_runs_on_both_workers_within_each_recorders_limit(cluster):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    from blocks.clickhouse import ClickHouseSink
    from core.settings import DEFAULT_SINK_BLOCK
    from flows.dispatch import dispatch
    from flows.export import limit_name

    for rec in cluster.recorders:
        # ~3 s a download (67 kB clips): a recorder's downloads overlap when nothing limits them.
        control.set_faults(rec.port, host=rec.host, bandwidth_bps=20_000)
    start, end = cluster.window
    names = [rec.name for rec in cluster.recorders]
    states = dispatch(start, end, recorders=names, timeout_s=600)
    assert states == {name: "Completed" for name in names}

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["recorder-pipeline"])))
        slots = {
            name: client.read_global_concurrency_limit_by_name(limit_name(name)).active_slots
            for name in names
        }
    runs = [run for run in runs if run.parameters.get("recorder") in names]
    ran_on: dict[str, set[str]] = {}
    for run in runs:
        ran_on.setdefault(run.labels.get("prefect.worker.name", "?"), set()).add(run.parameters["recorder"])
    assert sorted(run.parameters["recorder"] for run in runs) == sorted(names)
    assert set(ran_on) == set(WORKERS), ran_on
    for worker, recorders in ran_on.items():
        exports = cluster.data_dir(worker) / "exports"
        # Only this test's recorders: other tests' runs leave their exports here too.
        assert {p.name for p in exports.iterdir() if p.name in names} == recorders, worker
    assert slots == {name: 0 for name in names}

    peaks = {}
    for rec in cluster.recorders:
        stats = control.stats(rec.port, host=rec.host)
        assert stats["downloads_completed"] == SEGMENTS, (rec.name, stats)
        peaks[rec.name] = stats["max_active_downloads"]
        assert peaks[rec.name] <= rec.limit, (rec.name, rec.limit, peaks)
    # The check means something only if downloads did overlap where the limit allowed it.
    assert max(peaks.values()) == 2, peaks

    sink = ClickHouseSink.load(DEFAULT_SINK_BLOCK)
    with sink.connect() as reader:
        rows = reader.query(
            "SELECT recorder, channel, segment, count() FROM nvrflow.segments GROUP BY recorder, channel, segment"
        )
    per_recorder: dict[str, int] = {}
    for recorder, _channel, _segment, copies in rows:
        if recorder not in names:
            continue  # another test's recorder
        assert copies == 1, (recorder, _segment, copies)
        per_recorder[recorder] = per_recorder.get(recorder, 0) + 1
    assert per_recorder == {name: SEGMENTS for name in names}


def test_no_log_holds_the_api_password(cluster):
    secret = str(cluster.auth_string)
    leaked = [p.name for p in cluster.logs().iterdir() if secret in p.read_text(errors="replace")]
    assert not leaked, f"the API auth string appears in {leaked}"
