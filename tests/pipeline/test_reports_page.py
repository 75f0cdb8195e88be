"""reports/index.html in a real headless browser (Debian's Chromium, driven by Playwright): after the summarize
stage, every image on the page loads and the console stays clean. Needs `bash scripts/setup.sh --test-packages`;
without Chromium the test fails with that instruction. Deselect with ``-m "not browser"``."""
import shutil
from pathlib import Path

import pytest

from tests.helpers.workspace import run

pytestmark = [pytest.mark.pipeline, pytest.mark.browser]


def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        if path := shutil.which(name):
            return path
    pytest.fail("no Chromium on PATH: run `bash scripts/setup.sh --test-packages` (Debian's chromium)")


def test_every_image_loads_and_the_console_stays_clean(clone):
    from playwright.sync_api import sync_playwright

    run(["dvc", "repro", "--single-item", "summarize"], clone)
    page_file = clone / "reports/index.html"
    pngs = [p for p in (clone / "reports").rglob("*.png")]
    assert pngs, "the clone has no report images to show"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        try:
            page = browser.new_page()
            problems: list[str] = []
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}")
                    if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("requestfailed", lambda r: problems.append(f"failed: {r.url}"))
            page.goto(Path(page_file).resolve().as_uri(), wait_until="load")
            page.evaluate("() => Promise.all([...document.images].map(i => { i.loading = 'eager';"
                          " return i.decode().catch(() => null); }))")
            images = page.evaluate("() => [...document.images].map(i => [i.getAttribute('src'), i.complete,"
                                   " i.naturalWidth])")
            links = page.evaluate("() => [...document.querySelectorAll('a[href$=\".md\"]')].length")
        finally:
            browser.close()
    assert len(images) == len(pngs)
    assert [src for src, complete, width in images if not (complete and width > 0)] == []
    assert problems == []
    assert links >= len(list((clone / "reports").glob("*/report.md")))
