"""Attention kernels: PyTorch SDPA by default, flash-attn kernels when configured and usable.

Masking is expressed through positions: a query may see a key when the key's position is not later than
the query's and the key is allowed (a real token of this buffer). That single rule covers full prefill,
cached decoding, left padding and the per-modality packed sub-sequences of split layers, because every
token keeps its original sequence position.

``flash_attention_2`` is used only where it needs no explicit mask (plain causal self-attention, one query
per row over a dense cache, or padded self-attention through the variable-length kernel) and only on CUDA
in float16/bfloat16; every other call falls back to SDPA, which gives the same result within tolerance.
"""

from __future__ import annotations

import importlib.util
import logging

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

FLASH_ATTENTION = "flash_attention_2"


def flash_attn_available() -> bool:
    return importlib.util.find_spec("flash_attn") is not None


def _flash_usable(q: torch.Tensor) -> bool:
    return q.is_cuda and q.dtype in (torch.float16, torch.bfloat16) and flash_attn_available()


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    q_positions: torch.Tensor,
    k_positions: torch.Tensor,
    k_allowed: torch.Tensor | None,
    self_attention: bool,
    implementation: str | None = None,
) -> torch.Tensor:
    """q (B, H, Tq, D), k/v (B, H_kv, L, D) -> (B, H, Tq, D).

    ``k_allowed`` (B, L) marks keys that may be attended to (None: all). ``self_attention`` says the keys
    are exactly the queries' own tokens in the same order (a fresh prefill).
    """
    Tq = q.shape[2]
    if implementation == FLASH_ATTENTION and _flash_usable(q):
        from . import flash  # imported lazily: flash-attn is optional

        if self_attention and k_allowed is None:
            return flash.causal(q, k, v)
        if self_attention:
            return flash.causal_varlen(q, k, v, k_allowed)
        if k_allowed is None and Tq == 1:
            return flash.full(q, k, v)
    gqa = q.shape[1] != k.shape[1]
    if self_attention and k_allowed is None:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
    if k_allowed is None and Tq == 1:
        return F.scaled_dot_product_attention(q, k, v, enable_gqa=gqa)
    mask = k_positions[:, None, :] <= q_positions[:, :, None]  # (B, Tq, L)
    if k_allowed is not None:
        mask = mask & k_allowed[:, None, :]
    # A query with no visible key (left padding, empty pack slots) attends everywhere instead of producing
    # NaNs; its output is never used.
    mask = mask | ~mask.any(dim=-1, keepdim=True)
    if gqa and q.is_cuda:
        # Memory-efficient SDPA kernels take masks but not grouped heads.
        repeat = q.shape[1] // k.shape[1]
        k, v, gqa = k.repeat_interleave(repeat, dim=1), v.repeat_interleave(repeat, dim=1), False
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None], enable_gqa=gqa)
