"""Tiny random Uni-X models for tests and benchmarks, and a loader for the scripts under test."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from unix_core import UniXConfig, UniXForCausalLM


def tiny_config(**overrides) -> UniXConfig:
    fields = dict(
        vocab_size=160,
        real_text_vocab_size=100,
        vision_vocab_size=60,
        vision_start_id=98,
        vision_end_id=99,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=6,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_vision_encode_layers=2,
        num_vision_decode_layers=1,
        max_position_embeddings=512,
    )
    fields.update(overrides)
    return UniXConfig(**fields)


def redraw_(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Redraw every parameter like the golden checkpoints: norms 1 + 0.1 N(0,1), the rest N(0, 0.1^2).

    Larger-than-default weights make logits differ clearly between correct and subtly wrong routing.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            p.copy_((1 + 0.1 * noise) if name.endswith("norm.weight") else 0.1 * noise)
    return model


def random_model(seed: int = 0, **overrides) -> UniXForCausalLM:
    return redraw_(UniXForCausalLM(tiny_config(**overrides)), seed).eval()


def mixed_ids(cfg: UniXConfig, layout: list[tuple[str, int]], seed: int = 0) -> torch.Tensor:
    """A (1, N) sequence built from ("text", n), ("image", n), ("start", 1), ("end", 1) segments."""
    gen = torch.Generator().manual_seed(seed)
    parts = []
    for kind, n in layout:
        if kind == "text":
            parts.append(torch.randint(0, cfg.vision_start_id, (n,), generator=gen))
        elif kind == "image":
            parts.append(torch.randint(cfg.real_text_vocab_size, cfg.real_text_vocab_size + cfg.vision_vocab_size, (n,), generator=gen))
        elif kind == "start":
            parts.append(torch.full((n,), cfg.vision_start_id))
        elif kind == "end":
            parts.append(torch.full((n,), cfg.vision_end_id))
        else:
            raise ValueError(kind)
    return torch.cat(parts)[None]


def image_tokens(pipe) -> int:
    """Tokens of one image in a pipeline's sequences: its codes plus any row separators (official add_sep_for_vis),
    counted by the pipeline's own builder."""
    return len(pipe.builder.code_ids(torch.zeros(pipe.grid_hw, dtype=torch.long)))


def load_script(name: str):
    """``scripts/{name}.py`` as a module (the scripts are not a package)."""
    path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
