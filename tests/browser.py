"""A tab of Debian's Chromium, headless, driven by Playwright (its own browser download is unreachable)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]

# Where the clip was when it started playing (media events do not bubble: caught on the way down).
RECORD_FIRST_PLAYING = """document.addEventListener("playing", (e) => {
  if (window.firstPlaying === undefined) window.firstPlaying = e.target.currentTime;
}, true);"""
# The review app's clip is playing (and RECORD_FIRST_PLAYING saw where it started).
PLAYING = """() => {
  const v = document.querySelector("video#clip");
  return v && !v.paused && v.readyState >= 2 && window.firstPlaying !== undefined;
}"""


@contextmanager
def chromium_tab(screenshot: Path, width: int = 1400, height: int = 1200) -> Iterator[Any]:
    """A new page (30 s timeouts); a screenshot of it goes to `screenshot` at the end, pass or fail."""
    if not Path(CHROMIUM).exists():
        pytest.skip("headless Chromium is not installed (make browser)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": width, "height": height})
        context.set_default_timeout(30_000)
        tab = context.new_page()
        try:
            yield tab
        finally:
            tab.screenshot(path=screenshot)
            context.close()
            browser.close()
