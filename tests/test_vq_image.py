"""VQGAN vq_tiny image inputs: PIL modes, EXIF orientation, pixel cap, bad inputs."""

import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from unix_core.vq import VQImageTokenizer
from unix_core.vq.image_io import load_image, to_rgb8
from unix_core.vq.preprocess import resize_and_crop


def _pattern(width=40, height=24, seed=0) -> Image.Image:
    values = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    values[: height // 2, : width // 3] = (250, 20, 20)  # an asymmetric block so that transposes matter
    return Image.fromarray(values)


def _png_bytes(image: Image.Image, **save_kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", **save_kwargs)
    return buffer.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG claiming width x height whose pixel data (IDAT) is a few bytes of nothing."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16))


# ---- modes ----


def _p_with_transparency() -> Image.Image:
    image = Image.new("P", (30, 20), 0)
    image.putpalette([0, 0, 0, 200, 30, 30] + [0] * (256 * 3 - 6))
    image.paste(1, (5, 5, 25, 15))
    image.info["transparency"] = 0  # palette index 0 (black) is transparent
    return image


MODES = {
    "RGB": lambda: _pattern(),
    "RGBA": lambda: _pattern().convert("RGBA"),
    "LA": lambda: _pattern().convert("LA"),
    "L": lambda: _pattern().convert("L"),
    "1": lambda: _pattern().convert("1"),
    "P": lambda: _pattern().convert("P"),
    "P+transparency": _p_with_transparency,
    "PA": lambda: _pattern().convert("PA"),
    "CMYK": lambda: _pattern().convert("CMYK"),
    "YCbCr": lambda: _pattern().convert("YCbCr"),
    "I;16": lambda: Image.fromarray(np.arange(24 * 40, dtype=np.uint16).reshape(24, 40) * 68),
    "I": lambda: _pattern().convert("L").convert("I"),
    "F": lambda: _pattern().convert("F"),
}


@pytest.mark.parametrize("mode", sorted(MODES))
def test_every_mode_encodes_to_the_grid(vq_tiny, mode):
    image = MODES[mode]()
    assert image.mode == mode.split("+")[0]
    assert vq_tiny.encode(image).shape == (16, 16)
    if mode not in ("CMYK", "YCbCr", "F", "I", "PA"):  # modes that PNG stores: also through a file
        assert vq_tiny.encode(_png_bytes(image)).shape == (16, 16)


def test_p_with_transparency_is_blended_onto_white(vq_tiny):
    rgb = np.asarray(to_rgb8(_p_with_transparency()))
    assert (rgb[0, 0] == 255).all() and tuple(rgb[10, 10]) == (200, 30, 30)
    expected = np.full((20, 30, 3), 255, dtype=np.uint8)
    expected[5:15, 5:25] = (200, 30, 30)
    assert np.array_equal(rgb, expected)
    assert torch.equal(vq_tiny.encode(_p_with_transparency()), vq_tiny.encode(Image.fromarray(expected)))


def test_16_bit_is_scaled_not_clipped(vq_tiny):
    gray16 = np.arange(24 * 40, dtype=np.uint16).reshape(24, 40) * 68  # up to 65212
    gray8 = np.clip(np.rint(gray16 / 257.0), 0, 255).astype(np.uint8)
    from_16 = to_rgb8(Image.fromarray(gray16))
    assert np.array_equal(np.asarray(from_16), np.repeat(gray8[:, :, None], 3, axis=2))
    assert torch.equal(vq_tiny.encode(Image.fromarray(gray16)), vq_tiny.encode(Image.fromarray(gray8)))
    # the same through a 16-bit PNG file
    png = Image.open(io.BytesIO(_png_bytes(Image.fromarray(gray16))))
    assert png.mode.startswith("I")
    assert np.array_equal(np.asarray(to_rgb8(load_image(png))), np.asarray(from_16))


def test_rgba_without_transparency_equals_rgb(vq_tiny):
    assert torch.equal(vq_tiny.encode(_pattern().convert("RGBA")), vq_tiny.encode(_pattern()))


# ---- EXIF orientation ----


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_exif_orientation_is_applied(vq_tiny, fmt):
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    buffer = io.BytesIO()
    _pattern().save(buffer, fmt, exif=exif, **({"quality": 95} if fmt == "JPEG" else {}))
    data = buffer.getvalue()
    stored = Image.open(io.BytesIO(data))
    stored.load()
    assert stored.size == (40, 24) and stored.getexif()[0x0112] == 6
    raw = Image.fromarray(np.asarray(stored))  # same pixels, no EXIF
    upright = raw.transpose(Image.Transpose.ROTATE_270)
    assert upright.size == (24, 40)
    as_stored = vq_tiny.encode(raw)
    expected = vq_tiny.encode(upright)
    assert not torch.equal(as_stored, expected)  # the orientation matters for this image
    assert torch.equal(vq_tiny.encode(data), expected)
    assert torch.equal(vq_tiny.encode(stored), expected)  # a PIL image that still carries the tag
    assert load_image(data).size == (24, 40)


# ---- bad inputs ----


def test_not_an_image(vq_tiny, tmp_path):
    with pytest.raises(ValueError, match="not an image"):
        vq_tiny.encode(b"definitely not an image")
    text_file = tmp_path / "notes.png"
    text_file.write_text("hello")
    with pytest.raises(ValueError, match="not an image"):
        vq_tiny.encode(text_file)
    with pytest.raises(ValueError, match="empty"):
        vq_tiny.encode(b"")
    for wrong in (12, 3.5, None, torch.zeros(3, 8, 8), [1, 2, 3]):
        with pytest.raises(TypeError, match="cannot read an image"):
            vq_tiny.encode(wrong)
    with pytest.raises(TypeError, match="numpy image must be"):
        vq_tiny.encode(np.zeros((8, 8, 3), dtype=np.float32))


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_file(vq_tiny, fmt):
    buffer = io.BytesIO()
    _pattern(64, 64).save(buffer, fmt)
    data = buffer.getvalue()
    for cut in (len(data) // 2, 30):
        with pytest.raises(ValueError, match="truncated or corrupt|not an image"):
            vq_tiny.encode(data[:cut])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        vq_tiny.encode(data[: len(data) // 2])


def test_zero_size_image(vq_tiny):
    for size in ((0, 10), (10, 0)):
        with pytest.raises(ValueError, match="zero size"):
            vq_tiny.encode(Image.new("RGB", size))


def test_pixel_cap_is_checked_from_the_header(vq_tiny):
    limited = VQImageTokenizer(vq_tiny.model, max_image_pixels=10_000)
    with pytest.raises(ValueError, match="over the limit of 10,000"):
        limited.encode(_png_bytes(_pattern(200, 100)))
    with pytest.raises(ValueError, match="over the limit of 10,000"):
        limited.encode(_pattern(200, 100))
    # A header claiming 5000x5000 with no pixel data: decoding would fail with "truncated";
    # the cap error proves the check happens before any pixel is decoded.
    max_before = Image.MAX_IMAGE_PIXELS
    with pytest.raises(ValueError, match="5000x5000 = 25,000,000 pixels, over the limit"):
        limited.encode(_png_header_only(5000, 5000))
    with pytest.raises(ValueError, match="truncated or corrupt"):
        vq_tiny.encode(_png_header_only(500, 500))
    assert Image.MAX_IMAGE_PIXELS == max_before  # PIL globals untouched
    assert limited.encode(_pattern(100, 100)).shape == (16, 16)


def test_extreme_aspect_ratio_resamples_only_the_crop(vq_tiny):
    strip = _pattern(6000, 3)  # the full official resize would be 128,000 x 64 pixels
    limited = VQImageTokenizer(vq_tiny.model, max_image_pixels=100_000)
    assert limited.encode(strip).shape == (16, 16)
    image = _pattern(80, 60)
    full = np.asarray(resize_and_crop(image, 64)).astype(int)
    boxed = np.asarray(resize_and_crop(image, 64, max_resized_pixels=1)).astype(int)
    assert np.abs(full - boxed).max() <= 1 and np.count_nonzero(full - boxed) < 0.01 * full.size
