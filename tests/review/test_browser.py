"""The review app in headless Chromium: log in, find a person on a channel, watch it from its second."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from review.queries import object_ref
from tests.review.conftest import PASSWORD, ReviewServer

playwright = pytest.importorskip("playwright.sync_api", reason="pip install -e '.[dev]' (playwright)")
from playwright.sync_api import Page, expect  # noqa: E402

from tests.browser import PLAYING, RECORD_FIRST_PLAYING, chromium_tab  # noqa: E402


@pytest.fixture
def page(tmp_path) -> Iterator[Page]:
    with chromium_tab(tmp_path / "last.png", height=1200) as tab:
        yield tab


def test_find_a_person_and_watch_it_from_its_second(review: ReviewServer, page: Page):
    page.add_init_script(RECORD_FIRST_PLAYING)
    page.goto(review.url + "/")
    expect(page).to_have_url(re.compile(r"/login\?next=%2F$"))
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(review.url + "/")

    page.get_by_label("Recorder").select_option("nvr-01")
    page.get_by_label("Channel").select_option("1")
    page.get_by_label("Label").select_option("person")
    page.get_by_role("button", name="Search").click()
    results = page.locator("li.object")
    expect(results).to_have_count(24)  # a page
    expect(results.locator(".label").first).to_have_text("person")
    # Every thumbnail arrived and decoded.
    page.wait_for_function(
        "() => [...document.querySelectorAll('li.object img')].every(i => i.complete && i.naturalWidth > 0)"
    )

    newest = max((r for r in review.rows if r.recorder == "nvr-01" and r.channel == 1), key=lambda r: r.start)
    results.first.locator("a").first.click()
    expect(page).to_have_url(review.url + f"/objects/{object_ref(newest)}")
    page.wait_for_function(PLAYING, timeout=60_000)
    position = page.evaluate("() => window.firstPlaying")
    assert abs(position - newest.clip_offset_s) < 0.5, (position, newest.clip_offset_s)
    # It plays on from there.
    page.wait_for_function(f"() => document.querySelector('video#clip').currentTime > {position + 0.2}")
    assert page.evaluate("() => document.querySelector('video#clip').muted")


def test_wrong_password_leaves_the_login_page_and_no_session(review: ReviewServer, page: Page):
    page.goto(review.url + "/")
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_have_text("Wrong password.")
    assert page.context.cookies() == []
    assert page.context.request.get(review.url + "/api/objects").status == 401  # with the browser's cookies
    page.goto(review.url + "/")
    expect(page).to_have_url(re.compile(r"/login\?next="))
