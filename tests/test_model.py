"""Tests for unix_core.model / cache / attention: golden parity, oracle parity, caching, padding."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers import mixed_ids, random_model, tiny_config
from tests.oracle import OracleCache, oracle_forward
from unix_core import UniXCache, UniXConfig, UniXForCausalLM, vision_token_mask
from unix_core.model import output_cache

GOLDEN_INPUTS = {"unix_tiny": ["mixed", "t2i_prefix", "caption"], "unix_tiny_shared": ["mixed_short"]}
TOL = 1e-4


@pytest.fixture(scope="module", params=sorted(GOLDEN_INPUTS))
def golden(request, fixtures_dir):
    folder = fixtures_dir / request.param
    model = UniXForCausalLM.from_pretrained(folder).eval()
    return request.param, model, load_file(folder / "vectors.safetensors")


@torch.no_grad()
def test_golden_prefill_logits(golden):
    name, model, vec = golden
    for x in GOLDEN_INPUTS[name]:
        ids, mask = vec[f"{x}.input_ids"], vec[f"{x}.attention_mask"]
        cfg = model.config
        assert torch.equal(vision_token_mask(ids, cfg.real_text_vocab_size, cfg.vision_start_id), vec[f"{x}.vision_mask"])
        logits = model(ids, mask).logits
        torch.testing.assert_close(logits, vec[f"{x}.prefill_logits"], atol=TOL, rtol=0)


@torch.no_grad()
@pytest.mark.parametrize("split", ["decode", "decode_b"])
def test_golden_cached_decode_steps(golden, split):
    """The official decode protocol: prefill P tokens, then one token per call with the growing mask."""
    name, model, vec = golden
    for x in GOLDEN_INPUTS[name]:
        ids, mask = vec[f"{x}.input_ids"], vec[f"{x}.attention_mask"]
        P = int(vec[f"{x}.{split}.prefill_len"][0])
        out = model(ids[:, :P], mask[:, :P], use_cache=True)
        cache = output_cache(out)
        assert isinstance(cache, UniXCache)
        for k, token in enumerate(vec[f"{x}.{split}.step_input_ids"]):
            assert token == ids[0, P + k]
            out = model(ids[:, P + k : P + k + 1], mask[:, : P + k + 1], past_key_values=cache, use_cache=True)
            torch.testing.assert_close(out.logits[0, -1], vec[f"{x}.{split}.step_logits"][k], atol=TOL, rtol=0)


def test_golden_checkpoint_is_qwen3_with_split(golden):
    name, model, _ = golden
    cfg = model.config
    assert cfg.backbone == "qwen3" and cfg.qk_norm and not cfg.attention_bias
    if name == "unix_tiny":
        assert (cfg.num_vision_encode_layers, cfg.num_vision_decode_layers) == (3, 2)
        assert model.model.split_depths == {0, 1, 2, 6, 7}
    else:
        assert model.model.split_depths == set()


# --------------------------------------------------------------------------------------------------
# Split implementation == both-branches-and-mask oracle

LAYOUTS = {
    "mixed": [("text", 7), ("start", 1), ("image", 12), ("end", 1), ("text", 5)],
    "t2i": [("text", 9), ("start", 1), ("image", 10)],
    "text_only": [("text", 15)],
    "image_only": [("start", 1), ("image", 14)],
    "two_images": [("text", 3), ("start", 1), ("image", 6), ("end", 1), ("text", 2), ("start", 1), ("image", 6), ("end", 1), ("text", 3)],
}


@torch.no_grad()
@pytest.mark.parametrize("backbone", ["qwen3", "qwen2"])
@pytest.mark.parametrize("split", [(2, 1), (0, 0), (3, 0), (0, 2), (3, 3)])
def test_split_equals_masked_oracle(backbone, split):
    model = random_model(seed=1, backbone=backbone, num_vision_encode_layers=split[0], num_vision_decode_layers=split[1])
    for i, layout in enumerate(LAYOUTS.values()):
        ids = mixed_ids(model.config, layout, seed=i)
        torch.testing.assert_close(model(ids).logits, oracle_forward(model, ids), atol=TOL, rtol=0)


@torch.no_grad()
def test_oracle_is_sensitive_to_routing():
    """Guard against a vacuous oracle: routing <|vision_start|> as text changes the logits clearly."""
    model = random_model(seed=1)
    ids = mixed_ids(model.config, LAYOUTS["mixed"])
    ref = model(ids).logits
    model.config.vision_start_id = 97  # now the real marker (98) is routed as text
    assert (model(ids).logits - ref).abs().max() > 0.05


@torch.no_grad()
def test_qwen2_backbone_has_bias_and_no_qk_norm():
    model = random_model(backbone="qwen2")
    attn = model.model.layers[0].self_attn
    assert attn.q_proj.bias is not None and attn.k_proj.bias is not None and attn.o_proj.bias is None
    assert attn.q_norm is None
    assert "model.layers.0.self_attn.q_proj.bias" in model.state_dict()
    assert not any("q_norm" in k for k in model.state_dict())


@torch.no_grad()
@pytest.mark.parametrize("backbone", ["qwen3", "qwen2"])
def test_zero_split_equals_stock_transformers(backbone):
    """0 separated layers is a plain shared transformer: stock Qwen2/Qwen3 give the same logits."""
    from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM

    model = random_model(seed=3, backbone=backbone, num_vision_encode_layers=0, num_vision_decode_layers=0)
    c = model.config
    common = dict(
        vocab_size=c.vocab_size, hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
        num_hidden_layers=c.num_hidden_layers, num_attention_heads=c.num_attention_heads,
        num_key_value_heads=c.num_key_value_heads, rms_norm_eps=c.rms_norm_eps, tie_word_embeddings=False,
        max_position_embeddings=c.max_position_embeddings,
    )
    if backbone == "qwen3":
        stock = Qwen3ForCausalLM(Qwen3Config(head_dim=c.head_dim, **common))
    else:
        stock = Qwen2ForCausalLM(Qwen2Config(**common))
    stock.load_state_dict(model.state_dict(), strict=True)
    ids = mixed_ids(c, LAYOUTS["mixed"])
    torch.testing.assert_close(model(ids).logits, stock.eval()(ids).logits, atol=TOL, rtol=0)


# --------------------------------------------------------------------------------------------------
# Caching and batching


@torch.no_grad()
@pytest.mark.parametrize("chunks", [[10, 1, 1, 1, 4, 1, 8], [1] * 26, [26], [3, 9, 14]])
def test_cached_equals_uncached(chunks):
    model = random_model(seed=2)
    ids = mixed_ids(model.config, LAYOUTS["mixed"], seed=5)
    full = model(ids).logits
    cache, start, got = None, 0, []
    for n in chunks:
        out = model(ids[:, start : start + n], past_key_values=cache, use_cache=True)
        cache, start = output_cache(out), start + n
        got.append(out.logits)
    assert start == ids.shape[1] and cache.get_seq_length() == start
    torch.testing.assert_close(torch.cat(got, 1), full, atol=TOL, rtol=0)


def _left_pad(rows: list[torch.Tensor], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    n = max(r.shape[1] for r in rows)
    ids = torch.full((len(rows), n), pad_id)
    mask = torch.zeros((len(rows), n), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, n - r.shape[1] :] = r[0]
        mask[i, n - r.shape[1] :] = 1
    return ids, mask


@torch.no_grad()
@pytest.mark.parametrize("pad_id", [0, 99, 98])
def test_left_padded_batch_equals_single_rows(pad_id):
    """CFG-style batch: rows of different lengths and modality mixes, left padded, then decoded together.

    ``pad_id`` 98 is the vision-start id: even a pad id that routes to the vision branch must not leak.
    """
    model = random_model(seed=4)
    cfg = model.config
    rows = [
        mixed_ids(cfg, [("text", 12), ("start", 1)], seed=1),
        mixed_ids(cfg, [("text", 1), ("start", 1)], seed=2),
        mixed_ids(cfg, [("start", 1), ("image", 5), ("end", 1), ("text", 4), ("start", 1)], seed=3),
    ]
    steps = mixed_ids(cfg, [("image", 6)], seed=9)[0]
    singles = []
    for r in rows:
        out = model(r, use_cache=True)
        logits, cache = [out.logits[0, -1]], output_cache(out)
        for t in steps:
            out = model(t.view(1, 1), past_key_values=cache, use_cache=True)
            logits.append(out.logits[0, -1])
        singles.append(torch.stack(logits))
    ids, mask = _left_pad(rows, pad_id)
    out = model(ids, mask, use_cache=True)
    batched, cache = [out.logits[:, -1]], output_cache(out)
    for t in steps:
        mask = torch.cat([mask, torch.ones(len(rows), 1, dtype=torch.long)], 1)
        out = model(t.expand(len(rows), 1).contiguous(), mask, past_key_values=cache, use_cache=True)
        batched.append(out.logits[:, -1])
    batched = torch.stack(batched, 1)
    for i, single in enumerate(singles):
        torch.testing.assert_close(batched[i], single, atol=TOL, rtol=0)
    # The padded prefill also matches the oracle at the real positions.
    ref = oracle_forward(model, ids, _left_pad(rows, pad_id)[1])
    full = model(ids, _left_pad(rows, pad_id)[1]).logits
    real = _left_pad(rows, pad_id)[1].bool()
    torch.testing.assert_close(full[real], ref[real], atol=TOL, rtol=0)


@torch.no_grad()
def test_mixed_modality_decode_step_across_rows():
    """One decode call where row 0 feeds a text token and row 1 an image token (ragged split caches)."""
    model = random_model(seed=6)
    cfg = model.config
    prompt = mixed_ids(cfg, [("text", 4), ("start", 1), ("image", 3)], seed=1).expand(2, -1).contiguous()
    nxt = torch.tensor([[5], [cfg.real_text_vocab_size + 7]])
    nxt2 = torch.tensor([[cfg.real_text_vocab_size + 1], [6]])
    out = model(prompt, use_cache=True)
    out = model(nxt, past_key_values=output_cache(out), use_cache=True)
    out = model(nxt2, past_key_values=output_cache(out), use_cache=True)
    full = model(torch.cat([prompt, nxt, nxt2], 1)).logits[:, -1]
    torch.testing.assert_close(out.logits[:, -1], full, atol=TOL, rtol=0)
    cache = oracle_cache = OracleCache()
    oracle_forward(model, torch.cat([prompt, nxt], 1), cache=cache)
    torch.testing.assert_close(oracle_forward(model, nxt2, cache=oracle_cache)[:, -1], full, atol=TOL, rtol=0)


@torch.no_grad()
def test_split_caches_hold_only_their_modality():
    model = random_model(seed=0)
    cfg = model.config
    ids = mixed_ids(cfg, [("text", 9), ("start", 1), ("image", 20)])
    cache = model(ids, use_cache=True).past_key_values
    n_vision = int(vision_token_mask(ids, cfg.real_text_vocab_size, cfg.vision_start_id).sum())
    for d in model.model.split_depths:
        assert int(cache.buffer(d, "vision").lengths[0]) == n_vision == 21
        assert int(cache.buffer(d, "text").lengths[0]) == ids.shape[1] - n_vision == 9
    for d in set(range(cfg.num_hidden_layers)) - model.model.split_depths:
        assert int(cache.buffer(d, "shared").lengths[0]) == ids.shape[1]


@torch.no_grad()
def test_image_decode_step_touches_only_vision_branches_and_shared_layers():
    model = random_model(seed=0)
    cfg = model.config
    ids = mixed_ids(cfg, [("text", 5), ("start", 1), ("image", 4)]).expand(2, -1).contiguous()
    cache = model(ids, use_cache=True).past_key_values
    called = []
    hooks = [m.register_forward_hook(lambda mod, *_, name=n: called.append(name))
             for n, m in model.model.named_modules() if n.count(".") == 1 and "layers." in n]
    model(torch.full((2, 1), cfg.real_text_vocab_size + 3), past_key_values=cache, use_cache=True)
    for h in hooks:
        h.remove()
    shared = [f"layers.{d}" for d in range(cfg.num_hidden_layers) if d not in model.model.split_depths]
    vision = [f"vision_encode_layers.{j}" for j in range(cfg.num_vision_encode_layers)]
    vision += [f"vision_decode_layers.{j}" for j in range(cfg.num_vision_decode_layers)]
    assert sorted(called) == sorted(shared + vision)


def test_attention_mask_shape_error():
    model = random_model()
    with pytest.raises(ValueError, match="attention_mask"):
        model(torch.zeros(2, 5, dtype=torch.long), torch.ones(2, 3))


# --------------------------------------------------------------------------------------------------
# Config validation and import hygiene


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(num_vision_encode_layers=4, num_vision_decode_layers=3), "exceeds num_hidden_layers"),
        (dict(vocab_size=150), "exceeds vocab_size"),
        (dict(vision_start_id=120), "vision_start_id"),
        (dict(backbone="llama"), "backbone"),
        (dict(num_key_value_heads=3), "multiple of num_key_value_heads"),
        (dict(add_share_ffn=1), "add_share_ffn"),
    ],
)
def test_config_rejects_invalid_values(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**overrides)


def test_unix_core_does_not_import_gradio():
    code = "import sys, unix_core, unix_core.convert, unix_core.loading; assert 'gradio' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_config_save_keeps_official_fields(tmp_path):
    cfg = tiny_config()
    cfg.save_pretrained(tmp_path)
    import json

    data = json.loads((tmp_path / "config.json").read_text())
    for key in ("num_vision_encode_layers", "num_vision_decode_layers", "real_text_vocab_size",
                "vision_vocab_size", "vision_start_id", "rope_theta"):
        assert key in data
    again = UniXConfig.from_pretrained(tmp_path)
    assert again.to_dict() == cfg.to_dict()
