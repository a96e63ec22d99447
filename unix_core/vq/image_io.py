"""Opening user images safely and turning any PIL mode into 8-bit RGB the official way.

`load_image` accepts a PIL image, a path, bytes, a binary file object or a uint8/uint16 numpy
array. Order of operations (each step only after the previous one succeeded):

1. read the header only (`Image.open` is lazy) and reject zero-size images and images over
   `max_pixels` - before any pixel is decoded (decompression bombs). PIL's own global bomb limit
   is neither relied on nor changed; if PIL trips it first, that becomes our ValueError too;
2. decode the pixels (truncated / corrupt data -> ValueError);
3. apply the EXIF orientation (`ImageOps.exif_transpose`) - before any other processing.

`to_rgb8` then maps 16-bit / 32-bit / float grey modes to 8-bit grey by scaling (PIL's own
conversion clips them), and applies the official `_whiten_transparency`: RGB is returned as is;
any other mode is converted to RGBA and, if some alpha is below 255, blended onto white as
`(1 - a) * 255 + a * c` with `a = alpha / 255` in float64 and truncated to uint8; otherwise the
image is simply converted to RGB.
"""

from __future__ import annotations

import io
import logging
import os
import struct
import zlib
from typing import IO, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

logger = logging.getLogger(__name__)

ImageSource = Union[Image.Image, str, os.PathLike, bytes, bytearray, memoryview, IO[bytes], np.ndarray]

DEFAULT_MAX_IMAGE_PIXELS = 64_000_000
HIGH_BIT_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
_DECODE_ERRORS = (OSError, SyntaxError, EOFError, ValueError, struct.error, zlib.error)
_EXIF_ERRORS = (OSError, SyntaxError, ValueError, KeyError, TypeError, struct.error)
_BLEND_ROWS_PIXELS = 1 << 20  # pixels blended per strip, bounds the float64 temporaries


def check_image_size(width: int, height: int, max_pixels: int) -> None:
    """ValueError for a zero-size image or one with more than `max_pixels` pixels."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image has zero size ({width}x{height} pixels); nothing to encode")
    if width * height > max_pixels:
        raise ValueError(
            f"image is {width}x{height} = {width * height:,} pixels, over the limit of {max_pixels:,} "
            f"(max_image_pixels); downscale it first or raise the limit"
        )


def load_image(source: ImageSource, *, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> Image.Image:
    """Open `source`, check its size from the header, decode it and honour EXIF orientation.

    Returns a new, fully loaded PIL image in the source's mode (the source is never modified).
    Raises TypeError for unsupported source types and ValueError for non-images, truncated data,
    zero-size images and images over `max_pixels`.
    """
    if isinstance(source, Image.Image):
        check_image_size(source.width, source.height, max_pixels)
        _decode_pixels(source)
        return _exif_transposed(source)
    if isinstance(source, np.ndarray):
        return load_image(_image_from_array(source), max_pixels=max_pixels)
    if isinstance(source, (str, os.PathLike)):
        stream: str | os.PathLike | IO[bytes] = source
    elif isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise ValueError("image bytes are empty; expected the contents of an image file (PNG, JPEG, ...)")
        stream = io.BytesIO(bytes(source))
    elif hasattr(source, "read"):
        stream = source
    else:
        raise TypeError(
            f"cannot read an image from a {type(source).__name__}; pass a PIL image, a file path, "
            f"bytes, a binary file object or a uint8 numpy array"
        )
    try:
        image = Image.open(stream)  # reads the header only
    except Image.DecompressionBombError as exc:
        raise ValueError(f"image rejected as a decompression bomb by PIL: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise ValueError(f"not an image: PIL cannot identify the data as any image format ({exc})") from exc
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except _DECODE_ERRORS as exc:
        raise ValueError(f"image header is truncated or corrupt: {exc}") from exc
    try:
        check_image_size(image.width, image.height, max_pixels)
        _decode_pixels(image)
        return _exif_transposed(image)
    finally:
        image.close()  # closes the file only when PIL opened it (a path)


def to_rgb8(image: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB, transparency blended onto white exactly like the official tokenizer."""
    if image.mode in HIGH_BIT_DEPTH_MODES:
        image = _high_bit_depth_to_gray8(image)
    return whiten_transparency(image)


def whiten_transparency(image: Image.Image) -> Image.Image:
    """The official `_whiten_transparency` (see module docstring); memory-bounded, same arithmetic."""
    if image.mode == "RGB":
        return image
    try:
        rgba = image.convert("RGBA")
    except ValueError as exc:
        raise ValueError(f"image mode {image.mode!r} cannot be converted to RGB ({exc})") from exc
    min_alpha, _ = rgba.getchannel("A").getextrema()
    if min_alpha == 255:
        return image.convert("RGB")
    values = np.asarray(rgba)  # (H, W, 4) uint8
    out = np.empty(values.shape[:2] + (3,), dtype=np.uint8)
    rows = max(1, _BLEND_ROWS_PIXELS // values.shape[1])
    for top in range(0, values.shape[0], rows):
        strip = values[top : top + rows]
        alpha = strip[:, :, 3] / 255.0  # float64
        blended = (1 - alpha[:, :, np.newaxis]) * 255 + alpha[:, :, np.newaxis] * strip[:, :, :3]
        out[top : top + rows] = blended.astype(np.uint8)  # truncation, as in the official code
    return Image.fromarray(out)  # (H, W, 3) uint8 -> RGB


def _decode_pixels(image: Image.Image) -> None:
    try:
        image.load()
    except _DECODE_ERRORS as exc:
        raise ValueError(f"image data is truncated or corrupt: {exc}") from exc


def _exif_transposed(image: Image.Image) -> Image.Image:
    try:
        transposed = ImageOps.exif_transpose(image)
    except _EXIF_ERRORS as exc:
        logger.warning("ignoring unreadable EXIF orientation: %s", exc)
        return image.copy()
    return transposed if transposed is not None else image.copy()


def _high_bit_depth_to_gray8(image: Image.Image) -> Image.Image:
    """16-bit -> 8-bit by /257; "I" as 16-bit when any value exceeds 255; "F" in [0, 1] scaled by 255."""
    values = np.asarray(image)
    if image.mode.startswith("I;16"):
        scaled = values.astype(np.float32) / 257.0
    elif image.mode == "I":
        scaled = values.astype(np.float32)
        if values.size and values.max() > 255:
            scaled = np.clip(scaled, 0, 65535) / 257.0
    else:  # "F"
        scaled = np.nan_to_num(values.astype(np.float32), nan=0.0, posinf=255.0, neginf=0.0)
        if scaled.size and scaled.min() >= 0.0 and scaled.max() <= 1.0:
            scaled = scaled * 255.0
    gray = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    return Image.fromarray(gray)  # (H, W) uint8 -> L


def _image_from_array(array: np.ndarray) -> Image.Image:
    if array.dtype == np.uint8:
        if array.ndim == 3 and array.shape[2] == 1:
            array = array[:, :, 0]
        if array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4)):
            return Image.fromarray(np.ascontiguousarray(array))  # L, RGB or RGBA from the shape
    elif array.dtype == np.uint16 and array.ndim == 2:
        return Image.fromarray(np.ascontiguousarray(array))  # I;16
    raise TypeError(
        f"numpy image must be uint8 (H, W), (H, W, 1), (H, W, 3), (H, W, 4) or uint16 (H, W); "
        f"got {array.dtype} {array.shape}"
    )
