"""`VQImageTokenizer`: images <-> VQGAN codes, compatible with Chameleon's official tokenizer.

Encoding = `load_image` (header checks, decoding, EXIF orientation) -> `to_rgb8` (modes,
white blending) -> official resize / centre crop / [-1, 1] scaling -> encoder -> nearest code.
Decoding = codebook rows -> post_quant_conv -> decoder -> clamp, scale, truncate to uint8.
Codes are int64 (h, w) grids in raster order, on the CPU. The model is shared and read-only;
the only cached state is the code palette for mosaic previews (deterministic, built lazily).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from PIL import Image

from unix_core.vq.checkpoint import load_model, save_model
from unix_core.vq.codes import Codes, parse_grid_hw, to_code_batch, to_code_grid
from unix_core.vq.config import VQConfig
from unix_core.vq.image_io import DEFAULT_MAX_IMAGE_PIXELS, ImageSource, load_image, to_rgb8
from unix_core.vq.model import VQModel, build_random_model
from unix_core.vq.preprocess import image_to_tensor, resize_and_crop, tensor_to_image
from unix_core.vq.preview import (
    CodePalette,
    Fill,
    build_code_palette,
    complete_grid,
    fill_code,
    mosaic_from_palette,
    validate_codes_so_far,
)


class VQImageTokenizer:
    """Chameleon-compatible VQGAN image tokenizer (see module docstring)."""

    def __init__(self, model: VQModel, *, max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS):
        if model.config.in_channels != 3 or model.config.out_ch != 3:
            raise ValueError(
                f"an image tokenizer needs in_channels = out_ch = 3 (RGB), got "
                f"{model.config.in_channels} and {model.config.out_ch}"
            )
        if max_image_pixels < 1:
            raise ValueError(f"max_image_pixels must be positive, got {max_image_pixels}")
        self.model = model.eval()
        self.max_image_pixels = max_image_pixels
        self._palette: CodePalette | None = None

    @classmethod
    def from_pretrained(
        cls,
        folder: str | Path,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    ) -> "VQImageTokenizer":
        """Load `vq_config.json` + `vq_model.safetensors`, or taming's `vqgan.yaml` + `vqgan.ckpt`."""
        return cls(load_model(folder, device=device, dtype=dtype), max_image_pixels=max_image_pixels)

    @classmethod
    def from_config(
        cls,
        config: VQConfig,
        *,
        seed: int = 0,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    ) -> "VQImageTokenizer":
        """Random weights (seeded); for tests, benchmarks and as a training start."""
        return cls(build_random_model(config, seed=seed, device=device, dtype=dtype), max_image_pixels=max_image_pixels)

    def save_pretrained(self, folder: str | Path) -> None:
        """Write our form: `vq_config.json` + `vq_model.safetensors`."""
        save_model(self.model, folder)

    @property
    def config(self) -> VQConfig:
        return self.model.config

    @property
    def codebook_size(self) -> int:
        return self.config.n_embed

    @property
    def embed_dim(self) -> int:
        return self.config.embed_dim

    @property
    def downsample_factor(self) -> int:
        return self.config.downsample_factor

    @property
    def image_size(self) -> int:
        """Default encode size in pixels (the config resolution; 512 for Chameleon)."""
        return self.config.resolution

    @property
    def grid_size(self) -> int:
        """Latent grid side at `image_size` (32 for Chameleon)."""
        return self.image_size // self.downsample_factor

    @property
    def device(self) -> torch.device:
        return self.model.quant_conv.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.quant_conv.weight.dtype

    def preprocess(self, image: ImageSource, size: int | None = None) -> torch.Tensor:
        """Any image source -> (1, 3, size, size) float32 CPU tensor in [-1, 1] (official pipeline)."""
        size = self._check_size(size)
        rgb = to_rgb8(load_image(image, max_pixels=self.max_image_pixels))
        return image_to_tensor(resize_and_crop(rgb, size, max_resized_pixels=self.max_image_pixels,
                                               box=self.config.input_box, resample=self.config.resample))

    @torch.inference_mode()
    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) tensor in [-1, 1] -> (B, S/f, S/f) int64 CPU codes."""
        if pixels.dim() != 4 or pixels.shape[1] != 3:
            raise ValueError(f"pixels must have shape (B, 3, S, S), got {tuple(pixels.shape)}")
        self._check_size(pixels.shape[2])
        if pixels.shape[2] != pixels.shape[3]:
            raise ValueError(f"pixels must be square, got {pixels.shape[2]}x{pixels.shape[3]}")
        return self.model.encode_codes(pixels.to(self.device, self.dtype)).to("cpu")

    def encode(self, image: ImageSource, size: int | None = None) -> torch.Tensor:
        """One image -> (h, w) int64 codes, raster order; h = w = size // downsample_factor."""
        return self.encode_pixels(self.preprocess(image, size))[0]

    def encode_batch(self, images: Sequence[ImageSource], size: int | None = None) -> torch.Tensor:
        """Several images -> (B, h, w) int64 codes (one encoder pass)."""
        if isinstance(images, (str, bytes)) or not hasattr(images, "__iter__"):
            raise TypeError(f"encode_batch expects a sequence of images, got {type(images).__name__}")
        batch = [self.preprocess(image, size) for image in images]
        if not batch:
            raise ValueError("encode_batch got no images")
        return self.encode_pixels(torch.cat(batch))

    @torch.inference_mode()
    def decode_pixels(self, codes: torch.Tensor) -> torch.Tensor:
        """Validated (B, h, w) int64 codes -> (B, 3, h*f, w*f) raw float32 decoder output (not clamped)."""
        return self.model.decode_codes(codes.to(self.device)).float()

    def decode(self, codes: Codes, grid_hw: Sequence[int] | int | None = None) -> Image.Image:
        """(h, w) codes - or flat codes of a square grid, or flat codes with `grid_hw` - -> RGB image."""
        return tensor_to_image(self.decode_pixels(to_code_grid(codes, self.codebook_size, grid_hw))[0])

    def decode_batch(
        self, codes: Codes | Sequence[Codes], grid_hw: Sequence[int] | int | None = None
    ) -> list[Image.Image]:
        """(B, h, w) codes or a list of same-shape code grids -> list of RGB images (one decoder pass)."""
        pixels = self.decode_pixels(to_code_batch(codes, self.codebook_size, grid_hw))
        return [tensor_to_image(item) for item in pixels]

    @property
    def code_palette(self) -> CodePalette:
        """Per-code preview patches; built on first use (n_embed * f^2 decoded pixels), then cached."""
        if self._palette is None:
            self._palette = build_code_palette(self.model)
        return self._palette

    def set_code_palette(self, palette: CodePalette) -> None:
        """Install a precomputed palette (e.g. built once on a GPU or loaded from a cache)."""
        f = self.downsample_factor
        if tuple(palette.patches.shape) != (self.codebook_size, f, f, 3):
            raise ValueError(
                f"palette patches must have shape {(self.codebook_size, f, f, 3)}, got {tuple(palette.patches.shape)}"
            )
        self._palette = palette

    def mosaic_preview(self, codes_so_far: Codes, grid_hw: Sequence[int] | int | None = None) -> Image.Image:
        """Cheap preview: each code's palette patch in raster order, grey where no code yet."""
        grid = parse_grid_hw(self.grid_size if grid_hw is None else grid_hw)
        return mosaic_from_palette(self.code_palette, codes_so_far, grid)

    def partial_decode(
        self, codes_so_far: Codes, grid_hw: Sequence[int] | int | None = None, *, fill: Fill = "latent_mean"
    ) -> Image.Image:
        """Real decoder pass on the grid completed with a neutral fill code (see `preview.fill_code`)."""
        h, w = parse_grid_hw(self.grid_size if grid_hw is None else grid_hw)
        known = validate_codes_so_far(codes_so_far, h * w, self.codebook_size)
        palette = self.code_palette if fill == "colour_mean" else None
        filler = fill_code(self.model, known, fill, palette) if known.numel() < h * w else 0
        return self.decode(complete_grid(known, (h, w), filler)[0])

    def _check_size(self, size: int | None) -> int:
        if size is None:
            return self.image_size
        f = self.downsample_factor
        if isinstance(size, bool) or not isinstance(size, int) or size < f or size % f:
            raise ValueError(f"size must be a positive multiple of the downsample factor {f}, got {size!r}")
        return size
