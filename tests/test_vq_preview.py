"""Streaming previews: code palette, mosaic, partial decode, StreamingPreview."""

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from unix_core.vq import CodePalette, StreamingPreview, VQImageTokenizer
from unix_core.vq.preview import build_code_palette, fill_code
from unix_core.vq.quantizer import nearest_codes


@pytest.fixture(scope="module")
def codes():
    from tests.conftest import FIXTURES

    return load_file(str(FIXTURES / "vqgan_tiny" / "vectors.safetensors"))["rgb_shapes.codes"]  # (256,)


def test_palette_is_each_code_decoded_alone(vq_tiny):
    palette = vq_tiny.code_palette
    assert palette.patches.shape == (64, 4, 4, 3) and palette.patches.dtype == torch.uint8
    # 32 channels at the lowest level = 1 per GroupNorm group, so a 1x1 grid is impossible: 2x2, centre window
    for code in (0, 17, 63):
        uniform = np.asarray(vq_tiny.decode(torch.full((2, 2), code)))  # (8, 8, 3)
        assert np.array_equal(palette.patches[code].numpy(), uniform[2:6, 2:6])
    torch.testing.assert_close(palette.colours, palette.patches.float().mean(dim=(1, 2)))
    wide = build_code_palette(vq_tiny.model, context=3, code_ids=[5, 6])
    centre = np.asarray(vq_tiny.decode(torch.full((3, 3), 6)))[4:8, 4:8]
    assert np.array_equal(wide.patches[1].numpy(), centre)


def test_mosaic_size_and_content(vq_tiny, codes):
    palette = vq_tiny.code_palette
    mosaic = np.asarray(vq_tiny.mosaic_preview(codes[:37], (16, 16)))
    assert mosaic.shape == (64, 64, 3)
    row, col = divmod(36, 16)  # last filled cell
    assert np.array_equal(mosaic[row * 4 : row * 4 + 4, col * 4 : col * 4 + 4], palette.patches[codes[36]].numpy())
    assert (mosaic[row * 4 : row * 4 + 4, (col + 1) * 4 :] == 128).all()  # not generated yet: grey
    assert (mosaic[(row + 1) * 4 :] == 128).all()
    assert vq_tiny.mosaic_preview([], (2, 3)).size == (12, 8)  # (width, height)
    assert vq_tiny.mosaic_preview(codes).size == (64, 64)  # default grid = image_size / f
    with pytest.raises(ValueError, match="do not fit"):
        vq_tiny.mosaic_preview(codes, (4, 4))
    with pytest.raises(ValueError, match="outside"):
        vq_tiny.mosaic_preview([64], (4, 4))


def test_streaming_preview_matches_stateless_mosaic(vq_tiny, codes):
    stream = StreamingPreview(vq_tiny, (16, 16))
    for i, code in enumerate(codes.tolist()):
        stream.add(code)
        if i in (0, 100, 255):
            assert np.array_equal(np.asarray(stream.mosaic()), np.asarray(vq_tiny.mosaic_preview(codes[: i + 1], 16)))
    assert stream.is_complete and len(stream) == 256 and torch.equal(stream.codes, codes)
    with pytest.raises(ValueError, match="already full"):
        stream.add(0)
    fresh = StreamingPreview(vq_tiny, 4)
    with pytest.raises(ValueError, match=r"outside \[0, 64\)"):
        fresh.add(64)
    with pytest.raises(TypeError, match="must be an int"):
        fresh.add(1.5)
    fresh.extend(torch.tensor([1, 2, 3]))
    assert len(fresh) == 3


def test_partial_decode_of_full_grid_equals_decode(vq_tiny, codes):
    expected = np.asarray(vq_tiny.decode(codes))
    assert np.array_equal(np.asarray(vq_tiny.partial_decode(codes, (16, 16))), expected)
    stream = StreamingPreview(vq_tiny, (16, 16))
    stream.extend(codes)
    assert np.array_equal(np.asarray(stream.decoded()), expected)


def test_partial_decode_fills_missing_cells(vq_tiny, codes):
    known = codes[:40]
    codebook = vq_tiny.model.quantize.embedding.weight.detach()
    filler = int(nearest_codes(codebook[known].mean(0, keepdim=True), codebook)[0])
    assert fill_code(vq_tiny.model, known, "latent_mean") == filler
    grid = torch.cat([known, torch.full((216,), filler)]).view(16, 16)
    expected = np.asarray(vq_tiny.decode(grid))
    assert np.array_equal(np.asarray(vq_tiny.partial_decode(known, (16, 16))), expected)
    fixed = np.asarray(vq_tiny.partial_decode(known, (16, 16), fill=7))
    assert np.array_equal(fixed, np.asarray(vq_tiny.decode(torch.cat([known, torch.full((216,), 7)]))))
    colours = vq_tiny.code_palette.colours
    by_colour = fill_code(vq_tiny.model, known, "colour_mean", vq_tiny.code_palette)
    assert by_colour == int(torch.argmin(((colours - colours[known].mean(0)) ** 2).sum(1)))
    assert vq_tiny.partial_decode([], (2, 2), fill="colour_mean").size == (8, 8)
    for bad in ("median", 64, -1, 2.0):
        with pytest.raises(ValueError, match="fill"):
            vq_tiny.partial_decode(known, (16, 16), fill=bad)


def test_palette_cache_round_trip(vq_tiny, tmp_path):
    vq_tiny.code_palette.save(tmp_path / "palette.safetensors")
    loaded = CodePalette.load(tmp_path / "palette.safetensors")
    assert torch.equal(loaded.patches, vq_tiny.code_palette.patches)
    assert torch.equal(loaded.colours, vq_tiny.code_palette.colours)
    fresh = VQImageTokenizer(vq_tiny.model)
    fresh.set_code_palette(loaded)
    assert fresh.code_palette is loaded
    save_file({"patches": torch.zeros(2, 3)}, str(tmp_path / "bogus.safetensors"))
    with pytest.raises(ValueError, match="not a code palette"):
        CodePalette.load(tmp_path / "bogus.safetensors")


def test_set_code_palette_checks_shape(vq_tiny):
    with pytest.raises(ValueError, match="palette patches must have shape"):
        vq_tiny.set_code_palette(CodePalette(torch.zeros(3, 4, 4, 3, dtype=torch.uint8), torch.zeros(3, 3)))
