"""Screenshots of every studio tab for the docs: runs the studio locally and drives it in Chromium.

    python scripts/screenshots.py                 # embedded model (or the tiny test checkpoint if absent)
    python scripts/screenshots.py --model PATH    # any checkpoint
    python scripts/screenshots.py --out DIR       # default: docs/screenshots

Needs Debian's `chromium` and the `playwright` Python package (never `playwright install`). Files are
saved as palette PNGs to stay small. Every panel is real output of the loaded model (the streaming shot
slows generation down so that it catches a half-drawn picture).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PROMPT = "a large yellow triangle at the top left and a small red circle at the bottom right on a blue background"
SCENE = "a large red circle at the center on a white background"


def load_pipeline(model: str | None, workdir: Path):
    from unix_core import UniXPipeline

    if model is not None:
        return UniXPipeline.from_pretrained(model)
    try:
        return UniXPipeline.from_pretrained(None)
    except ValueError as err:
        from tests.pipeline_fixture import build_checkpoint

        print(f"note: {err}; using the tiny random test checkpoint (outputs are noise)", file=sys.stderr)
        return UniXPipeline.from_pretrained(build_checkpoint(workdir / "tiny", ROOT / "tests" / "fixtures"))


def take(out: Path, model: str | None, colors: int) -> list[Path]:
    from playwright.sync_api import sync_playwright

    from studio.app import build_app
    from studio.examples import EDIT, picture
    from tests.e2e import browser as b
    from tests.e2e.studio_server import launched, paced

    saved = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        pipeline = load_pipeline(model, tmp)
        if model is None and "tiny" in pipeline.name:
            pipeline.name = "tiny random test checkpoint"
        scene = tmp / "scene.png"
        picture(SCENE).save(scene)
        edit_source = tmp / "edit.png"
        picture(EDIT[1][0]).save(edit_source)
        with launched(build_app(pipeline)) as url, sync_playwright() as pw:
            browser = b.launch_browser(pw)
            page = b.open_studio(browser, url)
            shot = lambda name: saved.append(b.save_screenshot(page, out / f"{name}.png", colors=colors))  # noqa: E731

            page.fill("#t2i-prompt textarea", PROMPT)
            page.locator("#t2i-randomize input").uncheck()
            page.fill("#t2i-seed input", "1")
            # The embedded model makes a picture (16 self-check candidates) in about a second: slow it down (as
            # the browser test does) so that the shot catches the candidates half filled in.
            with paced(pipeline, 0.03):
                page.click("#t2i-generate")
                b.wait_for_text(page, "t2i-status", "Generating: code", timeout=120)
                time.sleep(4.5)
                shot("text_to_image_streaming")
                b.wait_for_text(page, "t2i-status", "Done", timeout=300)
            page.locator("#t2i-sampling").get_by_text("Sampling").click()
            shot("text_to_image")

            b.open_tab(page, "Understand")
            b.upload(page, "und-image", scene)
            page.fill("#und-question textarea", "what color is the circle?")
            page.locator("#und-sampling").get_by_text("Sampling").click()
            page.locator("#und-temperature input[type=number]").fill("1")
            page.locator("#und-temperature input[type=number]").press("Enter")
            page.fill("#und-seed input", "3")
            page.click("#und-ask")
            b.wait_for_text(page, "und-status", "Done", timeout=120)
            shot("understand")

            b.open_tab(page, "Edit")
            b.upload(page, "edit-image", edit_source)
            page.fill("#edit-instruction textarea", EDIT[1][1])
            page.click("#edit-generate")
            b.wait_for_text(page, "edit-status", "Done", timeout=300)
            shot("edit")

            b.open_tab(page, "Few-shot")
            for i, text in ((1, "circle"), (2, "circle")):
                b.upload(page, f"fs-image-{i}", scene)
                page.fill(f"#fs-text-{i} textarea", text)
            b.upload(page, "fs-query", scene)
            page.click("#fs-run")
            b.wait_for_text(page, "fs-status", "Done", timeout=120)
            shot("few_shot")

            b.open_tab(page, "Text → Image")
            page.click("#t2i-to-routing")
            b.wait_for_text(page, "rt-summary", "Text → Image", timeout=120)
            page.wait_for_selector("#rt-heatmap img", timeout=60_000)
            shot("routing")

            b.open_tab(page, "Model")
            shot("model")
            browser.close()
    return saved


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="checkpoint folder or hub id (default: embedded model)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    parser.add_argument("--colors", type=int, default=128, help="palette size of the saved PNGs (0: full colour)")
    args = parser.parse_args(argv)
    from tests.e2e.browser import chromium_path

    if chromium_path() is None:
        print("screenshots need Chromium: apt-get install -y chromium", file=sys.stderr)
        return 2
    for path in take(args.out, args.model, args.colors or None):
        print(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path} ({path.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
