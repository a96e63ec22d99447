"""Validation of user input for the studio: text, numbers, uploaded images, with `gr.Error` messages.

Every handler checks its inputs here before touching the model, so an API client that bypasses the
browser's sliders gets the same clear message as a user. Uploaded images arrive as file paths (Gradio
keeps uploads in its own cache and refuses other paths); they are opened header first, checked for
format and pixel count before any pixel is decoded, then turned into 8-bit RGB.
`user_errors()` turns the pipeline's `ValueError`s into `gr.Error`s.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from pathlib import Path

import gradio as gr
from PIL import Image, UnidentifiedImageError

from unix_core.vq.image_io import load_image, to_rgb8

MAX_UPLOAD_BYTES = 8 * 1024 * 1024  # enforced by Gradio on upload (launch(max_file_size=...))
MAX_IMAGE_PIXELS = 16_000_000
MIN_IMAGE_SIDE = 8
MAX_IMAGE_SIDE = 8192
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")
MAX_PROMPT_CHARS = 500
MAX_SHORT_TEXT_CHARS = 200
MAX_SEED = 2**31 - 1


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Re-raise the pipeline's ValueError (bad argument, unusable image, prompt too long) as gr.Error."""
    try:
        yield
    except ValueError as err:
        raise gr.Error(_sentence(str(err)), print_exception=False) from err


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] if text else "Invalid input."


def text(name: str, value, *, max_chars: int = MAX_PROMPT_CHARS) -> str:
    if not isinstance(value, str) or not value.strip():
        raise gr.Error(f"{name} is empty: type some text.", print_exception=False)
    value = value.strip()
    if len(value) > max_chars:
        raise gr.Error(
            f"{name} is {len(value)} characters long; at most {max_chars} are allowed.", print_exception=False
        )
    return value


def number(name: str, value, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise gr.Error(f"{name} must be a number between {low:g} and {high:g}.", print_exception=False)
    if not low <= value <= high:
        raise gr.Error(f"{name} is {value:g}; allowed: {low:g} to {high:g}.", print_exception=False)
    return float(value)


def integer(name: str, value, low: int, high: int) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise gr.Error(f"{name} must be a whole number between {low} and {high}.", print_exception=False)
    if not low <= value <= high:
        raise gr.Error(f"{name} is {value}; allowed: {low} to {high}.", print_exception=False)
    return value


def seed(value, randomize: bool) -> int | None:
    """None when the seed is to be drawn (randomize, or an empty field); else a checked integer."""
    if randomize or value is None or value == "":
        return None
    return integer("Seed", value, 0, MAX_SEED)


def image(name: str, path) -> Image.Image:
    """An uploaded image (a file path from Gradio, or a PIL image) as a checked 8-bit RGB image."""
    if path is None or path == "":
        raise gr.Error(f"{name} is missing: upload an image (or pick an example).", print_exception=False)
    if isinstance(path, Image.Image):
        source = path
        fmt = path.format or "PNG"
    else:
        source = Path(str(path))
        try:
            with Image.open(source) as probe:  # header only
                fmt, (width, height) = probe.format, probe.size
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
            raise gr.Error(
                f"{name} is not a readable image file ({type(err).__name__}).", print_exception=False
            ) from err
        _check_size(name, width, height)
    if fmt not in IMAGE_FORMATS:
        raise gr.Error(f"{name} is a {fmt} file; allowed formats: {', '.join(IMAGE_FORMATS)}.", print_exception=False)
    if isinstance(source, Image.Image):
        _check_size(name, *source.size)
    try:
        return to_rgb8(load_image(source, max_pixels=MAX_IMAGE_PIXELS))
    except (ValueError, OSError) as err:
        raise gr.Error(f"{name} cannot be used: {err}", print_exception=False) from err


def _check_size(name: str, width: int, height: int) -> None:
    if min(width, height) < MIN_IMAGE_SIDE:
        raise gr.Error(
            f"{name} is {width}x{height} pixels; each side must be at least {MIN_IMAGE_SIDE} pixels.",
            print_exception=False,
        )
    if max(width, height) > MAX_IMAGE_SIDE or width * height > MAX_IMAGE_PIXELS:
        raise gr.Error(
            f"{name} is {width}x{height} pixels; allowed: at most {MAX_IMAGE_SIDE} pixels a side and "
            f"{MAX_IMAGE_PIXELS:,} pixels in all.",
            print_exception=False,
        )


def image_input(**kwargs) -> gr.Image:
    """A `gr.Image` for uploads whose preprocessing refuses a file that is not an image with a short
    `gr.Error` naming the field and the allowed formats, instead of Gradio's processing error (which quotes
    server paths). Wraps the instance's `preprocess` (a subclass would make Gradio write a .pyi stub)."""
    component = gr.Image(**kwargs)
    preprocess = component.preprocess

    def checked(payload):
        try:
            return preprocess(payload)
        except gr.Error:
            raise
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
            raise gr.Error(
                f"{component.label or 'The image'} is not a readable image file ({type(err).__name__}); "
                f"allowed formats: {', '.join(IMAGE_FORMATS)}.",
                print_exception=False,
            ) from err

    component.preprocess = checked
    return component
