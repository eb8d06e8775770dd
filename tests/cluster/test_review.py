"""The review app on one host plays a clip that a worker on another host made.

A scripted channel, whose first person comes into view 6 s into the window's one segment, is run through
the pipeline with the detector on worker host B only (`ops.use_only`). B's persist stage copies
the segment's MP4 into the video store, the shared folder every host reaches at one path
(`Cluster.store`), and ClickHouse's `objects` rows name it. B's own MP4, in its data folder, is
then deleted: the app on the review host finds the person through ClickHouse and serves its
clip from the store by byte ranges, to an HTTP client and to headless Chromium in the test's
namespace, which plays it from the person's second.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from stack.simulator.scenes import DEMO_SCRIPTS, truth
from tests.browser import PLAYING, RECORD_FIRST_PLAYING, chromium_tab
from tests.cluster import ops
from tests.cluster.conftest import DETECTOR_BLOCK, SCRIPT, WINDOW_START, Cluster

pytestmark = pytest.mark.cluster

B = "worker-b"
HTTP_TIMEOUT_S = 30


@pytest.fixture(scope="module")
def person(cluster: Cluster) -> Iterator[dict[str, Any]]:
    """The scripted recorder's window run with the detector on B; the person as the app's API gives it."""
    rec = cluster.scripted
    assert rec is not None
    ops.use_only(cluster, B)
    try:
        begin, end = cluster.scripted_window
        run = ops.run_to_completion(
            ops.PIPELINE, recorder=rec.name, start=begin.isoformat(), end=end.isoformat(),
            model_block=DETECTOR_BLOCK,
        )  # fmt: skip
        assert ops.worker_of(run) == B, run.labels
        # B's own MP4 gone: whatever the app serves, it reads from the store.
        ((_channel, _segment, _start, output, *_),) = ops.segment_rows(rec.name)
        made = Path(output)
        assert made.is_relative_to(cluster.data_dir(B)) and made.is_file(), output
        made.unlink()
        assert not cluster.store.is_relative_to(cluster.data_dir(B))

        with httpx.Client(base_url=cluster.review_url, timeout=HTTP_TIMEOUT_S) as client:
            assert client.get("/api/objects").status_code == 401
            login = client.post("/login", data={"password": str(cluster.review_password), "next": "/"})
            assert login.status_code == 303, login.text
            found = client.get("/api/objects", params={"recorder": rec.name, "label": "person"})
        assert found.status_code == 200, found.text
        objects = found.json()["objects"]
        assert objects, "no person found"
        yield min(objects, key=lambda o: o["start"])  # the script's first person (the window's only one)
    finally:
        ops.all_workers(cluster)


def test_the_app_serves_a_clip_made_on_another_host_by_byte_ranges(cluster: Cluster, person):
    assert person["clip"].startswith("clips/") and person["clip_url"] == f"/store/{person['clip']}"
    stored = (cluster.store / person["clip"]).read_bytes()
    assert len(stored) > 10_000
    # The clip plays from where the script says the person comes into view (give or take a
    # sampled frame and the detector's first sight of a body at the edge).
    (seen,) = [a for a in truth(DEMO_SCRIPTS[SCRIPT], WINDOW_START, fps=10) if a["id"] == "p1"]
    begin, _end = cluster.scripted_window
    expected = (datetime.fromisoformat(seen["first_visible_utc"]) - begin).total_seconds()
    assert abs(person["clip_offset_s"] - expected) <= 2, (person["clip_offset_s"], expected)
    first, last = 1000, 4999
    with httpx.Client(
        base_url=cluster.review_url, timeout=HTTP_TIMEOUT_S, auth=("ops", str(cluster.review_password))
    ) as client:
        part = client.get(person["clip_url"], headers={"Range": f"bytes={first}-{last}"})
        assert part.status_code == 206, part.text
        assert part.headers["content-range"] == f"bytes {first}-{last}/{len(stored)}"
        assert part.content == stored[first : last + 1]
        thumbnail = client.get(person["thumbnail_url"])
        assert thumbnail.status_code == 200 and thumbnail.content[:3] == b"\xff\xd8\xff"
    leaked = [
        p.name for p in cluster.logs().iterdir() if str(cluster.review_password) in p.read_text("latin-1")
    ]
    assert not leaked, f"the review password appears in {leaked}"


def test_chromium_plays_the_clip_from_the_persons_second(cluster: Cluster, person, tmp_path):
    from playwright.sync_api import expect

    with chromium_tab(tmp_path / "last.png") as page:
        page.add_init_script(RECORD_FIRST_PLAYING)
        page.goto(cluster.review_url + person["page_url"])  # to the login page, and back
        page.get_by_label("Password").fill(str(cluster.review_password))
        page.get_by_role("button", name="Log in").click()
        expect(page).to_have_url(cluster.review_url + person["page_url"])
        page.wait_for_function(PLAYING, timeout=60_000)
        position = page.evaluate("() => window.firstPlaying")
        assert abs(position - person["clip_offset_s"]) < 0.5, (position, person["clip_offset_s"])
        # It plays on from there.
        page.wait_for_function(f"() => document.querySelector('video#clip').currentTime > {position + 0.2}")
    print(
        f"\nreview host plays {person['clip']} (made on {B}) from {position:.2f} s; "
        f"the object's second {person['clip_offset_s']:.2f} s"
    )
