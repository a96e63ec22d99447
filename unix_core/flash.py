"""flash-attn kernels for :func:`unix_core.attention.attend` (optional, CUDA only).

Layouts: inputs come as (B, H, T, D) like SDPA; flash-attn wants (B, T, H, D), or (total, H, D) packed
for the variable-length kernel. Grouped-query heads are handled by the kernels themselves.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from flash_attn import flash_attn_func, flash_attn_varlen_func


def causal(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    out = flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), causal=True)
    return out.transpose(1, 2)


def full(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    out = flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), causal=False)
    return out.transpose(1, 2)


def causal_varlen(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Causal self-attention over the allowed tokens of each row (others are dropped, their output is 0).

    Valid for self-attention only: allowed tokens of a row are in increasing position order, so causal
    attention over the compacted row equals the position rule.
    """
    B, H, T, D = q.shape
    lengths = allowed.sum(dim=1, dtype=torch.int32)
    cu_seqlens = F.pad(torch.cumsum(lengths, dim=0, dtype=torch.int32), (1, 0))
    max_len = int(lengths.max())
    q_packed = q.transpose(1, 2)[allowed]  # (total, H, D)
    k_packed = k.transpose(1, 2)[allowed]  # (total, H_kv, D)
    v_packed = v.transpose(1, 2)[allowed]
    out_packed = flash_attn_varlen_func(
        q_packed, k_packed, v_packed, cu_seqlens, cu_seqlens, max_len, max_len, causal=True
    )
    out = q.new_zeros((B, T, H, D))
    out[allowed] = out_packed
    return out.transpose(1, 2)
