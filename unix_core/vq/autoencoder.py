"""taming VQGAN Encoder and Decoder (state-dict layout identical to taming/Chameleon).

Layout invariants (they fix the checkpoint key names):
* `encoder.down.{i}` runs from full resolution (i = 0) down; every level but the last has a
  `downsample`. Each level has `num_res_blocks` blocks.
* `decoder.up.{i}` is stored by level index, so `decoder.up.{L-1}` (lowest resolution) runs first
  and `decoder.up.0` last; every level but 0 has an `upsample`. Each level has `num_res_blocks + 1` blocks.
* A level gets one attention block after each res-block iff its resolution (derived from
  `config.resolution`, halved per level) is in `attn_resolutions`. The structure is fixed at
  construction; any input size that is a multiple of the downsample factor runs through it.
"""

from __future__ import annotations

import torch
from torch import nn

from unix_core.vq.config import VQConfig
from unix_core.vq.layers import Downsample, Normalize, ResnetBlock, Upsample, make_attn, swish


def _mid_block(channels: int, config: VQConfig) -> nn.Module:
    mid = nn.Module()
    mid.block_1 = ResnetBlock(channels, channels, config.dropout)
    mid.attn_1 = make_attn(channels, config.attn_type)
    mid.block_2 = ResnetBlock(channels, channels, config.dropout)
    return mid


class Encoder(nn.Module):
    """(B, in_channels, S, S) pixels -> (B, z_channels, S/f, S/f) latents."""

    def __init__(self, config: VQConfig):
        super().__init__()
        self.num_resolutions = len(config.ch_mult)
        self.num_res_blocks = config.num_res_blocks
        self.conv_in = nn.Conv2d(config.in_channels, config.ch, kernel_size=3, stride=1, padding=1)
        in_ch_mult = (1, *config.ch_mult)
        curr_res = config.resolution
        self.down = nn.ModuleList()
        block_in = config.ch
        for i_level in range(self.num_resolutions):
            blocks, attns = nn.ModuleList(), nn.ModuleList()
            block_in = config.ch * in_ch_mult[i_level]
            block_out = config.ch * config.ch_mult[i_level]
            for _ in range(self.num_res_blocks):
                blocks.append(ResnetBlock(block_in, block_out, config.dropout))
                block_in = block_out
                if curr_res in config.attn_resolutions:
                    attns.append(make_attn(block_in, config.attn_type))
            level = nn.Module()
            level.block = blocks
            level.attn = attns
            if i_level != self.num_resolutions - 1:
                level.downsample = Downsample(block_in, config.resamp_with_conv)
                curr_res = curr_res // 2
            self.down.append(level)
        self.mid = _mid_block(block_in, config)
        self.norm_out = Normalize(block_in)
        self.conv_out = nn.Conv2d(block_in, config.z_channels, kernel_size=3, stride=1, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for i_level, level in enumerate(self.down):
            for i_block in range(self.num_res_blocks):
                h = level.block[i_block](h)
                if len(level.attn) > 0:
                    h = level.attn[i_block](h)
            if i_level != self.num_resolutions - 1:
                h = level.downsample(h)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        return self.conv_out(swish(self.norm_out(h)))


class Decoder(nn.Module):
    """(B, z_channels, h, w) latents -> (B, out_ch, h*f, w*f) pixels (not clamped)."""

    def __init__(self, config: VQConfig):
        super().__init__()
        self.num_resolutions = len(config.ch_mult)
        self.num_res_blocks = config.num_res_blocks
        self.tanh_out = config.tanh_out
        block_in = config.ch * config.ch_mult[-1]
        curr_res = config.resolution // 2 ** (self.num_resolutions - 1)
        self.conv_in = nn.Conv2d(config.z_channels, block_in, kernel_size=3, stride=1, padding=1)
        self.mid = _mid_block(block_in, config)
        levels: list[nn.Module] = []
        for i_level in reversed(range(self.num_resolutions)):
            blocks, attns = nn.ModuleList(), nn.ModuleList()
            block_out = config.ch * config.ch_mult[i_level]
            for _ in range(self.num_res_blocks + 1):
                blocks.append(ResnetBlock(block_in, block_out, config.dropout))
                block_in = block_out
                if curr_res in config.attn_resolutions:
                    attns.append(make_attn(block_in, config.attn_type))
            level = nn.Module()
            level.block = blocks
            level.attn = attns
            if i_level != 0:
                level.upsample = Upsample(block_in, config.resamp_with_conv)
                curr_res = curr_res * 2
            levels.insert(0, level)
        self.up = nn.ModuleList(levels)
        self.norm_out = Normalize(block_in)
        self.conv_out = nn.Conv2d(block_in, config.out_ch, kernel_size=3, stride=1, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(z)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        for i_level in reversed(range(self.num_resolutions)):
            level = self.up[i_level]
            for i_block in range(self.num_res_blocks + 1):
                h = level.block[i_block](h)
                if len(level.attn) > 0:
                    h = level.attn[i_block](h)
            if i_level != 0:
                h = level.upsample(h)
        h = self.conv_out(swish(self.norm_out(h)))
        return torch.tanh(h) if self.tanh_out else h
