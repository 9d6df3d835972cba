"""Driving the demo page in a real browser (headless Chromium through Playwright): open each tab, run its
example, take a screenshot. Used by the browser test and by `scripts/demo_screenshots.py` for docs/."""

from __future__ import annotations

import shutil
from pathlib import Path

from vision_long.demo.app import TAB_TITLES

ACTIONS = {"search": "Search", "generate": "Generate", "ask": "Ask"}  # each tab's primary button
WINDOW = {"width": 1280, "height": 1100}


def chromium_path() -> str | None:
    """The system Chromium (Debian's `chromium` package), or None."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def screenshot_tabs(url: str, out_dir: str | Path, run: bool = True, timeout_s: float = 300,
                    tabs: tuple[str, ...] = tuple(TAB_TITLES)) -> dict[str, Path]:
    """Open `url`, and for each of `tabs`: click it, (with `run`) press its primary button and wait until the page
    is idle, then write `out_dir`/demo-TAB.png. Returns tab -> screenshot path."""
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    if executable is None:
        raise FileNotFoundError("no chromium on PATH; install Debian's 'chromium' package")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shots = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox", "--disable-dev-shm-usage"])
        page = browser.new_page(viewport=WINDOW)
        page.goto(url, wait_until="networkidle")
        for tab in tabs:
            page.get_by_role("tab", name=TAB_TITLES[tab]).click()
            if run:
                page.get_by_role("button", name=ACTIONS[tab], exact=True).click()
                page.wait_for_timeout(500)
                page.wait_for_function("!document.querySelector('.progress-text, .eta-bar')",
                                       timeout=timeout_s * 1000)
            page.wait_for_timeout(500)
            shots[tab] = out_dir / f"demo-{tab}.png"
            page.screenshot(path=str(shots[tab]), full_page=True)
        browser.close()
    return shots
