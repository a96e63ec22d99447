"""End-to-end test in a real browser: Debian's Chromium driven by Playwright against a local studio.

Open the studio, type a prompt, generate, see the preview change at least twice before the final image,
stop a second run mid-way, ask a question in Understand, open Routing for that run. Screenshots of each
step go to test-artifacts/e2e/. The tests share one page and run in file order, each going on from the
state the previous one left. Skipped when Chromium or the playwright package is missing (CI installs
both: `apt-get install -y chromium` and `pip install playwright`).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.e2e.browser import chromium_path

pytest.importorskip("playwright.sync_api", reason="needs the playwright package (pip install playwright)")
if chromium_path() is None:
    pytest.skip("needs Chromium (apt-get install -y chromium)", allow_module_level=True)

from playwright.sync_api import sync_playwright  # noqa: E402

from studio.app import build_app  # noqa: E402
from studio.examples import picture  # noqa: E402
from tests.e2e import browser as b  # noqa: E402
from tests.e2e.studio_server import launched, paced  # noqa: E402
from unix_core import UniXPipeline  # noqa: E402

pytestmark = pytest.mark.slow
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "e2e"
PROMPT = "a large red circle at the center on a white background"


@pytest.fixture(scope="module")
def pipe():
    return UniXPipeline.from_pretrained()  # the embedded default model


@pytest.fixture(scope="module")
def page(pipe):
    with launched(build_app(pipe)) as url, sync_playwright() as pw:
        browser = b.launch_browser(pw)
        try:
            yield b.open_studio(browser, url)
        finally:
            browser.close()


@pytest.fixture(scope="module")
def scene_png(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("studio-e2e-images") / "scene.png"
    picture(PROMPT).save(path)
    return path


def shot(page, name: str) -> None:
    b.save_screenshot(page, ARTIFACTS / f"{name}.png")


def test_generate_streams_previews_then_the_image(page, pipe):
    page.fill("#t2i-prompt textarea", PROMPT)
    b.record_image_sources(page, "t2i-preview", "t2i-status")
    with paced(pipe, 0.03):  # about 2 s a picture, so that a browser sees it fill in
        page.click("#t2i-generate")
        b.wait_for_text(page, "t2i-status", "Generating", timeout=120)
        shot(page, "01_generating")
        done = b.wait_for_text(page, "t2i-status", "Done", timeout=180)
    shot(page, "02_done")
    sources = [s["src"] for s in b.recorded_sources(page)]
    final = page.locator("#t2i-preview img").get_attribute("src")
    assert sources and sources[-1] == final
    previews = set(sources[:-1])
    assert final not in previews, "the final image should differ from every preview"
    assert len(previews) >= 2, f"the preview changed {len(previews)} time(s) before the final image"
    assert f"{pipe.grid_hw[0] * pipe.grid_hw[1]} codes" in done
    page.wait_for_selector("#t2i-gallery img", timeout=30_000)


def test_run_card_loads_back_into_the_controls(page):
    seed = page.locator("#t2i-seed input").input_value()
    page.fill("#t2i-prompt textarea", "something else")
    page.locator("#t2i-card-box").get_by_text("Run card (reproduce a run)").click()
    page.click("#t2i-load-card")
    b.wait_for_text(page, "t2i-status", "Run card loaded", timeout=30)
    assert page.locator("#t2i-prompt textarea").input_value() == PROMPT
    assert page.locator("#t2i-seed input").input_value() == seed
    assert not page.locator("#t2i-randomize input").is_checked()
    page.locator("#t2i-randomize input").check()


def test_stop_ends_a_second_run_midway(page, pipe):
    calls = []
    with paced(pipe, 0.03, calls=calls):
        page.fill("#t2i-num-images input[type=number]", "4")
        page.locator("#t2i-num-images input[type=number]").press("Enter")
        page.click("#t2i-generate")
        b.wait_for_text(page, "t2i-status", "Generating: code", timeout=120)
        page.click("#t2i-stop")
        status = b.wait_for_text(page, "t2i-status", "Stopped at code", timeout=30)
        time.sleep(0.5)
        settled = len(calls)
        time.sleep(0.5)
        shot(page, "03_stopped")
        assert len(calls) == settled, "the model kept running after Stop"
        assert settled < pipe.grid_hw[0] * pipe.grid_hw[1], "the run finished instead of stopping"
        assert not b.text_of(page, "t2i-status").startswith("Done"), status


def test_understand_answers_a_question(page, scene_png):
    b.open_tab(page, "Understand")
    b.upload(page, "und-image", scene_png)
    page.fill("#und-question textarea", "what color is the circle?")
    page.click("#und-ask")
    status = b.wait_for_text(page, "und-status", "Done", timeout=120)
    shot(page, "04_understand")
    assert "tokens" in status


def test_routing_shows_the_last_run(page):
    page.click("#und-to-routing")
    summary = b.wait_for_text(page, "rt-summary", "Question:", timeout=120)
    page.wait_for_selector("#rt-heatmap img", timeout=60_000)
    shot(page, "05_routing")
    assert "split" in summary and "shared" in summary
    assert page.get_by_role("tab", name="Routing", exact=True).get_attribute("aria-selected") == "true"
