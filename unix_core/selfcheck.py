"""Self-check for text to image: draw several candidate images and keep the one the model's own captioner
finds most likely to be described by the prompt.

A unified model can read what it drew. For each candidate the caption template is rendered with the
candidate's codes and the model scores the prompt as that caption's continuation: the sum of the log-probabilities
of the prompt's tokens (over the text vocabulary, as captions are generated). No end token is scored, so a prompt
that leaves attributes out (a shorter description than the canonical caption) is not penalised for stopping. This
is reranking with the generator's own understanding branch; nothing outside the checkpoint is used.

All candidates of one prompt have equally long caption prefixes (same template, same grid), so they are scored
in plain batches without padding; the LM head is applied only at the prompt's positions.
"""

from __future__ import annotations

import torch

from .layers import linear_rows
from .model import UniXForCausalLM
from .prompting import PromptBuilder


@torch.inference_mode()
def continuation_logprobs(
    model: UniXForCausalLM, prefixes: list[list[int]], continuation: list[int], *, batch_size: int = 16
) -> torch.Tensor:
    """``log p(continuation | prefix)`` summed over the continuation's tokens, one value per prefix.

    Prefixes must all have the same length (the candidates of one prompt do). Probabilities are taken over
    the text vocabulary only (rows below ``real_text_vocab_size``), as text is sampled.
    """
    if not prefixes or not continuation:
        raise ValueError("continuation_logprobs needs at least one prefix and a non-empty continuation")
    if len({len(p) for p in prefixes}) != 1:
        raise ValueError("all prefixes must have the same length (candidates of one prompt)")
    text_rows = model.config.real_text_vocab_size
    if any(not 0 <= t < text_rows for t in continuation):
        raise ValueError("the continuation must consist of text token ids")
    device = model.device
    target = torch.tensor(continuation, dtype=torch.long, device=device)
    n = len(continuation)
    out = []
    for start in range(0, len(prefixes), batch_size):
        rows = [p + continuation for p in prefixes[start : start + batch_size]]
        ids = torch.tensor(rows, dtype=torch.long, device=device)
        hidden = model.model(ids, torch.ones_like(ids)).last_hidden_state[:, -n - 1 : -1]  # predicts each token
        logits = linear_rows(hidden, model.lm_head, 0, text_rows).float()
        picked = logits.log_softmax(dim=-1).gather(-1, target.expand(len(rows), n)[..., None])[..., 0]
        out.append(picked.sum(dim=-1).cpu())
    return torch.cat(out)


def caption_scores(
    model: UniXForCausalLM, builder: PromptBuilder, caption_template: str, grids: torch.Tensor, prompt: str
) -> torch.Tensor:
    """How likely the model finds ``prompt`` as the caption of each candidate code grid in ``grids`` (N, h, w):
    ``log p(" " + prompt | caption template with the candidate)``, one value per candidate (higher is better)."""
    prefixes = [builder.render(caption_template, {}, [grid.cpu()]).ids for grid in grids]
    return continuation_logprobs(model, prefixes, builder.text_ids(" " + prompt.strip(), user=True))
