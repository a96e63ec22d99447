"""Text-only data of the shapes world, for training a text LM and a tokenizer.

`text_corpus` mixes every kind of text the tasks produce: canonical captions, text-to-image
prompts, VQA lines (`{question} {answer}`), edit instructions, and few-shot texts. `vocabulary()`
is the closed word list of the world (words and the punctuation marks `?` and `.`, as split by
`words`).

Invariant: every word of every generated text is in `vocabulary()`, and a corpus of a few thousand
lines uses all of it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from .edits import edit_samples
from .fewshot import fewshot_episodes
from .scene import COLORS, COUNT_WORDS, POSITIONS, SHAPES, SIZES
from .tasks import caption_samples, check_count, make_rng, prompt_samples
from .vqa import vqa_samples

TEXT_KINDS: tuple[str, ...] = ("caption", "prompt", "qa", "instruction", "fewshot")

_TEMPLATE_WORDS = (
    "a at the and on background "  # captions and prompts
    "what color is how many shapes are there where size shape ? "  # questions
    "yes no "  # answers
    "make move to remove add change "  # instructions
    "this one . "  # few-shot wordings
)


def words(text: str) -> list[str]:
    """Split text into words and punctuation marks, e.g. `is there a circle?` -> [..., 'circle', '?']."""
    return re.findall(r"[a-z]+|[^\sa-z]", text)


def vocabulary() -> frozenset[str]:
    """Every word the world's text uses."""
    attribute_words = [w for name in (*COLORS, *SHAPES, *SIZES, *POSITIONS) for w in name.split()]
    return frozenset(_TEMPLATE_WORDS.split()) | frozenset(attribute_words) | frozenset(COUNT_WORDS[1:])


def text_corpus(n: int, *, seed: int = 0, split: str = "train") -> Iterator[str]:
    """`n` lines of world text, kind uniform over `TEXT_KINDS`, drawn from the task generators of `split`."""
    rng = make_rng(seed, split, "text")
    count = check_count(n)
    sources = {
        "caption": (s.caption for s in caption_samples(count, seed=seed, split=split)),
        "prompt": (s.prompt for s in prompt_samples(count, seed=seed, split=split)),
        "qa": (f"{s.question} {s.answer}" for s in vqa_samples(count, seed=seed, split=split)),
        "instruction": (s.instruction for s in edit_samples(count, seed=seed, split=split)),
        "fewshot": (
            text
            for episode in fewshot_episodes(count, seed=seed, split=split)
            for text in (*(text for _, text in episode.examples), episode.answer)
        ),
    }
    for _ in range(count):
        yield next(sources[rng.choice(TEXT_KINDS)])
