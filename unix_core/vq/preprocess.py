"""Pixel conversions of the official Chameleon tokenizer: image <-> model tensors.

`resize_and_crop` + `image_to_tensor` are the official `_vqgan_input_from`: the shorter side is
scaled to `size` with new size `(round(size / s * W), round(size / s * H))` (Python `round`,
half-to-even), LANCZOS; then a centre crop at `((W' - size) // 2, (H' - size) // 2)`; values
`uint8 / 255.0 * 2 - 1` computed in float64 and cast to float32, channels first.

`tensor_to_image` is the official `_pil_from_chw_tensor`: clamp to [-1, 1], `(x + 1) / 2`, x 255
in float32 and truncation to uint8.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def resized_size(width: int, height: int, size: int) -> tuple[int, int]:
    """Official resize target: shorter side -> `size`, Python `round` (ties to even) on both sides."""
    scale = size / min(width, height)
    return round(scale * width), round(scale * height)


FILTERS = {"lanczos": Image.LANCZOS, "box": Image.BOX}


def resize_and_crop(
    image: Image.Image,
    size: int,
    *,
    max_resized_pixels: int | None = None,
    box: tuple[float, float, float, float] | None = None,
    resample: str = "lanczos",
) -> Image.Image:
    """RGB image -> `size` x `size` RGB image (official resize + centre crop).

    When the intermediate resized image would exceed `max_resized_pixels` (extreme aspect ratios),
    only the crop window is resampled (PIL's `box`): the filter taps are the same, so the result
    equals the official one up to float rounding of the filter weights (at most 1/255 in rare pixels).

    `box` (fractions left, top, right, bottom of the official centre-crop square) and `resample`
    ("lanczos" or "box") are `VQConfig.input_box` / `VQConfig.resample`: when either differs from the
    official default, that part of the square is resampled straight from the source pixels.
    """
    if resample not in FILTERS:
        raise ValueError(f"resample must be one of {sorted(FILTERS)}, got {resample!r}")
    new_width, new_height = resized_size(image.width, image.height, size)
    x0, y0 = (new_width - size) // 2, (new_height - size) // 2
    over_cap = max_resized_pixels is not None and new_width * new_height > max_resized_pixels
    if box is None and resample == "lanczos" and not over_cap:
        resized = image.resize((new_width, new_height), Image.LANCZOS)
        return resized.crop((x0, y0, x0 + size, y0 + size))
    # resample only the crop window (or the part of it that `box` names) straight from the source pixels
    left, top, right, bottom = box if box is not None else (0.0, 0.0, 1.0, 1.0)
    sx, sy = image.width / new_width, image.height / new_height
    source = ((x0 + left * size) * sx, (y0 + top * size) * sy, (x0 + right * size) * sx, (y0 + bottom * size) * sy)
    return image.resize((size, size), FILTERS[resample], box=source)


def canvas_from_decoded(image: Image.Image, canvas: int, box: tuple[float, float, float, float] | None) -> Image.Image:
    """A decoded `S` x `S` image back on a `canvas` x `canvas` square: the inverse of `resize_and_crop` for a
    square source. Without a box it is a plain resize (nearest-neighbour when `S` divides `canvas`, else
    bicubic); with one, the image fills the box's pixels and the strips outside it repeat its edge pixels."""
    left, top, right, bottom = (round(v * canvas) for v in (box if box is not None else (0.0, 0.0, 1.0, 1.0)))
    width, height = right - left, bottom - top
    if image.size == (width, height) == (canvas, canvas):
        return image
    exact = width % image.width == 0 and height % image.height == 0 and width * image.height == height * image.width
    inner = np.asarray(image.resize((width, height), Image.NEAREST if exact else Image.BICUBIC))
    padded = np.pad(inner, ((top, canvas - bottom), (left, canvas - right), (0, 0)), mode="edge")
    return Image.fromarray(padded)


def image_to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB image -> (1, 3, H, W) float32 in [-1, 1] (float64 arithmetic, then cast, as official)."""
    if image.mode != "RGB":
        raise ValueError(f"expected an RGB image, got mode {image.mode!r}")
    values = np.asarray(image) / 255.0  # (H, W, 3) float64
    values = values * 2 - 1
    return torch.from_numpy(values).permute(2, 0, 1).float().unsqueeze(0)  # (1, 3, H, W)


def tensor_to_image(pixels: torch.Tensor) -> Image.Image:
    """(3, H, W) raw decoder output -> 8-bit RGB image (official clamp, scale and truncation)."""
    if pixels.dim() != 3 or pixels.shape[0] != 3:
        raise ValueError(f"expected decoder output of shape (3, H, W), got {tuple(pixels.shape)}")
    normalized = (torch.clamp(pixels.detach().to("cpu", torch.float32), -1.0, 1.0) + 1.0) / 2.0
    hwc = normalized.permute(1, 2, 0) * 255  # (H, W, 3) float32
    return Image.fromarray(hwc.to(torch.uint8).contiguous().numpy())  # truncation toward zero
