"""A Prefect server restart, and a PostgreSQL restart, while a download runs.

The download is slowed (the simulator's `bandwidth_bps`) to last about 30 s; the restart
happens once the recorder says the download is under way. The run must complete by
itself, the recorder's slot must be free afterwards (the lease is given back, not left
taken), and ClickHouse must hold the segment.
"""

from __future__ import annotations

import pytest

from stack.simulator import control
from tests.cluster.conftest import OUTAGES, Cluster
from tests.polling import wait_until

pytestmark = pytest.mark.cluster

DOWNLOAD_SECONDS = 30


def _restart(cluster: Cluster, outage: str) -> None:
    if outage == "prefect":
        cluster.restart_prefect_server()
    else:
        cluster.pg_ctl("restart")
        cluster.wait_healthy()


@pytest.mark.parametrize("outage", OUTAGES)
def test_a_download_outlives_a_restart(cluster, outage):
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    from blocks.clickhouse import ClickHouseSink
    from core.settings import DEFAULT_SINK_BLOCK
    from flows.export import limit_name
    from flows.launch import PIPELINE_DEPLOYMENT

    rec = cluster.slow_recorders[outage]
    (segment,) = control.segments(rec.port, host=rec.host)
    control.set_faults(rec.port, host=rec.host, bandwidth_bps=max(1, segment["size"] // DOWNLOAD_SECONDS))
    start, end = cluster.window
    run = run_deployment(
        PIPELINE_DEPLOYMENT,
        parameters={"recorder": rec.name, "start": start.isoformat(), "end": end.isoformat()},
        timeout=0,
    )
    wait_until(
        "download under way",
        lambda: control.stats(rec.port, host=rec.host)["active_downloads"] >= 1,
        timeout=180,
    )
    _restart(cluster, outage)
    assert control.stats(rec.port, host=rec.host)["active_downloads"] >= 1, "restart outlasted the download"

    def final_state():
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(run.id).state
        return state if state is not None and state.is_final() else None

    state = wait_until("the run's final state", final_state, timeout=300)
    assert state.is_completed(), (state.type, state.message)

    stats = control.stats(rec.port, host=rec.host)
    assert stats["downloads_completed"] >= 1, stats
    with get_client(sync_client=True) as client:
        limit = client.read_global_concurrency_limit_by_name(limit_name(rec.name))
    assert limit.active_slots == 0, f"{limit_name(rec.name)} still holds {limit.active_slots} slot(s)"

    sink = ClickHouseSink.load(DEFAULT_SINK_BLOCK)
    with sink.connect() as reader:
        rows = reader.query(
            "SELECT segment, count() FROM nvrflow.segments WHERE recorder = {r:String} GROUP BY segment",
            {"r": rec.name},
        )
    assert [copies for _name, copies in rows] == [1], rows  # its one segment, once
    print(
        f"{outage} restart: downloads completed {stats['downloads_completed']}, failed {stats['downloads_failed']}"
    )
