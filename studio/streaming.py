"""Adapt the pipeline's step events to UI updates: live previews, throttling, speed and ETA.

Handlers send an update at most every `UPDATE_INTERVAL_S` (and always the last one): every yield costs
Gradio a postprocess and a message, so yielding per token would slow generation down several times.
The preview of an image being generated shows the
last real decode for the rows it covered and the cheap per-code mosaic below, tiled over the batch and
enlarged (nearest neighbour) for display.
"""

from __future__ import annotations

import math
import time

from PIL import Image

from unix_core.pipeline import ImageStreamEvent

UPDATE_INTERVAL_S = 0.08
DISPLAY_SIZE = 256  # small images are shown enlarged to about this many pixels a side
TILE_COLUMNS = 4


class Throttle:
    """`ready()` is true at most once per `interval` seconds (and always when forced)."""

    def __init__(self, interval: float = UPDATE_INTERVAL_S) -> None:
        self.interval = interval
        self._last = float("-inf")

    def ready(self, *, force: bool = False) -> bool:
        now = time.monotonic()
        if force or now - self._last >= self.interval:
            self._last = now
            return True
        return False


class PreviewComposer:
    """Per-request preview of a batch being generated in raster order."""

    def __init__(self, grid_hw: tuple[int, int], image_size: int) -> None:
        self.grid_w = grid_hw[1]
        self.patch = image_size // grid_hw[0]
        self.scale = max(1, DISPLAY_SIZE // image_size)
        self._decoded: list[Image.Image] | None = None
        self._decoded_rows = 0

    def update(self, event: ImageStreamEvent) -> Image.Image:
        if event.images is not None:
            return tile(event.images, self.scale)
        if event.decoded is not None:
            self._decoded, self._decoded_rows = event.decoded, event.step // self.grid_w
        frames = list(event.mosaics)
        if self._decoded is not None:
            height = self._decoded_rows * self.patch
            for i, decoded in enumerate(self._decoded):
                frame = frames[i].copy()
                frame.paste(decoded.crop((0, 0, decoded.width, height)), (0, 0))
                frames[i] = frame
        return tile(frames, self.scale)


def tile(images: list[Image.Image], scale: int = 1) -> Image.Image:
    """Images side by side (at most `TILE_COLUMNS` a row, or a square sheet for more than `TILE_COLUMNS`²,
    e.g. self-check candidates), enlarged `scale` times without smoothing."""
    w, h = images[0].size
    cols = min(len(images), max(TILE_COLUMNS, math.ceil(math.sqrt(len(images)))))
    rows = -(-len(images) // cols)
    gap = 2
    sheet = Image.new("RGB", (cols * w + (cols - 1) * gap, rows * h + (rows - 1) * gap), (255, 255, 255))
    for i, image in enumerate(images):
        sheet.paste(image.convert("RGB"), ((i % cols) * (w + gap), (i // cols) * (h + gap)))
    if scale > 1:
        sheet = sheet.resize((sheet.width * scale, sheet.height * scale), Image.Resampling.NEAREST)
    return sheet


def image_status(event: ImageStreamEvent) -> str:
    """One status line; an edit's written plan (checkpoints that write the edited scene first) leads it."""
    plan = "" if event.plan is None else f"Plan: “{event.plan}” · "
    return plan + _image_progress(event)


def _image_progress(event: ImageStreamEvent) -> str:
    rows = event.grids.shape[0]
    rate = event.step * rows / max(event.elapsed, 1e-9)
    if event.done:
        text = (
            f"Done: {event.total} codes × {rows} {'image(s)' if event.candidates == 1 else 'candidates'} in "
            f"{event.elapsed:.1f} s "
            f"({rate:.0f} tokens/s) · seed {event.seed}"
        )
        if event.chosen is not None:
            picks = "; ".join(
                f"#{c + 1} of {event.candidates} (prompt log-prob {scores[c]:.3g}; candidates {min(scores):.3g} "
                f"to {max(scores):.3g})"
                for c, scores in zip(event.chosen, event.scores)
            )
            text += f" · self-check kept {picks}"
        return text
    eta = (event.total - event.step) * event.elapsed / max(event.step, 1)
    return (
        f"Generating: code {event.step}/{event.total} ({100 * event.step / event.total:.0f}%) · "
        f"{rate:.0f} tokens/s · ETA {eta:.1f} s · seed {event.seed}"
    )


def text_status(step: int, elapsed: float, done: bool, seed: int) -> str:
    rate = step / max(elapsed, 1e-9)
    word = "Done" if done else "Generating"
    tokens = "1 token" if step == 1 else f"{step} tokens"
    return f"{word}: {tokens} in {elapsed:.1f} s ({rate:.0f} tokens/s) · seed {seed}"
