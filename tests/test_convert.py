"""Tests for unix_core.convert: plain Qwen2/Qwen3 -> Uni-X, and save/reload round trips."""

from __future__ import annotations

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM

from tests.helpers import mixed_ids, redraw_
from tests.oracle import oracle_forward
from unix_core import UniXForCausalLM
from unix_core.convert import convert_qwen_to_unix

TEXT_VOCAB = 90  # the tokenizer's length; the base embedding has 96 rows (padded, like real Qwen)


def _plain_qwen(backbone: str, tie: bool, seed: int = 0):
    common = dict(
        vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=5, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=tie, rope_theta=50000.0,
    )
    if backbone == "qwen3":
        model = Qwen3ForCausalLM(Qwen3Config(head_dim=8, **common))
    else:
        model = Qwen2ForCausalLM(Qwen2Config(**common))
    return redraw_(model, seed).eval()


@pytest.fixture(params=[("qwen3", False), ("qwen3", True), ("qwen2", True)], ids=["qwen3", "qwen3-tied", "qwen2-tied"])
def plain_folder(request, tmp_path):
    backbone, tie = request.param
    model = _plain_qwen(backbone, tie)
    folder = tmp_path / "plain"
    model.save_pretrained(folder)
    return folder, model


def _convert(source):
    return convert_qwen_to_unix(
        source, num_vision_encode_layers=2, num_vision_decode_layers=1, vision_vocab_size=40,
        real_text_vocab_size=TEXT_VOCAB, vision_start_id=88, vision_end_id=89,
    )


@torch.no_grad()
def test_converted_model_keeps_text_behaviour(plain_folder):
    folder, plain = plain_folder
    model = _convert(folder)
    cfg = model.config
    assert cfg.vocab_size == 96 + 40 and cfg.real_text_vocab_size == TEXT_VOCAB
    assert cfg.rope_parameters["rope_theta"] == 50000.0
    ids = torch.randint(0, 88, (2, 17), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(model(ids).logits[..., :96], plain(ids).logits, atol=1e-5, rtol=0)


@torch.no_grad()
def test_vision_twins_are_copies_and_new_rows_are_mean(plain_folder):
    folder, plain = plain_folder
    model = _convert(folder)
    sd, src = model.state_dict(), plain.state_dict()
    for j, depth in [(0, 0), (1, 1)]:
        for name, p in model.model.vision_encode_layers[j].state_dict().items():
            assert torch.equal(p, src[f"model.layers.{depth}.{name}"])
    for name, p in model.model.vision_decode_layers[0].state_dict().items():
        assert torch.equal(p, src[f"model.layers.4.{name}"])
    emb = sd["model.embed_tokens.weight"]
    assert torch.equal(emb[:96], src["model.embed_tokens.weight"])
    torch.testing.assert_close(emb[96:], src["model.embed_tokens.weight"].mean(0).expand(40, -1))
    if model.config.tie_word_embeddings:
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()


@torch.no_grad()
def test_save_and_reload_round_trips_exactly(plain_folder, tmp_path):
    folder, _ = plain_folder
    model = _convert(folder)
    out = tmp_path / "unix"
    model.save_pretrained(out)
    again = UniXForCausalLM.from_pretrained(out)
    assert again.config.to_dict() == model.config.to_dict() | {"_name_or_path": again.config._name_or_path}
    a, b = model.state_dict(), again.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ids = mixed_ids(model.config, [("text", 5), ("start", 1), ("image", 7), ("end", 1), ("text", 3)])
    torch.testing.assert_close(again(ids).logits, model(ids).logits, atol=0, rtol=0)
    torch.testing.assert_close(again(ids).logits, oracle_forward(again, ids), atol=1e-4, rtol=0)


def test_convert_from_loaded_model_and_bad_arguments():
    plain = _plain_qwen("qwen3", tie=False)
    model = _convert(plain)
    assert model.config.num_vision_encode_layers == 2
    with pytest.raises(ValueError, match="vision_start_id"):
        convert_qwen_to_unix(plain, num_vision_encode_layers=1, num_vision_decode_layers=1)
    with pytest.raises(ValueError, match="exceeds num_hidden_layers"):
        convert_qwen_to_unix(plain, num_vision_encode_layers=4, num_vision_decode_layers=2,
                             real_text_vocab_size=TEXT_VOCAB, vision_start_id=88)
