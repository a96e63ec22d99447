"""Nearest-neighbour vector quantiser with taming's distance formula and parameter name.

The codebook is `quantize.embedding.weight`, shape (n_embed, embed_dim). The code of a latent
vector z is `argmin_j |z|^2 + |e_j|^2 - 2 z.e_j` (first index on ties), computed exactly like
the official `VectorQuantizer2`, so codes reproduce the official ones bit for bit in float32.
Latents are flattened in (batch, row, column) order: codes are in raster order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


def squared_distances(vectors: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """(N, D), (K, D) -> (N, K) squared distances, official formula and operation order."""
    return (
        torch.sum(vectors**2, dim=1, keepdim=True)
        + torch.sum(codebook**2, dim=1)
        - 2 * torch.einsum("bd,dn->bn", vectors, codebook.transpose(0, 1))
    )


def nearest_codes(vectors: torch.Tensor, codebook: torch.Tensor, chunk_size: int = 4096) -> torch.Tensor:
    """(N, D) vectors -> (N,) int64 index of the nearest codebook row (first index on ties).

    Half-precision inputs are compared in float32. Rows are processed in chunks so that the
    (chunk, K) distance matrix stays small; chunking does not change any result.
    """
    if vectors.dtype in (torch.float16, torch.bfloat16):
        vectors, codebook = vectors.float(), codebook.float()
    if vectors.shape[0] <= chunk_size:
        return torch.argmin(squared_distances(vectors, codebook), dim=1)
    return torch.cat([torch.argmin(squared_distances(part, codebook), dim=1) for part in vectors.split(chunk_size)])


@dataclass
class QuantizerOutput:
    """Result of a training-mode quantisation.

    quantized: (B, C, h, w) straight-through latents (forward value = codebook rows, gradient flows to z).
    codes: (B, h, w) int64 indices. codebook_loss / commitment_loss: scalars, mean squared errors
    (codebook rows pulled to detached z, z pulled to detached rows; the caller weighs them).
    flat_latents: (B*h*w, C) the detached encoder latents (for dead-code restarts).
    """

    quantized: torch.Tensor
    codes: torch.Tensor
    codebook_loss: torch.Tensor
    commitment_loss: torch.Tensor
    flat_latents: torch.Tensor


class VectorQuantizer(nn.Module):
    """Codebook of `n_embed` vectors of `embed_dim` dims (state-dict key `embedding.weight`)."""

    def __init__(self, n_embed: int, embed_dim: int):
        super().__init__()
        self.n_embed = n_embed
        self.embed_dim = embed_dim
        self.embedding = nn.Embedding(n_embed, embed_dim)

    def codes_for(self, z: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) latents -> (B, h, w) int64 codes in raster order."""
        b, c, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).contiguous().view(-1, c)  # (B*h*w, C)
        return nearest_codes(flat, self.embedding.weight).view(b, h, w)

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, h, w) int64 codes -> (B, C, h, w) codebook rows, channels first."""
        return self.embedding(codes).permute(0, 3, 1, 2).contiguous()  # (B, h, w, C) -> (B, C, h, w)

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        """Training-mode quantisation with the straight-through estimator."""
        b, c, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, c)  # (B*h*w, C)
        codes = nearest_codes(flat.detach(), self.embedding.weight.detach())
        rows = self.embedding(codes)  # (B*h*w, C)
        codebook_loss = F.mse_loss(rows, flat.detach())
        commitment_loss = F.mse_loss(flat, rows.detach())
        straight_through = flat + (rows - flat).detach()
        quantized = straight_through.view(b, h, w, c).permute(0, 3, 1, 2).contiguous()  # (B, C, h, w)
        return QuantizerOutput(quantized, codes.view(b, h, w), codebook_loss, commitment_loss, flat.detach())
