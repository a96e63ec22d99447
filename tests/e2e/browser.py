"""Driving the studio in Debian's Chromium with Playwright (used by the browser test and the screenshot script).

Never `playwright install`: it downloads browser builds. The system Chromium (`apt-get install chromium`)
is driven through `executable_path`, headless, with every background network feature off.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1280, "height": 900}


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


def launch_browser(playwright):
    return playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)


def open_studio(browser, url: str):
    page = browser.new_page(viewport=VIEWPORT)
    page.goto(url)
    page.wait_for_selector("#t2i-prompt textarea", timeout=60_000)
    return page


def open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name, exact=True).click()


def text_of(page, elem_id: str) -> str:
    return page.locator(f"#{elem_id}").inner_text().strip()


def wait_for_text(page, elem_id: str, prefix: str, timeout: float = 60.0) -> str:
    """Wait until the element's text starts with `prefix`; returns the text."""
    deadline = time.monotonic() + timeout
    while True:
        text = text_of(page, elem_id)
        if text.startswith(prefix):
            return text
        if time.monotonic() > deadline:
            raise TimeoutError(f"#{elem_id} never showed {prefix!r}; last text: {text!r}")
        time.sleep(0.05)


def upload(page, elem_id: str, path: str | Path) -> None:
    """Upload a file into an image input and wait until it shows."""
    page.locator(f"#{elem_id} input[type=file]").set_input_files(str(path))
    page.wait_for_selector(f"#{elem_id} img", timeout=30_000)


def record_image_sources(page, elem_id: str, status_id: str) -> None:
    """Start recording (in the page) each new src of the element's <img> with the status text at that time."""
    page.evaluate(
        """([elemId, statusId]) => {
            window.__unixSources = [];
            const root = document.getElementById(elemId);
            const note = () => {
                const img = root.querySelector('img');
                const status = document.getElementById(statusId);
                if (!img) return;
                const last = window.__unixSources[window.__unixSources.length - 1];
                if (!last || last.src !== img.src) {
                    window.__unixSources.push({src: img.src, status: status ? status.innerText.trim() : ''});
                }
            };
            new MutationObserver(note).observe(root, {subtree: true, childList: true, attributes: true});
            note();
        }""",
        [elem_id, status_id],
    )


def recorded_sources(page) -> list[dict]:
    return page.evaluate("() => window.__unixSources || []")


def save_screenshot(page, path: Path, *, full_page: bool = True, colors: int | None = None) -> Path:
    """A screenshot, optionally reduced to a `colors` palette (much smaller PNGs for docs)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=full_page)
    if colors:
        from PIL import Image

        with Image.open(path) as shot:
            small = shot.convert("RGB").quantize(colors=colors, method=Image.Quantize.MEDIANCUT)
        small.save(path, optimize=True)
    return path
