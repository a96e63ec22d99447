"""Small composable sampling pieces: validated settings, classifier-free guidance, logit filters, draws.

Each function takes and returns plain tensors so the generation loop can combine them:
``guide`` mixes conditional and unconditional rows, ``apply_temperature``/``filter_top_k``/``filter_top_p``
reshape the distribution, ``draw`` samples with a per-call ``torch.Generator`` (never global state).
Invalid settings raise ``ValueError`` naming the argument and the allowed range.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

NEG_INF = float("-inf")
MAX_CANDIDATES = 16  # images drawn per requested image for the self-check


@dataclass(frozen=True)
class SamplingConfig:
    """How to pick each token.

    ``temperature`` 0 means greedy (argmax). ``top_k`` 0 and ``top_p`` 1.0 disable those filters.
    ``cfg_scale`` 1.0 disables classifier-free guidance; ``cfg_window`` is the fraction ``(start, end)`` of
    the image's codes during which guidance is applied (outside it the conditional logits are used alone).
    ``candidates`` (text to image only): images drawn per requested image, of which the pipeline keeps the one
    the model's own captioner scores highest for the prompt (:mod:`unix_core.selfcheck`); 1 = no self-check.
    The token samplers themselves ignore it.
    """

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    cfg_scale: float = 1.0
    cfg_window: tuple[float, float] = (0.0, 1.0)
    candidates: int = 1

    def __post_init__(self) -> None:
        check_range("temperature", self.temperature, 0.0, 10.0)
        if not isinstance(self.top_k, int) or isinstance(self.top_k, bool) or self.top_k < 0:
            raise ValueError(f"top_k must be an integer >= 0 (0 disables it), got {self.top_k!r}")
        check_range("top_p", self.top_p, 0.0, 1.0, low_open=True)
        check_range("cfg_scale", self.cfg_scale, 0.0, 50.0)
        if (
            len(self.cfg_window) != 2
            or not 0.0 <= self.cfg_window[0] < self.cfg_window[1] <= 1.0
        ):
            raise ValueError(f"cfg_window must be (start, end) with 0 <= start < end <= 1, got {self.cfg_window!r}")
        if (
            isinstance(self.candidates, bool)
            or not isinstance(self.candidates, int)
            or not 1 <= self.candidates <= MAX_CANDIDATES
        ):
            raise ValueError(
                f"candidates must be an integer in [1, {MAX_CANDIDATES}] (1: no self-check), got {self.candidates!r}"
            )

    @property
    def uses_guidance(self) -> bool:
        return self.cfg_scale != 1.0

    def guidance_active(self, step: int, total: int) -> bool:
        fraction = step / max(total, 1)
        return self.uses_guidance and self.cfg_window[0] <= fraction < self.cfg_window[1]


def check_range(name: str, value, low: float, high: float, *, low_open: bool = False) -> None:
    """Raise ``ValueError`` unless ``low <= value <= high`` (``low < value`` when ``low_open``)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value == value
    ok = ok and (low < value if low_open else low <= value) and value <= high
    if not ok:
        bracket = "(" if low_open else "["
        raise ValueError(f"{name} must be a number in {bracket}{low}, {high}], got {value!r}")


def guide(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance: ``uncond + scale * (cond - uncond)``."""
    return uncond + scale * (cond - uncond)


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    return logits if temperature in (0.0, 1.0) else logits / temperature


def filter_top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep logits >= the k-th largest per row (ties kept), others -inf. k 0 or >= vocab: unchanged."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, NEG_INF)


def filter_top_p(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filter: keep the most probable tokens up to and including the first one at which the
    running probability exceeds ``p`` (as in the official sampler). p 1.0: unchanged."""
    if p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    drop_sorted = cumulative - sorted_logits.softmax(dim=-1) >= p  # mass before this token already >= p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, NEG_INF)


def draw(logits: torch.Tensor, config: SamplingConfig, generator: torch.Generator | None) -> torch.Tensor:
    """Pick one index per row of (B, V) logits according to ``config``."""
    if config.temperature == 0.0:
        return logits.argmax(dim=-1)
    logits = apply_temperature(logits.float(), config.temperature)
    logits = filter_top_k(logits, config.top_k)
    logits = filter_top_p(logits, config.top_p)
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
