"""A 10-recorder workbook, dispatched through the deployment: every recorder's limit holds.

Each simulated recorder counts the downloads it serves at once (`max_active_downloads`);
the pipeline submits every segment's download together, so without the limit
`recorder:<name>` a recorder would see as many downloads at once as it has segments.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from openpyxl import Workbook

from deployments.sample_inventory import HEADER
from stack.ports import free_port
from stack.simulator import control

pytestmark = pytest.mark.stack

RECORDERS = 10
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


def test_ten_recorders_dispatch_within_their_limits(stack, fleet):
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
