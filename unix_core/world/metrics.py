"""Text metrics for evaluating a model's outputs on the shapes-world tasks.

- captions: exact match after whitespace normalisation (case and punctuation count);
- VQA: the answer word(s) compared case-insensitively, ignoring whitespace runs and one trailing `.`;
- few-shot: exact match after whitespace normalisation, so the episode's wording (e.g. the final `.`
  of `this is a red one.`) is required, not just the fact.
Image outputs (text-to-image, edits) are scored with `judge.judge` instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from .scene import normalize_whitespace


def caption_match(predicted: str, expected: str) -> bool:
    return normalize_whitespace(predicted) == normalize_whitespace(expected)


def _answer_form(text: str) -> str:
    text = normalize_whitespace(text).lower()
    return text[:-1].rstrip() if text.endswith(".") else text


def vqa_match(predicted: str, expected: str) -> bool:
    return _answer_form(predicted) == _answer_form(expected)


def fewshot_match(predicted: str, expected: str) -> bool:
    return normalize_whitespace(predicted) == normalize_whitespace(expected)


def accuracy(pairs: Iterable[tuple[str, str]], match: Callable[[str, str], bool]) -> float:
    """Fraction of (predicted, expected) pairs that `match`; ValueError when there are none."""
    hits = [match(predicted, expected) for predicted, expected in pairs]
    if not hits:
        raise ValueError("accuracy needs at least one (predicted, expected) pair")
    return sum(hits) / len(hits)
