"""Qwen-style decoder layer (Qwen3: q/k RMSNorm, no qkv bias; Qwen2: qkv bias, no q/k norm).

Parameter names match the official checkpoints (``self_attn.q_proj``, ``mlp.gate_proj``,
``input_layernorm``, ...). A layer runs on whatever tokens it is given (a full sequence at shared depths,
one modality's packed tokens at split depths) together with their original positions, and attends to the
keys of its own :class:`~unix_core.cache.KVBuffer` (or of the given tokens when no cache is used).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import ACT2FN
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from .attention import attend
from .cache import KVBuffer
from .config import UniXConfig


class UniXRMSNorm(nn.Module):
    """RMSNorm as in Qwen: normalised in float32, cast back, then scaled.

    float32 inputs take PyTorch's fused kernel (same arithmetic, one kernel instead of five).
    """

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32 and self.weight.dtype == torch.float32:
            return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


class UniXRotaryEmbedding(nn.Module):
    """cos/sin tables of rotary position embeddings for arbitrary (B, T) position ids."""

    def __init__(self, config: UniXConfig) -> None:
        super().__init__()
        self.config = config
        self.rope_type = config.rope_parameters.get("rope_type", "default")
        init_fn: Callable = self.compute_default_rope_parameters
        if self.rope_type != "default":
            if self.rope_type not in ROPE_INIT_FUNCTIONS:
                raise ValueError(
                    f"rope_type={self.rope_type!r} is not supported; allowed: default, "
                    f"{', '.join(sorted(ROPE_INIT_FUNCTIONS))}"
                )
            init_fn = ROPE_INIT_FUNCTIONS[self.rope_type]
        inv_freq, self.attention_scaling = init_fn(config)
        self.inv_freq = nn.Buffer(inv_freq, persistent=False)
        self.original_inv_freq = nn.Buffer(inv_freq.clone(), persistent=False)

    @staticmethod
    def compute_default_rope_parameters(config: UniXConfig, **kwargs) -> tuple[torch.Tensor, float]:
        base = config.rope_parameters["rope_theta"]
        dim = config.head_dim
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float) / dim))
        return inv_freq, 1.0

    @torch.no_grad()
    def forward(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = positions[..., None].float() * self.inv_freq.to(positions.device)  # (B, T, D/2)
        emb = torch.cat((freqs, freqs), dim=-1)  # (B, T, D)
        return (emb.cos() * self.attention_scaling).to(dtype), (emb.sin() * self.attention_scaling).to(dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (B, H, T, D); cos/sin (B, T, D)."""
    cos, sin = cos[:, None], sin[:, None]
    return x * cos + _rotate_half(x) * sin


class UniXAttention(nn.Module):
    def __init__(self, config: UniXConfig) -> None:
        super().__init__()
        self.config = config
        self.n_heads = config.num_attention_heads
        self.n_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        bias = config.attention_bias
        self.q_proj = nn.Linear(config.hidden_size, self.n_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(config.hidden_size, self.n_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(config.hidden_size, self.n_kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, config.hidden_size, bias=False)
        if config.qk_norm:
            self.q_norm = UniXRMSNorm(self.head_dim, config.rms_norm_eps)
            self.k_norm = UniXRMSNorm(self.head_dim, config.rms_norm_eps)
        else:
            self.q_norm = self.k_norm = None

    def project(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, T, C) -> q (B, H, T, D), k and v (B, H_kv, T, D), with q/k norm and RoPE applied."""
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_heads, self.head_dim)
        k = self.k_proj(x).view(B, T, self.n_kv_heads, self.head_dim)
        v = self.v_proj(x).view(B, T, self.n_kv_heads, self.head_dim)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q = apply_rotary(q.transpose(1, 2), cos, sin)
        k = apply_rotary(k.transpose(1, 2), cos, sin)
        return q, k, v.transpose(1, 2)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        positions: torch.Tensor,
        valid: torch.Tensor,
        counts: torch.Tensor | None,
        kv_buffer: KVBuffer | None,
    ) -> torch.Tensor:
        B, T, _ = x.shape
        q, k, v = self.project(x, cos, sin)
        if kv_buffer is not None:
            k_all, v_all, k_positions, k_allowed = kv_buffer.append(k, v, positions, valid, counts)
            self_attention = k_all.shape[2] == T and not kv_buffer.ragged
        else:
            k_all, v_all, k_positions = k, v, positions
            k_allowed = None if counts is None and bool(valid.all()) else valid
            self_attention = True
        out = attend(
            q,
            k_all,
            v_all,
            q_positions=positions,
            k_positions=k_positions,
            k_allowed=k_allowed,
            self_attention=self_attention,
            implementation=self.config._attn_implementation,
        )  # (B, H, T, D)
        return self.o_proj(out.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim))


class UniXMLP(nn.Module):
    def __init__(self, config: UniXConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)
        self.act_fn = ACT2FN[config.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


class UniXDecoderLayer(nn.Module):
    def __init__(self, config: UniXConfig) -> None:
        super().__init__()
        self.self_attn = UniXAttention(config)
        self.mlp = UniXMLP(config)
        self.input_layernorm = UniXRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = UniXRMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        positions: torch.Tensor,
        valid: torch.Tensor,
        counts: torch.Tensor | None = None,
        kv_buffer: KVBuffer | None = None,
    ) -> torch.Tensor:
        """x (B, T, C) with positions (B, T) and valid (B, T); ``counts`` (B,) real tokens per packed row."""
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, positions, valid, counts, kv_buffer)
        return x + self.mlp(self.post_attention_layernorm(x))


def linear_rows(x: torch.Tensor, layer: nn.Linear, start: int, stop: int) -> torch.Tensor:
    """``layer(x)[..., start:stop]`` computing only those output rows."""
    bias = None if layer.bias is None else layer.bias[start:stop]
    return F.linear(x, layer.weight[start:stop], bias)
