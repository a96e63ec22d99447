"""The streaming sampler: one Python generator per request that yields an event per generated token.

It works on token ids only (no tokenizer, no UI). Closing the generator stops generation at once: the next
model call only happens when the consumer asks for the next event. Non-streaming callers drain it.

- Text: sample until every row produced an end id or ``max_new_tokens``; image ids and unused vocabulary
  rows are masked out, so only text ids can be sampled.
- Image: exactly ``h * w`` codes; the LM head is computed only over the codebook's rows, so text ids and
  unused rows can never be sampled. Classifier-free guidance runs conditional and unconditional rows in one
  left-padded batch; the sampled code is fed to both. With row separators (``add_sep_for_vis``) the
  separator is fed after every ``vis_sep_lens`` codes, never sampled (the official sampler forces it); events
  are yielded for codes only.

All per-request state (KV cache, positions, masks) lives in local variables of the generator.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from .layers import linear_rows
from .model import UniXForCausalLM, output_cache
from .prompting import with_separators
from .sampling import SamplingConfig, draw, guide

TEXT, IMAGE = "text", "image"


@dataclass
class StepEvent:
    """One generated token for every row of the batch.

    ``token_ids`` (B,) are vocabulary ids; for images ``codes`` (B,) are codebook indices and ``grid``
    (B, h, w) holds the codes so far (-1 where not generated yet). ``position`` is the index of this token
    in the generated part, ``progress`` the fraction done (for text, of ``max_new_tokens``). ``finished``
    (B,) marks rows that have ended (text: produced an end id).
    """

    step: int
    modality: str
    token_ids: torch.Tensor
    position: int
    progress: float
    finished: torch.Tensor
    codes: torch.Tensor | None = None
    grid: torch.Tensor | None = None


def left_pad(rows: list[list[int]], pad_id: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad id lists into (B, T) ids and attention mask."""
    if not rows or any(len(r) == 0 for r in rows):
        raise ValueError("every prompt row needs at least one token")
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
        mask[i, width - len(r) :] = 1
    return ids.to(device), mask.to(device)


def _step(model: UniXForCausalLM, ids, mask, cache):
    out = model.model(ids, mask, past_key_values=cache, use_cache=True)
    return out.last_hidden_state[:, -1], output_cache(out)


@torch.inference_mode()
def generate_text_stream(
    model: UniXForCausalLM,
    prompts: list[list[int]],
    *,
    max_new_tokens: int,
    end_ids: set[int],
    banned_ids: set[int] = frozenset(),
    sampling: SamplingConfig = SamplingConfig(temperature=0.0),
    generator: torch.Generator | None = None,
    pad_id: int = 0,
) -> Iterator[StepEvent]:
    """Sample text continuations of ``prompts`` (lists of ids), one event per step.

    ``banned_ids`` (e.g. ``<|vision_start|>`` for answers that must stay text) are never sampled.
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    cfg = model.config
    device = model.device
    ids, mask = left_pad(prompts, pad_id, device)
    text_rows = cfg.real_text_vocab_size
    end = torch.tensor(sorted(end_ids), device=device, dtype=torch.long)
    banned = torch.tensor(sorted(banned_ids), device=device, dtype=torch.long)
    finished = torch.zeros(len(prompts), dtype=torch.bool, device=device)
    hidden, cache = _step(model, ids, mask, None)
    for step in range(max_new_tokens):
        logits = linear_rows(hidden, model.lm_head, 0, text_rows).float()  # (B, text vocab)
        logits[:, banned] = float("-inf")
        token = draw(logits, sampling, generator)
        token = torch.where(finished, torch.full_like(token, pad_id), token)
        finished = finished | torch.isin(token, end)
        yield StepEvent(
            step=step,
            modality=TEXT,
            token_ids=token,
            position=step,
            progress=(step + 1) / max_new_tokens,
            finished=finished.clone(),
        )
        if bool(finished.all()) or step + 1 == max_new_tokens:
            return
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)  # finished rows' tokens are ignored
        hidden, cache = _step(model, token[:, None], mask, cache)


def write_plans(
    model: UniXForCausalLM,
    prompts: list[list[int]],
    *,
    vision_start_id: int,
    banned_ids: set[int] = frozenset(),
    max_new_tokens: int = 64,
    pad_id: int = 0,
) -> list[list[int]]:
    """Greedy text after each prompt until ``<|vision_start|>``: the plan a model writes before it draws (edits
    with an ``edit_plan`` template). Each returned row ends with ``<|vision_start|>`` (appended when the model
    did not write it within ``max_new_tokens``), so ``prompt + plan`` is a prompt for
    :func:`generate_image_stream`. ``banned_ids`` (e.g. end-of-text) are never written."""
    rows: list[list[int]] = [[] for _ in prompts]
    for event in generate_text_stream(model, prompts, max_new_tokens=max_new_tokens, end_ids={vision_start_id},
                                      banned_ids=set(banned_ids) - {vision_start_id},
                                      sampling=SamplingConfig(temperature=0.0), pad_id=pad_id):
        for row, out in enumerate(rows):
            if not out or out[-1] != vision_start_id:
                out.append(int(event.token_ids[row]))
    return [out if out and out[-1] == vision_start_id else out + [vision_start_id] for out in rows]


@torch.inference_mode()
def generate_image_stream(
    model: UniXForCausalLM,
    prompts: list[list[int]],
    *,
    grid_hw: tuple[int, int],
    sampling: SamplingConfig = SamplingConfig(),
    unconditional: list[int] | None = None,
    generator: torch.Generator | None = None,
    pad_id: int = 0,
    given: list[int] | None = None,
) -> Iterator[StepEvent]:
    """Sample ``h * w`` image codes after each prompt (which should end with ``<|vision_start|>``).

    With guidance (``sampling.cfg_scale != 1``) ``unconditional`` ids are required; they are batched after
    the conditional rows and receive the same sampled codes. Row separators come from ``model.config``.
    ``given``: the image's first codes (raster order), fed as they are to every row; sampling continues
    after them and events start at code ``len(given)`` (for probes that fix the start of an image).
    """
    h, w = grid_hw
    if h < 1 or w < 1:
        raise ValueError(f"grid_hw must be positive, got {grid_hw}")
    cfg = model.config
    separator = cfg.separator
    if separator is not None and (h * w) % separator[1]:
        raise ValueError(f"{h}x{w} codes do not fill rows of {separator[1]} (the checkpoint's vis_sep_lens)")
    device = model.device
    B = len(prompts)
    guided = sampling.uses_guidance
    if guided and not unconditional:
        raise ValueError("classifier-free guidance (cfg_scale != 1) needs an unconditional prompt")
    first, n_codes = cfg.real_text_vocab_size, cfg.vision_vocab_size
    total = h * w
    given = [int(c) for c in given or ()]
    if len(given) >= total or any(not 0 <= c < n_codes for c in given):
        raise ValueError(f"given must hold fewer than {total} codes, each in [0, {n_codes})")
    prefix = with_separators([code + first for code in given], separator)
    rows = prompts + [unconditional] * B if guided else prompts
    ids, mask = left_pad([row + prefix for row in rows], pad_id, device)
    grid = torch.full((B, h, w), -1, dtype=torch.long, device=device)
    grid.view(B, -1)[:, : len(given)] = torch.tensor(given, dtype=torch.long, device=device)
    hidden, cache = _step(model, ids, mask, None)
    for step in range(len(given), total):
        logits = linear_rows(hidden, model.lm_head, first, first + n_codes).float()  # (rows, codebook)
        if guided:
            cond, uncond = logits[:B], logits[B:]
            logits = guide(cond, uncond, sampling.cfg_scale) if sampling.guidance_active(step, total) else cond
        codes = draw(logits, sampling, generator)  # (B,)
        grid.view(B, -1)[:, step] = codes
        token = codes + first
        yield StepEvent(
            step=step,
            modality=IMAGE,
            token_ids=token,
            position=step,
            progress=(step + 1) / total,
            finished=torch.full((B,), step + 1 == total, device=device),
            codes=codes,
            grid=grid.clone(),
        )
        if step + 1 == total:
            return
        feed = (torch.cat([token, token]) if guided else token)[:, None]
        if separator is not None and (step + 1) % separator[1] == 0:
            feed = torch.cat([feed, torch.full_like(feed, separator[0])], dim=1)
        mask = torch.cat([mask, torch.ones_like(mask[:, : feed.shape[1]])], dim=1)
        hidden, cache = _step(model, feed, mask, cache)
