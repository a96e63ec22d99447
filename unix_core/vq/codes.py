"""Validation of user-supplied VQ code grids.

A grid is int64 (B, h, w) in raster order with every value in [0, n_embed). Users may pass a
flat sequence (its length must be a perfect square unless `grid_hw` is given), a 2-D (h, w)
grid, or - for batches - a 3-D (B, h, w) tensor or a list of grids of one shape.
"""

from __future__ import annotations

import math
from typing import Sequence, Union

import numpy as np
import torch

Codes = Union[torch.Tensor, np.ndarray, Sequence[int], Sequence[Sequence[int]]]


def parse_grid_hw(grid_hw: Sequence[int] | int) -> tuple[int, int]:
    """(h, w) of positive ints from an int (square) or a pair."""
    if isinstance(grid_hw, int) and not isinstance(grid_hw, bool):
        grid_hw = (grid_hw, grid_hw)
    try:
        h, w = (int(v) for v in grid_hw)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"grid_hw must be (rows, columns) of positive integers, got {grid_hw!r}") from exc
    if h < 1 or w < 1:
        raise ValueError(f"grid_hw must be (rows, columns) of positive integers, got {(h, w)}")
    return h, w


def as_code_tensor(codes: Codes) -> torch.Tensor:
    """Any integer array-like -> int64 CPU tensor (TypeError for non-integer data)."""
    if isinstance(codes, torch.Tensor):
        tensor = codes.detach().to("cpu")
    elif isinstance(codes, np.ndarray):
        tensor = torch.from_numpy(np.ascontiguousarray(codes))
    else:
        try:
            tensor = torch.as_tensor(codes)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise TypeError(
                f"codes must be integers (a tensor, array or (nested) list), got {type(codes).__name__}"
            ) from exc
        if tensor.numel() == 0:
            tensor = tensor.to(torch.int64)  # an empty list has no dtype of its own
    if tensor.dtype == torch.bool or tensor.is_floating_point() or tensor.is_complex():
        raise TypeError(f"codes must have an integer dtype, got {tensor.dtype}")
    return tensor.to(torch.int64)


def check_code_range(codes: torch.Tensor, n_embed: int) -> None:
    """ValueError naming the first offending value when any code is outside [0, n_embed)."""
    if codes.numel() == 0:
        raise ValueError("codes are empty")
    bad = (codes < 0) | (codes >= n_embed)
    if bool(bad.any()):
        first = int(codes[bad][0])
        raise ValueError(f"{int(bad.sum())} codes are outside [0, {n_embed}), e.g. {first}")


def to_code_grid(codes: Codes, n_embed: int, grid_hw: Sequence[int] | int | None = None) -> torch.Tensor:
    """One image's codes (flat or (h, w), or (1, h, w)) -> int64 (1, h, w), validated."""
    tensor = as_code_tensor(codes)
    if tensor.dim() == 3 and tensor.shape[0] == 1:
        tensor = tensor[0]
    if tensor.dim() == 1:
        if grid_hw is None:
            side = math.isqrt(tensor.numel())
            if side * side != tensor.numel() or side == 0:
                raise ValueError(
                    f"{tensor.numel()} flat codes do not form a square grid; pass a 2-D (h, w) grid or grid_hw"
                )
            grid_hw = (side, side)
        h, w = parse_grid_hw(grid_hw)
        if h * w != tensor.numel():
            raise ValueError(f"{tensor.numel()} codes do not fill a {h}x{w} grid ({h * w} codes)")
        tensor = tensor.view(h, w)
    elif tensor.dim() == 2:
        if grid_hw is not None and tuple(tensor.shape) != parse_grid_hw(grid_hw):
            raise ValueError(f"codes have shape {tuple(tensor.shape)} but grid_hw is {parse_grid_hw(grid_hw)}")
    else:
        raise ValueError(f"codes for one image must be 1-D (flat) or 2-D (h, w), got shape {tuple(tensor.shape)}")
    if tensor.shape[0] == 0 or tensor.shape[1] == 0:
        raise ValueError(f"code grid has zero size {tuple(tensor.shape)}")
    check_code_range(tensor, n_embed)
    return tensor.unsqueeze(0).contiguous()  # (1, h, w)


def to_code_batch(
    codes: Codes | Sequence[Codes], n_embed: int, grid_hw: Sequence[int] | int | None = None
) -> torch.Tensor:
    """A batch: (B, h, w) tensor/array, or a list of per-image codes of one shape -> int64 (B, h, w)."""
    if isinstance(codes, (torch.Tensor, np.ndarray)):
        tensor = as_code_tensor(codes)
        if tensor.dim() == 3:
            return torch.cat([to_code_grid(item, n_embed, grid_hw) for item in tensor])
        raise ValueError(f"a batch of codes must be 3-D (B, h, w), got shape {tuple(tensor.shape)}")
    grids = [to_code_grid(item, n_embed, grid_hw) for item in codes]
    if not grids:
        raise ValueError("the batch of codes is empty")
    shapes = {tuple(g.shape) for g in grids}
    if len(shapes) != 1:
        raise ValueError(f"all code grids of a batch must have one shape, got {sorted(shapes)}")
    return torch.cat(grids)
