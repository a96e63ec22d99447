"""Tests for unix_core.attention: the flash-attn path's plumbing, checked on the CPU against SDPA.

The real flash-attn kernels need a CUDA GPU; here a pure-PyTorch stand-in with flash-attn's signatures and
layouts ((B, T, H, D) and packed (total, H, D) with cu_seqlens) is installed as the ``flash_attn`` module,
so the code that packs, unpacks and dispatches is exercised for real. A GPU run compares the real kernels.
"""

from __future__ import annotations

import sys
import types

import pytest
import torch
import torch.nn.functional as F

from tests.helpers import mixed_ids, random_model
from unix_core import attention
from unix_core.model import output_cache


def _sdpa(q, k, v, causal):  # (B, T, H, D) layout like flash-attn; GQA by head repetition
    q, k, v = (x.transpose(1, 2) for x in (q, k, v))
    rep = q.shape[1] // k.shape[1]
    out = F.scaled_dot_product_attention(q, k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1), is_causal=causal)
    return out.transpose(1, 2)


def _fake_flash_module(calls):
    def flash_attn_func(q, k, v, causal=False):
        calls.append("dense")
        return _sdpa(q, k, v, causal)

    def flash_attn_varlen_func(q, k, v, cu_q, cu_k, max_q, max_k, causal=False):
        calls.append("varlen")
        assert torch.equal(cu_q, cu_k) and cu_q.dtype == torch.int32
        outs = [
            _sdpa(q[None, a:b], k[None, a:b], v[None, a:b], causal)[0] for a, b in zip(cu_q[:-1].tolist(), cu_q[1:].tolist())
        ]
        return torch.cat(outs)

    module = types.ModuleType("flash_attn")
    module.flash_attn_func, module.flash_attn_varlen_func = flash_attn_func, flash_attn_varlen_func
    return module


@pytest.fixture
def fake_flash(monkeypatch):
    calls = []
    monkeypatch.setitem(sys.modules, "flash_attn", _fake_flash_module(calls))
    monkeypatch.delitem(sys.modules, "unix_core.flash", raising=False)
    monkeypatch.setattr(attention, "_flash_usable", lambda q: True)
    return calls


@torch.no_grad()
def test_flash_path_equals_sdpa_for_prefill_padding_and_decode(fake_flash):
    model = random_model(seed=9)
    cfg = model.config
    rows = [mixed_ids(cfg, [("text", 6), ("start", 1), ("image", 5)], seed=1), mixed_ids(cfg, [("text", 2), ("start", 1)], seed=2)]
    width = max(r.shape[1] for r in rows)
    ids = torch.zeros(2, width, dtype=torch.long)
    mask = torch.zeros(2, width, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - r.shape[1]:], mask[i, width - r.shape[1]:] = r[0], 1
    steps = torch.tensor([[cfg.real_text_vocab_size + 3], [cfg.real_text_vocab_size + 5]])

    def run():
        out = model(ids, mask, use_cache=True)
        logits = [out.logits[mask.bool()]]
        m = torch.cat([mask, torch.ones(2, 1, dtype=torch.long)], 1)
        logits.append(model(steps, m, past_key_values=output_cache(out), use_cache=True).logits)
        single = model(rows[0]).logits  # unpadded, no cache: plain causal kernel
        return logits + [single]

    reference = run()
    model.config._attn_implementation = attention.FLASH_ATTENTION
    flashed = run()
    for a, b in zip(reference, flashed):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    assert {"dense", "varlen"} <= set(fake_flash)


@pytest.mark.gpu
@torch.no_grad()
def test_real_flash_attn_kernels_match_sdpa_on_cuda():
    pytest.importorskip("flash_attn")
    model = random_model(seed=9).to("cuda", torch.bfloat16)
    ids = mixed_ids(model.config, [("text", 30), ("start", 1), ("image", 40)]).cuda()
    ref = model(ids).logits.float()
    model.config._attn_implementation = attention.FLASH_ATTENTION
    assert (model(ids).logits.float() - ref).abs().max() < 0.1
