"""Alerts through a Prefect notification block: a failed pipeline run and a stale outbox, received
by a local HTTP endpoint; each message names what it is about and carries no secret."""

from __future__ import annotations

import os
import queue
import time
from collections.abc import Iterator

import pytest

from stack.simulator import control
from stack.simulator.spec import demo_window, load_spec
from tests.support import next_message_about, webhook_receiver

pytestmark = pytest.mark.stack


@pytest.fixture
def receiver() -> Iterator[tuple[str, queue.Queue[dict]]]:
    with webhook_receiver() as hook:
        yield hook


@pytest.fixture
def alerts(stack, receiver):
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    from work_pools.automations import apply

    url, got = receiver
    CustomWebhookNotificationBlock(
        name="nvrflow alerts", url=url, json_data={"subject": "{{subject}}", "body": "{{body}}"},
        allow_private_urls=True,
    ).save("nvrflow-alerts", overwrite=True)  # fmt: skip
    lines = apply()
    assert any("nvrflow alert failed or crashed pipeline run" in line for line in lines), lines
    return got


def test_a_failed_pipeline_run_notifies_naming_recorder_and_window(stack, alerts):
    from core.windows import Window
    from flows.launch import start_pipeline_runs, wait_for_runs

    spec = load_spec(stack.data_dir / "stack" / "simulator.json")
    port = next(r.port for r in spec.recorders if r.name == "nvr-03")
    start, end = demo_window()
    control.set_faults(port, wrong_password=True)
    try:
        runs = start_pipeline_runs({"nvr-03": "simulated"}, Window(start, end))
        assert wait_for_runs(runs, timeout_s=300) == {"nvr-03": "Failed"}
    finally:
        control.reset_faults(port)
    message = next_message_about(alerts, "nvr-03")
    text = message["subject"] + "\n" + message["body"]
    assert f"nvr-03 {start:%Y-%m-%d %H:%M}" in message["subject"] and "Failed" in message["subject"], text
    assert "wrong credentials for recorder nvr-03" in message["body"], text
    assert stack.recorder_password not in text and stack.clickhouse_password not in text


def test_a_stale_outbox_notifies(stack, alerts, tmp_path):
    from blocks import clickhouse_outbox
    from blocks.clickhouse import Batch, ClickHouseUnavailable
    from blocks.clickhouse_schema import WindowRow
    from core.settings import outbox_dir
    from flows.persist import flush_outbox
    from stack.supervisor import start_service, stop_service

    batch = Batch(
        WindowRow.TABLE,
        "windows/alert-test",
        (WindowRow("alert-test", 1, demo_window()[0], 0, "-", demo_window()[0]),),
    )
    stop_service("clickhouse-gateway", stack.data_dir)
    try:
        kept = clickhouse_outbox.keep(batch, outbox_dir())
        an_hour_ago = time.time() - 3700
        os.utime(kept, (an_hour_ago, an_hour_ago))
        state = flush_outbox(alert_after_minutes=60, return_state=True)
        assert state.is_failed() and isinstance(state.result(raise_on_failure=False), ClickHouseUnavailable)
        message = next_message_about(alerts, "outbox")
        assert "1 batch(es)" in message["body"] and str(outbox_dir()) in message["body"], message
        assert "61 minutes" in message["body"] or "62 minutes" in message["body"], message
    finally:
        start_service("clickhouse-gateway", stack.data_dir)
    assert flush_outbox() == {"sent": 1, "remaining": 0}
