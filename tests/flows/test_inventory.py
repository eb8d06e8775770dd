"""The Excel inventory: validation of every row first, then idempotent blocks and limits."""

from __future__ import annotations

from pathlib import Path

import pytest
from openpyxl import Workbook

from deployments.sample_inventory import HEADER
from flows.inventory import InventoryError, parse_channels, read_workbook

SECRET = "s3cr3t-Pa55"


def _book(path: Path, rows: list[list], header: list[str] = HEADER) -> Path:
    book = Workbook()
    sheet = book.active
    sheet.append(header)
    for row in rows:
        sheet.append(row)
    book.save(path)
    return path


def test_channel_lists():
    assert parse_channels("1-4,9") == [1, 2, 3, 4, 9]
    assert parse_channels(3) == [3]
    assert parse_channels("2; 1") == [1, 2]
    refusals = {
        "": "no channel given",
        "a": "'a' is not a channel number or range",
        "4-1": "range '4-1' runs backwards",
    }
    for bad, reason in refusals.items():
        with pytest.raises(ValueError, match=reason):
            parse_channels(bad)


def test_the_bounds_are_the_recorder_blocks(tmp_path):
    """One set of defaults and bounds: a row is checked by building its block."""
    from blocks.recorder import MAX_CHANNEL, MAX_SLOTS, HikvisionRecorder

    rows = [["nvr-x", "10.1.1.1", "", "", SECRET, "0,2", MAX_SLOTS + 1, "s", "yes"],
            ["nvr-y", "10.1.1.2", "", "", SECRET, f"1-{MAX_CHANNEL + 1}", "", "s", "yes"],
            ["nvr-z", "10.1.1.3", "", "", SECRET, "3", "", "", ""]]  # fmt: skip
    with pytest.raises(InventoryError) as refused:
        read_workbook(_book(tmp_path / "bounds.xlsx", rows[:2]))
    said = str(refused.value)
    assert f"row 2, column channels ('0,2'): channels must be 1..{MAX_CHANNEL}" in said, said
    assert (
        f"row 2, column max_concurrent_downloads ({MAX_SLOTS + 1}): Input should be less than or equal to {MAX_SLOTS}"
        in said
    )
    assert f"row 3, column channels ('1-{MAX_CHANNEL + 1}'): channels must be 1..{MAX_CHANNEL}" in said
    (row,) = read_workbook(_book(tmp_path / "defaults.xlsx", rows[2:]))
    defaults = HikvisionRecorder(host="10.1.1.3", password=SECRET)
    assert (row.block.port, row.block.username, row.block.max_concurrent_downloads, row.block.enabled) == (
        defaults.port, defaults.username, defaults.max_concurrent_downloads, defaults.enabled,
    )  # fmt: skip


def test_sample_workbook_is_valid():
    rows = read_workbook(Path(__file__).parents[2] / "deployments" / "inventory.sample.xlsx")
    assert [r.name for r in rows] == ["nvr-warehouse-1", "dvr-gate"]
    assert rows[0].block.channels == list(range(1, 9)) and rows[1].block.enabled is False
    assert [r.block.classify_from for r in rows] == ["sub", "main"]


def test_every_bad_row_and_column_is_named_and_no_password_shown(tmp_path):
    path = _book(
        tmp_path / "bad.xlsx",
        [
            ["nvr-a", "10.0.0.1", 80, "admin", SECRET, "1,2", 2, "x", "yes"],
            ["nvr-a", "10.0.0.2", 80, "admin", SECRET, "1", 2, "x", "yes"],
            ["Bad Name", "not a host!", 70000, "admin", SECRET, "1-x", 0, "x", "maybe"],
        ],
    )
    with pytest.raises(InventoryError) as err:
        read_workbook(path)
    text = str(err.value)
    for expected in ("row 3, column name ('nvr-a'): duplicate of row 2", "row 4, column name",
                     "row 4, column host", "row 4, column port", "row 4, column channels",
                     "row 4, column max_concurrent_downloads", "row 4, column enabled"):  # fmt: skip
        assert expected in text
    assert SECRET not in text


def test_missing_columns_and_unreadable_files(tmp_path):
    path = _book(tmp_path / "cols.xlsx", [["nvr-a", "1"]], header=["name", "port"])
    with pytest.raises(InventoryError, match="missing column.*host, channels"):
        read_workbook(path)
    junk = tmp_path / "junk.xlsx"
    junk.write_bytes(b"not a zip")
    with pytest.raises(InventoryError, match="junk.xlsx: not a readable"):
        read_workbook(junk)


@pytest.mark.stack
def test_sync_creates_blocks_and_limits_once(stack, tmp_path):
    from prefect.client.orchestration import get_client

    from blocks.recorder import HikvisionRecorder
    from flows.inventory import sync_inventory

    rows = [["site-a-nvr", "10.1.1.1", 80, "admin", SECRET, "1-3", 3, "site a", "yes"],
            ["site-b-dvr", "dvr.example.net", 8000, "op", SECRET, "1", 1, "site b", "no"]]  # fmt: skip
    path = _book(tmp_path / "inv.xlsx", rows)
    first = sync_inventory(str(path))
    assert "site-a-nvr: block created" in first and "recorder:site-a-nvr: limit None -> 3" in first
    assert sync_inventory(str(path)) == []  # idempotent
    block = HikvisionRecorder.load("site-a-nvr")
    assert block.channels == [1, 2, 3] and block.password.get_secret_value() == SECRET
    # An empty password keeps the stored one; a changed limit is updated.
    rows[0][4], rows[0][6] = "", 1
    changed = sync_inventory(str(_book(tmp_path / "inv2.xlsx", rows)))
    assert changed == ["site-a-nvr: block updated", "recorder:site-a-nvr: limit 3 -> 1"]
    assert HikvisionRecorder.load("site-a-nvr").password.get_secret_value() == SECRET
    with get_client(sync_client=True) as client:
        assert client.read_global_concurrency_limit_by_name("recorder:site-a-nvr").limit == 1
    # A bad workbook changes nothing.
    rows[1][1] = "bad host!"
    rows[0][6] = 4
    with pytest.raises(InventoryError):
        sync_inventory(str(_book(tmp_path / "inv3.xlsx", rows)))
    with get_client(sync_client=True) as client:
        assert client.read_global_concurrency_limit_by_name("recorder:site-a-nvr").limit == 1


def test_a_bad_schedule_is_named(tmp_path):
    rows = [["nvr-x", "10.1.1.1", 80, "admin", SECRET, "1", 1, "s", "yes", "every hour"]]
    with pytest.raises(
        InventoryError, match=r"row 2, column schedule \('every hour'\): not a cron expression"
    ):
        read_workbook(_book(tmp_path / "cron.xlsx", rows))


def test_classify_from_is_main_or_sub(tmp_path):
    rows = [
        ["nvr-x", "10.1.1.1", 80, "admin", SECRET, "1", 1, "s", "yes", "", "Sub"],
        ["nvr-y", "10.1.1.2", 80, "admin", SECRET, "1", 1, "s", "yes", ""],
    ]
    assert [r.block.classify_from for r in read_workbook(_book(tmp_path / "streams.xlsx", rows))] == [
        "sub",
        "main",
    ]
    rows[1].append("third")
    with pytest.raises(
        InventoryError, match=r"row 3, column classify_from \('third'\): Input should be 'main' or 'sub'"
    ):
        read_workbook(_book(tmp_path / "bad-stream.xlsx", rows))


def test_each_recorder_gets_its_schedule_and_a_disabled_one_is_paused(stack, tmp_path):
    from flows.inventory import sync_inventory
    from flows.schedules import state_of

    rows = [["cron-on", "10.1.1.7", 80, "admin", SECRET, "1", 1, "depot a", "yes", "15 * * * *"],
            ["cron-off", "10.1.1.8", 80, "admin", SECRET, "1", 1, "depot a", "no", ""]]  # fmt: skip
    changes = sync_inventory(str(_book(tmp_path / "cron.xlsx", rows)))
    assert "recorder-pipeline/cron-on: created, 15 * * * * (running)" in changes, changes
    assert "recorder-pipeline/cron-off: created, 5 * * * * (paused)" in changes, changes
    assert "work queue site-depot-a created" in " ".join(changes)
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        order = [q.name for q in client.read_work_queues(work_pool_name="nvrflow-local")]
    # Served in this order: by-hand runs, then every site's live queue, then the backfill queues.
    assert order.index("default") < order.index("site-depot-a") < order.index("site-depot-a-backfill"), order
    assert all(
        order.index(q) < order.index("site-depot-a-backfill") for q in order if not q.endswith("-backfill")
    ), order
    on, schedule = state_of("cron-on")
    assert on == "running" and schedule is not None and schedule.schedule.cron == "15 * * * *"
    assert state_of("cron-off")[0] == "disabled"
    from flows.schedules import set_active

    set_active("cron-on", False)  # nothing of this test should fire later in the session


@pytest.mark.stack
def test_the_sample_workbook_syncs_on_a_fresh_stack_and_its_disabled_recorder_stays_disabled(stack):
    """Its disabled row has no password: nothing calls that recorder until it is enabled."""
    import os
    import subprocess
    import sys

    from blocks.recorder import HikvisionRecorder
    from flows.inventory import sync_inventory
    from flows.schedules import resume, state_of

    sample = Path(__file__).parents[2] / "deployments" / "inventory.sample.xlsx"
    changes = sync_inventory(str(sample))
    assert "dvr-gate: block created" in changes, changes
    assert HikvisionRecorder.load("dvr-gate").enabled is False
    assert state_of("dvr-gate")[0] == "disabled"
    with pytest.raises(
        ValueError, match="'dvr-gate' is disabled in the inventory .enabled: no., so it stays paused"
    ):
        resume("dvr-gate")
    listed = subprocess.run(
        [sys.executable, "-m", "flows.schedules", "list"], capture_output=True, text=True, timeout=120,
        env=os.environ, check=True,
    ).stdout  # fmt: skip
    assert any(line.split()[:2] == ["dvr-gate", "disabled"] for line in listed.splitlines()), listed
    refused = subprocess.run(
        [sys.executable, "-m", "flows.schedules", "resume", "dvr-gate"], capture_output=True, text=True,
        timeout=120, env=os.environ,
    )  # fmt: skip
    assert refused.returncode == 2 and "disabled in the inventory" in refused.stderr, refused.stderr
    assert state_of("dvr-gate")[0] == "disabled"
