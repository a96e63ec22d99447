"""A tiny random Uni-X checkpoint folder with a word-level text tokenizer and the golden tiny VQGAN."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.helpers import redraw_
from unix_core import UniXConfig, UniXForCausalLM

SPECIALS = ["<|endoftext|>", "<unk>", "<|vision_start|>", "<|vision_end|>", "<unconditional>"]
WORDS = (
    "a an the small large red green blue yellow purple orange white black circle square triangle at on "
    "background and top bottom left right center what color is how many shapes are there where edit caption "
    "question answer make move remove add change to this one yes no two three : ? . ,"
).split()


def build_tokenizer(folder: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIALS + WORDS)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        unk_token="<unk>",
        additional_special_tokens=["<|vision_start|>", "<|vision_end|>", "<unconditional>"],
    )
    tokenizer.save_pretrained(folder)
    return tokenizer


def build_checkpoint(folder: Path, fixtures_dir: Path, *, family: str = "shapes", seed: int = 0, **overrides) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(folder)
    vocab = tokenizer.get_vocab()
    text_vocab = len(tokenizer)
    fields = dict(
        vocab_size=text_vocab + 64, real_text_vocab_size=text_vocab, vision_vocab_size=64,
        vision_start_id=vocab["<|vision_start|>"], vision_end_id=vocab["<|vision_end|>"],
        eos_token_id=vocab["<|endoftext|>"], hidden_size=64, intermediate_size=96, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, num_vision_encode_layers=1, num_vision_decode_layers=1,
        max_position_embeddings=1024,
    )
    fields.update(overrides)
    model = redraw_(UniXForCausalLM(UniXConfig(**fields)), seed)
    model.save_pretrained(folder)
    for name in ("vqgan.yaml", "vqgan.ckpt"):
        shutil.copy(fixtures_dir / "vqgan_tiny" / name, folder / name)
    # one candidate per image (no self-check) unless a test asks for more: keeps image tests fast and direct
    templates = {"family": family, "defaults": {"text_to_image": {"candidates": 1}}}
    (folder / "prompt_templates.json").write_text(json.dumps(templates))
    return folder
