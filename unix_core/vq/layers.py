"""Building blocks of the taming VQGAN, with taming's exact parameter names.

Attribute names (`norm1`, `conv1`, `nin_shortcut`, `q`/`k`/`v`/`proj_out`, `conv`) are the state-dict
names of taming-transformers / Chameleon; do not rename them. The blocks never carry a timestep
embedding (taming's VQGAN builds them with `temb_channels=0`, so no `temb_proj` exists).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from unix_core.vq.config import GROUPNORM_GROUPS


def swish(x: torch.Tensor) -> torch.Tensor:
    """taming's `nonlinearity`: x * sigmoid(x) (written out, not `F.silu`, to match it bit for bit)."""
    return x * torch.sigmoid(x)


def Normalize(channels: int) -> nn.GroupNorm:  # noqa: N802 - taming's name
    """GroupNorm with 32 groups, eps 1e-6, affine (taming's `Normalize`)."""
    return nn.GroupNorm(num_groups=GROUPNORM_GROUPS, num_channels=channels, eps=1e-6, affine=True)


class Upsample(nn.Module):
    """Nearest-neighbour x2, then an optional 3x3 conv."""

    def __init__(self, channels: int, with_conv: bool):
        super().__init__()
        self.with_conv = with_conv
        if with_conv:
            self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=1, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return self.conv(x) if self.with_conv else x


class Downsample(nn.Module):
    """/2 by a stride-2 3x3 conv after padding right and bottom by one (taming), or by 2x2 average pooling."""

    def __init__(self, channels: int, with_conv: bool):
        super().__init__()
        self.with_conv = with_conv
        if with_conv:
            self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.with_conv:
            return self.conv(F.pad(x, (0, 1, 0, 1), mode="constant", value=0.0))
        return F.avg_pool2d(x, kernel_size=2, stride=2)


class ResnetBlock(nn.Module):
    """norm-swish-conv twice plus a skip; a 1x1 `nin_shortcut` only when the channel count changes."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.norm1 = Normalize(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1)
        self.norm2 = Normalize(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, stride=1, padding=1)
        if in_channels != out_channels:
            self.nin_shortcut = nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=1, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(swish(self.norm1(x)))
        h = self.conv2(self.dropout(swish(self.norm2(h))))
        if self.in_channels != self.out_channels:
            x = self.nin_shortcut(x)
        return x + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all spatial positions, with a residual (taming's vanilla attention).

    Written with `bmm` + softmax in taming's order so that results match the official model to
    float32 rounding.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.norm = Normalize(channels)
        self.q = nn.Conv2d(channels, channels, kernel_size=1, stride=1, padding=0)
        self.k = nn.Conv2d(channels, channels, kernel_size=1, stride=1, padding=0)
        self.v = nn.Conv2d(channels, channels, kernel_size=1, stride=1, padding=0)
        self.proj_out = nn.Conv2d(channels, channels, kernel_size=1, stride=1, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        q, k, v = self.q(h), self.k(h), self.v(h)
        b, c, height, width = q.shape
        q = q.reshape(b, c, height * width).permute(0, 2, 1)  # (B, HW, C)
        k = k.reshape(b, c, height * width)  # (B, C, HW)
        weights = torch.bmm(q, k) * (int(c) ** (-0.5))  # (B, HW_q, HW_k)
        weights = F.softmax(weights, dim=2)
        v = v.reshape(b, c, height * width)  # (B, C, HW_k)
        h = torch.bmm(v, weights.permute(0, 2, 1))  # (B, C, HW_q)
        h = h.reshape(b, c, height, width)  # (B, C, H, W)
        return x + self.proj_out(h)


def make_attn(channels: int, attn_type: str) -> nn.Module:
    """taming's `make_attn`: "vanilla" attention or "none" (identity, no parameters)."""
    if attn_type == "vanilla":
        return AttnBlock(channels)
    if attn_type == "none":
        return nn.Identity()
    raise ValueError(f"attn_type must be 'vanilla' or 'none', got {attn_type!r}")
