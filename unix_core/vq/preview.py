"""Streaming previews of an image that is being generated code by code.

Two kinds, from cheap to faithful:

* **Mosaic** - every code has a precomputed f x f RGB patch (`CodePalette`, built once per model by
  decoding each code as a uniform `context x context` latent grid and keeping the centre f x f
  window; context 1 unless GroupNorm needs more than one value per group, then 2).
  A preview is the patches pasted in raster order; unfilled cells show a flat background. Per new
  code this costs one f x f copy (`StreamingPreview.add`).
* **Partial decode** - the real decoder on a full grid whose missing cells are filled with one
  neutral code (`fill_code`):
  - "latent_mean" (default): the code nearest (squared distance, like the quantiser) to the mean
    embedding of the codes so far, or of the whole codebook when there are none. Needs no palette.
  - "colour_mean": the code whose palette mean colour is nearest the mean colour of the codes so
    far (mid-grey when there are none). Builds the palette on first use.
  - an int: that fixed code.
  A fully filled grid decodes exactly like `VQImageTokenizer.decode` (same code path).

Per-request state lives in `StreamingPreview`; the palette is shared, read-only model data.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence, Union

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from unix_core.vq.codes import Codes, as_code_tensor, check_code_range, parse_grid_hw
from unix_core.vq.config import GROUPNORM_GROUPS
from unix_core.vq.model import VQModel
from unix_core.vq.quantizer import nearest_codes

if TYPE_CHECKING:
    from unix_core.vq.tokenizer import VQImageTokenizer

Fill = Union[str, int]
FILL_CHOICES = ("latent_mean", "colour_mean")
DEFAULT_BACKGROUND = (128, 128, 128)


@dataclass(frozen=True)
class CodePalette:
    """patches: (n_embed, f, f, 3) uint8 picture of each code; colours: (n_embed, 3) float32 mean RGB in [0, 255]."""

    patches: torch.Tensor
    colours: torch.Tensor

    def __post_init__(self) -> None:
        assert self.patches.dim() == 4 and self.patches.shape[3] == 3 and self.patches.dtype == torch.uint8
        assert self.colours.shape == (self.patches.shape[0], 3)

    @property
    def patch_size(self) -> int:
        return self.patches.shape[1]

    def save(self, path: str | Path) -> None:
        """Cache to a safetensors file (building a palette for 8192 codes takes minutes on a CPU)."""
        save_file({"patches": self.patches.contiguous(), "colours": self.colours.contiguous()}, str(path))

    @classmethod
    def load(cls, path: str | Path) -> "CodePalette":
        tensors = load_file(str(path), device="cpu")
        patches, colours = tensors.get("patches"), tensors.get("colours")
        if (
            patches is None or colours is None or patches.dtype != torch.uint8 or patches.dim() != 4
            or patches.shape[3] != 3 or tuple(colours.shape) != (patches.shape[0], 3)
        ):
            raise ValueError(f"{path} is not a code palette (uint8 'patches' (n, f, f, 3) + 'colours' (n, 3))")
        return cls(patches=patches, colours=colours.float())


def default_palette_context(model: VQModel) -> int:
    """1 latent cell, unless the lowest-resolution GroupNorms then see a single value per group (needs 2)."""
    config = model.config
    return 1 if config.ch * config.ch_mult[-1] > GROUPNORM_GROUPS else 2


@torch.inference_mode()
def build_code_palette(
    model: VQModel,
    *,
    context: int | None = None,
    batch_size: int = 64,
    code_ids: Sequence[int] | torch.Tensor | None = None,
) -> CodePalette:
    """Decode each code as a uniform `context x context` grid; keep the centre f x f window.

    `context=1` is the cheapest (one latent cell per code; n_embed * f^2 decoded pixels in all);
    larger contexts reduce the zero-padding border effect at context^2 times the cost. None picks
    `default_palette_context`. `code_ids` restricts the palette to those codes (in that order).
    """
    context = default_palette_context(model) if context is None else context
    if context < 1:
        raise ValueError(f"context must be a positive number of latent cells, got {context}")
    n_embed = model.config.n_embed
    ids = torch.arange(n_embed) if code_ids is None else as_code_tensor(code_ids).flatten()
    check_code_range(ids, n_embed)
    f = model.config.downsample_factor
    offset = (context * f - f) // 2  # centre window; the centre cell when context is odd
    device = model.quant_conv.weight.device
    patches = []
    for chunk in ids.split(batch_size):
        grid = chunk.view(-1, 1, 1).expand(-1, context, context).to(device)  # (b, context, context)
        pixels = model.decode_codes(grid)  # (b, 3, context*f, context*f)
        window = pixels[:, :, offset : offset + f, offset : offset + f]
        patches.append(_to_uint8_hwc(window))
    patch_tensor = torch.cat(patches)  # (n, f, f, 3)
    colours = patch_tensor.float().mean(dim=(1, 2))  # (n, 3)
    return CodePalette(patches=patch_tensor, colours=colours)


def mosaic_from_palette(
    palette: CodePalette, codes: Codes, grid_hw: Sequence[int] | int, *, background: Sequence[int] = DEFAULT_BACKGROUND
) -> Image.Image:
    """Codes so far (flat, raster order, at most h*w) -> RGB mosaic of (h*f, w*f) pixels."""
    h, w = parse_grid_hw(grid_hw)
    flat = validate_codes_so_far(codes, h * w, palette.patches.shape[0])
    f = palette.patch_size
    cells = torch.empty(h * w, f, f, 3, dtype=torch.uint8)
    cells[: flat.numel()] = palette.patches[flat]
    cells[flat.numel() :] = torch.tensor(_rgb(background), dtype=torch.uint8)
    canvas = cells.view(h, w, f, f, 3).permute(0, 2, 1, 3, 4).reshape(h * f, w * f, 3)  # (H, W, 3)
    return Image.fromarray(canvas.contiguous().numpy())


def fill_code(model: VQModel, codes_so_far: torch.Tensor, fill: Fill, palette: CodePalette | None = None) -> int:
    """The neutral code used for missing cells (see module docstring for the choices)."""
    n_embed = model.config.n_embed
    if isinstance(fill, bool) or not isinstance(fill, (int, str)):
        raise ValueError(f"fill must be one of {FILL_CHOICES} or a code id, got {fill!r}")
    if isinstance(fill, int):
        if not 0 <= fill < n_embed:
            raise ValueError(f"fill code {fill} is outside [0, {n_embed})")
        return fill
    if fill == "latent_mean":
        codebook = model.quantize.embedding.weight.detach()
        known = codebook[codes_so_far.to(codebook.device)] if codes_so_far.numel() else codebook
        return int(nearest_codes(known.mean(dim=0, keepdim=True), codebook)[0])
    if fill == "colour_mean":
        if palette is None:
            raise ValueError("fill='colour_mean' needs a code palette")
        target = palette.colours[codes_so_far].mean(dim=0) if codes_so_far.numel() else torch.full((3,), 127.5)
        return int(torch.argmin(((palette.colours - target) ** 2).sum(dim=1)))
    raise ValueError(f"fill must be one of {FILL_CHOICES} or a code id, got {fill!r}")


def complete_grid(codes_so_far: torch.Tensor, grid_hw: tuple[int, int], filler: int) -> torch.Tensor:
    """(n,) codes in raster order + filler -> (1, h, w) full grid."""
    h, w = grid_hw
    grid = torch.full((h * w,), filler, dtype=torch.int64)
    grid[: codes_so_far.numel()] = codes_so_far
    return grid.view(1, h, w)


class StreamingPreview:
    """Per-request preview of one image generated in raster order.

    `add(code)` costs one f x f patch copy into a uint8 canvas; `mosaic()` wraps the canvas in a
    PIL image (one copy); `decoded()` runs the decoder on the grid completed with the fill code.
    Invariant: `len(self) <= h * w`; codes are validated on entry. Construction needs the
    tokenizer's code palette, built on first use (minutes on a CPU for Chameleon's 8192 codes;
    cache it with `CodePalette.save` / `VQImageTokenizer.set_code_palette`).
    """

    def __init__(
        self,
        tokenizer: "VQImageTokenizer",
        grid_hw: Sequence[int] | int,
        *,
        fill: Fill = "latent_mean",
        background: Sequence[int] = DEFAULT_BACKGROUND,
    ):
        self.tokenizer = tokenizer
        self.grid_hw = parse_grid_hw(grid_hw)
        self.fill = fill
        palette = tokenizer.code_palette
        self._patches = palette.patches.numpy()  # (n_embed, f, f, 3), shared read-only
        self._f = palette.patch_size
        h, w = self.grid_hw
        self._canvas = np.empty((h * self._f, w * self._f, 3), dtype=np.uint8)
        self._canvas[:] = np.asarray(_rgb(background), dtype=np.uint8)
        self._codes: list[int] = []

    def __len__(self) -> int:
        return len(self._codes)

    @property
    def is_complete(self) -> bool:
        return len(self._codes) == self.grid_hw[0] * self.grid_hw[1]

    @property
    def codes(self) -> torch.Tensor:
        """(n,) int64 codes received so far, raster order."""
        return torch.tensor(self._codes, dtype=torch.int64)

    def add(self, code: int) -> None:
        """Append the next code (raster order) and paint its patch."""
        if isinstance(code, torch.Tensor):
            code = code.item()
        if isinstance(code, bool) or not isinstance(code, (int, np.integer)):
            raise TypeError(f"code must be an int, got {type(code).__name__}")
        code = int(code)
        n_embed = self.tokenizer.codebook_size
        if not 0 <= code < n_embed:
            raise ValueError(f"code {code} is outside [0, {n_embed})")
        if self.is_complete:
            raise ValueError(f"the {self.grid_hw[0]}x{self.grid_hw[1]} grid is already full")
        row, col = divmod(len(self._codes), self.grid_hw[1])
        f = self._f
        self._canvas[row * f : (row + 1) * f, col * f : (col + 1) * f] = self._patches[code]
        self._codes.append(code)

    def extend(self, codes: Codes) -> None:
        for code in as_code_tensor(codes).flatten().tolist():
            self.add(code)

    def mosaic(self) -> Image.Image:
        return Image.fromarray(self._canvas.copy())

    def decoded(self) -> Image.Image:
        return self.tokenizer.partial_decode(self.codes, self.grid_hw, fill=self.fill)


def validate_codes_so_far(codes: Codes, capacity: int, n_embed: int) -> torch.Tensor:
    """Codes of a partly generated image -> flat (n,) int64, n <= capacity, values in [0, n_embed)."""
    flat = as_code_tensor(codes).flatten()
    if flat.numel() > capacity:
        raise ValueError(f"{flat.numel()} codes do not fit a grid of {capacity} cells")
    if flat.numel():
        check_code_range(flat, n_embed)
    return flat


def _to_uint8_hwc(pixels: torch.Tensor) -> torch.Tensor:
    """(b, 3, H, W) raw decoder output -> (b, H, W, 3) uint8, same mapping as decoded images."""
    normalized = (torch.clamp(pixels.to("cpu", torch.float32), -1.0, 1.0) + 1.0) / 2.0
    return (normalized.permute(0, 2, 3, 1) * 255).to(torch.uint8).contiguous()


def _rgb(colour: Sequence[int]) -> tuple[int, int, int]:
    values = tuple(int(c) for c in colour)
    if len(values) != 3 or not all(0 <= c <= 255 for c in values):
        raise ValueError(f"background must be an (r, g, b) triple of 0..255, got {colour!r}")
    return values  # type: ignore[return-value]
