"""Reference Uni-X computation in the style of the official inference code, for tests and benchmarks only.

At a split depth BOTH the text layer and its vision twin run on EVERY position, with boolean masks
causal ∧ same-modality, and each position keeps the output of its own modality's layer; shared depths use
causal attention over real tokens. Attention is written out by hand from the weights (no shared code with
``unix_core.layers`` beyond reading parameters), so it is an independent check of the split
implementation. ``OracleCache`` keeps full-length K/V for both twins, as the official cache does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from unix_core import UniXForCausalLM, vision_token_mask


def _rms(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    xf = x.float()
    return weight * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def _rope(x: torch.Tensor, positions: torch.Tensor, theta: float) -> torch.Tensor:
    """x (B, H, T, D), positions (B, T)."""
    d = x.shape[-1]
    inv = 1.0 / (theta ** (torch.arange(0, d, 2, dtype=torch.float) / d))
    ang = positions[:, None, :, None].float() * inv  # (B, 1, T, D/2)
    cos, sin = torch.cat([ang.cos()] * 2, -1).to(x.dtype), torch.cat([ang.sin()] * 2, -1).to(x.dtype)
    x1, x2 = x[..., : d // 2], x[..., d // 2 :]
    return x * cos + torch.cat([-x2, x1], -1) * sin


def _layer(layer, cfg, h, positions, mask, past=None):
    """One decoder layer over all positions of h (B, T, C) with an explicit (B, T, L) mask.

    ``past``: optional (k, v) of earlier tokens (B, H_kv, P, D). Returns (out, (k_all, v_all)).
    """
    B, T, _ = h.shape
    a = layer.self_attn
    x = _rms(h, layer.input_layernorm.weight, cfg.rms_norm_eps)
    q = F.linear(x, a.q_proj.weight, a.q_proj.bias).view(B, T, cfg.num_attention_heads, cfg.head_dim)
    k = F.linear(x, a.k_proj.weight, a.k_proj.bias).view(B, T, cfg.num_key_value_heads, cfg.head_dim)
    v = F.linear(x, a.v_proj.weight, a.v_proj.bias).view(B, T, cfg.num_key_value_heads, cfg.head_dim)
    if cfg.qk_norm:
        q = _rms(q, a.q_norm.weight, cfg.rms_norm_eps)
        k = _rms(k, a.k_norm.weight, cfg.rms_norm_eps)
    theta = cfg.rope_parameters["rope_theta"]
    q = _rope(q.transpose(1, 2), positions, theta)
    k = _rope(k.transpose(1, 2), positions, theta)
    v = v.transpose(1, 2)
    if past is not None:
        k, v = torch.cat([past[0], k], 2), torch.cat([past[1], v], 2)
    rep = cfg.num_attention_heads // cfg.num_key_value_heads
    kk, vv = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
    scores = (q @ kk.transpose(-1, -2)) / cfg.head_dim**0.5
    m = mask | ~mask.any(-1, keepdim=True)
    scores = scores.masked_fill(~m[:, None], float("-inf"))
    att = scores.softmax(-1) @ vv  # (B, H, T, D)
    h = h + F.linear(att.transpose(1, 2).reshape(B, T, -1), a.o_proj.weight)
    x = _rms(h, layer.post_attention_layernorm.weight, cfg.rms_norm_eps)
    mlp = layer.mlp
    h = h + F.linear(F.silu(F.linear(x, mlp.gate_proj.weight)) * F.linear(x, mlp.up_proj.weight), mlp.down_proj.weight)
    return h, (k, v)


class OracleCache:
    def __init__(self) -> None:
        self.kv: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]] = {}
        self.valid = None  # (B, P) real-token mask of all past tokens
        self.vision = None  # (B, P) vision mask of all past tokens
        self.positions = None  # (B, P)


@torch.no_grad()
def oracle_forward(
    model: UniXForCausalLM,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    cache: OracleCache | None = None,
) -> torch.Tensor:
    """Logits (B, T, V) computed the official way: both twins on every position, masked."""
    cfg = model.config
    B, T = input_ids.shape
    valid = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask[:, -T:].bool()
    vis = vision_token_mask(input_ids, cfg.real_text_vocab_size, cfg.vision_start_id)
    start = torch.zeros(B, dtype=torch.long) if cache is None or cache.valid is None else cache.valid.sum(1)
    positions = (start[:, None] + valid.cumsum(1) - 1).clamp(min=0)
    if cache is not None and cache.valid is not None:
        all_valid = torch.cat([cache.valid, valid], 1)
        all_vis = torch.cat([cache.vision, vis], 1)
        all_pos = torch.cat([cache.positions, positions], 1)
    else:
        all_valid, all_vis, all_pos = valid, vis, positions
    P = all_valid.shape[1] - T
    idx_q = torch.arange(P, P + T)[:, None]
    causal = (torch.arange(P + T)[None, :] <= idx_q)[None] & all_valid[:, None, :]  # (B, T, L)
    same_text = ~vis[:, :, None] & ~all_vis[:, None, :]
    same_vision = vis[:, :, None] & all_vis[:, None, :]
    h = model.model.embed_tokens(input_ids)
    E, D0 = cfg.num_vision_encode_layers, cfg.first_decode_depth
    for d in range(cfg.num_hidden_layers):
        past = None if cache is None else cache.kv.get((d, "text"))
        if d < E or d >= D0:
            twin = model.model.vision_encode_layers[d] if d < E else model.model.vision_decode_layers[d - D0]
            ht, kv_t = _layer(model.model.layers[d], cfg, h, positions, causal & same_text, past)
            past_v = None if cache is None else cache.kv.get((d, "vision"))
            hv, kv_v = _layer(twin, cfg, h, positions, causal & same_vision, past_v)
            h = torch.where(vis[..., None], hv, ht)
            if cache is not None:
                cache.kv[(d, "text")], cache.kv[(d, "vision")] = kv_t, kv_v
        else:
            h, kv = _layer(model.model.layers[d], cfg, h, positions, causal, past)
            if cache is not None:
                cache.kv[(d, "text")] = kv
    if cache is not None:
        cache.valid, cache.vision, cache.positions = all_valid, all_vis, all_pos
    h = _rms(h, model.model.norm.weight, cfg.rms_norm_eps)
    return F.linear(h, model.lm_head.weight)
